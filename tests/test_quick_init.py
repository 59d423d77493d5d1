"""quick_init: a frozen dataclass made faster stays the same dataclass in every other way."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from dataclasses import InitVar, dataclass, field
from typing import Any

import pytest

import smsrelay
from smsrelay.quick_init import QUICKENED, quick_init


def _twins(**options: Any) -> tuple[type, type]:
    """The same class twice: as the dataclass makes it, and given a quick __init__."""

    def make() -> type:
        @dataclass(frozen=True, **options)
        class Sample:
            a: int
            b: str = "b"
            c: list[int] = field(default_factory=lambda: [1, 2], hash=False)
            d: tuple[int, ...] = field(default=(), kw_only=True)
            e: float = field(default=0.5, compare=False)

        return Sample

    return make(), quick_init(make())


@pytest.mark.parametrize("options", [{}, {"slots": True}], ids=["dict", "slots"])
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, "x"), {}), ((1, "x", [3]), {"d": (4,), "e": 2.5}), ((), {"a": 7, "d": (1,)})],
)
def test_a_quick_init_makes_what_the_dataclass_makes(
    options: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    plain, quick = _twins(**options)
    made, expected = quick(*args, **kwargs), plain(*args, **kwargs)
    assert dataclasses.astuple(made) == dataclasses.astuple(expected)
    assert repr(made).replace(quick.__qualname__, "") == repr(expected).replace(
        plain.__qualname__, ""
    )
    assert made == quick(*args, **kwargs)
    assert hash(made) == hash(quick(*args, **kwargs))


def test_the_signature_is_the_dataclass_one() -> None:
    plain, quick = _twins(slots=True)
    assert str(inspect.signature(quick)) == str(inspect.signature(plain))


@pytest.mark.parametrize("options", [{}, {"slots": True}], ids=["dict", "slots"])
def test_a_quickened_class_stays_frozen(options: dict[str, Any]) -> None:
    _, quick = _twins(**options)
    made = quick(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.a = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del made.b


def test_each_instance_gets_its_own_factory_value() -> None:
    _, quick = _twins()
    first, second = quick(1), quick(1)
    assert first.c == [1, 2] and first.c is not second.c


def test_bad_calls_fail_as_the_dataclass_ones_do() -> None:
    plain, quick = _twins()
    for cls in (plain, quick):
        with pytest.raises(TypeError):
            cls()  # a required field missing
        with pytest.raises(TypeError):
            cls(1, "x", [], 0.5, ())  # d is keyword-only
        with pytest.raises(TypeError):
            cls(1, z=3)


def test_an_inherited_slotted_field_goes_to_its_slot() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Base:
        sequence: int
        status: int = 0

    @quick_init
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Child(Base):
        text: str = ""

    made = Child(sequence=3, text="hi")
    assert (made.sequence, made.status, made.text) == (3, 0, "hi")
    assert made == Child(sequence=3, text="hi") and made != Child(sequence=4, text="hi")


def test_what_it_cannot_serve_exactly_is_refused_when_decorated() -> None:
    @dataclass
    class NotFrozen:
        a: int

    @dataclass(frozen=True)
    class AfterInit:
        a: int

        def __post_init__(self) -> None: ...

    @dataclass(frozen=True)
    class WithInitVar:
        a: int
        b: InitVar[int]

    @dataclass(frozen=True)
    class NotInInit:
        a: int
        b: int = field(default=0, init=False)

    for cls in (NotFrozen, AfterInit, WithInitVar, NotInInit):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)


def _every_module() -> None:
    for module in pkgutil.walk_packages(smsrelay.__path__, "smsrelay."):
        importlib.import_module(module.name)


def test_the_package_classes_store_what_they_are_given() -> None:
    """Every class of the package given a quick __init__: each field holds the very object
    passed for it, or its default, and assigning still fails."""
    _every_module()
    assert {"SubmitSm", "DeliverSm", "NewMessage", "ClaimedPart", "InboundSm"} <= {
        cls.__name__ for cls in QUICKENED
    }
    for cls in QUICKENED:
        fields = dataclasses.fields(cls)
        given = {f.name: object() for f in fields}
        made = cls(**given)
        assert all(getattr(made, name) is value for name, value in given.items()), cls
        defaulted = {f.name for f in fields if f.default is not dataclasses.MISSING}
        partial = cls(**{name: v for name, v in given.items() if name not in defaulted})
        for f in fields:
            if f.name in defaulted:
                assert getattr(partial, f.name) == f.default, (cls, f.name)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, fields[0].name, None)
