"""until_stored: a refused write is tried again until it is stored, unless the process stops."""

from __future__ import annotations

import pytest

from smsrelay.errors import TransientError
from smsrelay.service import retrying
from smsrelay.service.retrying import until_stored


class Store:
    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls = 0

    async def write(self) -> None:
        self.calls += 1
        if self.calls <= self.refusals:
            raise TransientError("database is locked")


async def test_a_refused_write_is_tried_again_until_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retrying, "FIRST_DELAY", 0.001)
    store, refused = Store(refusals=4), []
    await until_stored(store.write, on_refusal=refused.append)
    assert store.calls == 5 and len(refused) == 4


async def test_a_stopping_process_gives_up_with_the_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retrying, "FIRST_DELAY", 0.001)
    store = Store(refusals=10)
    with pytest.raises(TransientError):
        await until_stored(store.write, on_refusal=lambda _: None, give_up=lambda: True)
    assert store.calls == 1
