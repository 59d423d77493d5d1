"""Prices in integer micro-euros: parsing, lookup, cost and rendering."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsrelay.domain.pricing import (
    DEFAULT_PRICES_EUR,
    MICROS_PER_EUR,
    PriceTable,
    eur_to_micros,
    format_eur,
    message_cost,
    micros_to_eur,
)
from smsrelay.domain.text import MAX_PARTS
from smsrelay.errors import DomainError


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("0.045", 45_000),
        (" 0.045 ", 45_000),
        (0.045, 45_000),  # a float is read as its shortest decimal, not 0.04499999...
        (0.1, 100_000),
        (1, 1_000_000),
        (0, 0),
        ("12", 12_000_000),
        ("10225.119", 10_225_119_000),
        (Decimal("0.0000005"), 1),  # half-up
        ("0.0000004999", 0),
        ("0.000000" + "4" + "9" * 80, 0),  # rounded once, from the exact input
        ("0.000000" + "5" + "0" * 80 + "1", 1),
        ("0.0000015", 2),
        ("-0.0000005", -1),  # half away from zero
        ("1e-3", 1_000),
        ("-0.045", -45_000),
    ],
)
def test_eur_to_micros(value: str | float | int | Decimal, micros: int) -> None:
    assert eur_to_micros(value) == micros


@pytest.mark.parametrize(
    "value",
    ["", "abc", "0,045", "NaN", "nan", "inf", "-Infinity", float("nan"), float("inf"), "1e999999"],
)
def test_eur_to_micros_refuses_garbage(value: str | float) -> None:
    with pytest.raises(ValueError):
        eur_to_micros(value)


def test_eur_to_micros_refuses_booleans() -> None:
    with pytest.raises(ValueError):
        eur_to_micros(True)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (45_000, "0.045"),
        (12_000_000, "12.000"),
        (10_225_119_000, "10225.119"),
        (1_230_000, "1.230"),
        (1_234_567, "1.234567"),
        (1_234_500, "1.2345"),
        (1, "0.000001"),
        (0, "0.000"),
        (-45_000, "-0.045"),
        (-1, "-0.000001"),
    ],
)
def test_format_eur(micros: int, text: str) -> None:
    assert format_eur(micros) == text


@pytest.mark.parametrize(
    ("micros", "eur"),
    [(45_000, 0.045), (135_000, 0.135), (1, 0.000001), (0, 0.0), (10_225_119_000, 10225.119)],
)
def test_micros_to_eur(micros: int, eur: float) -> None:
    assert micros_to_eur(micros) == eur


def test_price_table_from_eur() -> None:
    table = PriceTable.from_eur({"FR": "0.045", "DE": 0.075, "US": 0})
    assert dict(table.micros_by_region) == {"FR": 45_000, "DE": 75_000, "US": 0}
    assert table.price_per_sms("FR") == 45_000


@pytest.mark.parametrize(
    "prices",
    [
        {"fr": "0.045"},
        {"FRA": "0.045"},
        {"F": "0.045"},
        {"F1": "0.045"},
        {"ÉU": "0.045"},
        {"FR": "-0.045"},
        {"FR": "free"},
        {"FR": "NaN"},
        {"UK": "0.05"},  # GB is the code: a price for UK never applied (the config review)
        {"XX": "0.05"},
    ],
)
def test_price_table_refuses_bad_entries(prices: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        PriceTable.from_eur(prices)


def test_price_table_is_read_only() -> None:
    table = PriceTable.from_eur({"FR": "0.045"})
    with pytest.raises(TypeError):
        table.micros_by_region["FR"] = 0  # type: ignore[index]


def test_missing_price() -> None:
    table = PriceTable.from_eur({"FR": "0.045"})
    with pytest.raises(DomainError) as caught:
        table.price_per_sms("DE")
    assert (caught.value.code, caught.value.field) == ("price.missing", "to")


@pytest.mark.parametrize(("segments", "cost"), [(0, 0), (1, 45_000), (3, 135_000), (10, 450_000)])
def test_message_cost(segments: int, cost: int) -> None:
    table = PriceTable.from_eur({"FR": "0.045"})
    assert message_cost(table, "FR", segments) == cost


def test_message_cost_refuses_negative_segments() -> None:
    with pytest.raises(ValueError):
        message_cost(PriceTable.from_eur({"FR": "0.045"}), "FR", -1)


def test_message_cost_for_a_missing_region() -> None:
    with pytest.raises(DomainError):
        message_cost(PriceTable.from_eur({"FR": "0.045"}), "ZZ", 1)


def test_default_prices() -> None:
    table = PriceTable.from_eur(DEFAULT_PRICES_EUR)
    assert table.price_per_sms("FR") == 45_000
    # every region the number parser can yield for French and common destinations is priced
    for region in ("GP", "BL", "MF", "MQ", "GF", "RE", "YT", "PM", "BE", "DE", "GB", "GG", "CH"):
        assert table.price_per_sms(region) > 0
    for region in ("US", "CA", "MA", "TN", "DZ", "ES", "IT"):
        assert table.price_per_sms(region) > 0


# --- properties ---------------------------------------------------------------------------


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_and_parse_round_trip(micros: int) -> None:
    assert eur_to_micros(format_eur(micros)) == micros
    assert eur_to_micros(micros_to_eur(micros)) == micros


@given(st.decimals(min_value=0, max_value=10**6, allow_nan=False, allow_infinity=False))
def test_micros_are_the_half_up_rounding(value: Decimal) -> None:
    micros = eur_to_micros(value)
    assert abs(Decimal(micros) - value * MICROS_PER_EUR) <= Decimal("0.5")


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=MAX_PARTS))
def test_cost_is_linear_in_segments(price: int, segments: int) -> None:
    table = PriceTable({"FR": price})
    assert message_cost(table, "FR", segments) == price * segments
