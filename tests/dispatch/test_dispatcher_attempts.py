"""The dispatcher's retry accounting, against a real SQLite store and a scripted carrier.

The carrier is the one part scripted here: a real SMSC cannot be told to throttle exactly
four times and then fail once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smsrelay.carrier.connector import OutboundPart, SubmitOutcome
from smsrelay.dispatch import dispatcher
from smsrelay.dispatch.dispatcher import Dispatcher, DispatchPolicy
from smsrelay.domain.backoff import BackoffPolicy
from smsrelay.service.clock import SystemClock
from smsrelay.store.records import MessageView
from smsrelay.store.sqlite_store import SqliteStore
from smsrelay.webhooks.payloads import BUILDERS
from tests.factories import new_message, open_store
from tests.support import eventually

THROTTLED, SYSTEM_ERROR = 0x58, 0x08


class ScriptedCarrier:
    """Answers each submit_sm with the next status of its script (the last one repeats)."""

    name = "default"
    is_up = True

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.submits = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        status = self.statuses[min(self.submits, len(self.statuses) - 1)]
        self.submits += 1
        return SubmitOutcome(status=status, message_id=None if status else f"id{self.submits}")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await open_store(tmp_path, {"+33757000001": "default"})
    yield s
    await s.close()


async def _send_through(store: SqliteStore, carrier: ScriptedCarrier) -> MessageView:
    now = time.time()
    message_id = await store.accept_message(new_message(cost_micros=1, created_at=now, due_at=now))
    policy = DispatchPolicy(max_attempts=2, backoff=BackoffPolicy(first=0.01, cap=0.01))
    running = Dispatcher(store, SystemClock(), {"default": carrier}, BUILDERS, policy)
    await running.start()
    try:

        async def settled() -> MessageView | None:
            message = await store.get_message(message_id)
            assert message is not None
            return message if message.state in ("submitted", "failed") else None

        return await eventually(settled)
    finally:
        await running.stop()


async def test_being_throttled_does_not_use_up_the_attempts(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher, "SLOW_DOWN_DELAY", 0.01)
    # Two attempts allowed: four throttles, one system error, then the SMSC takes it.
    carrier = ScriptedCarrier([THROTTLED] * 4 + [SYSTEM_ERROR, 0])
    message = await _send_through(store, carrier)
    assert message.state == "submitted" and carrier.submits == 6
    assert message.parts[0].attempts == 2


async def test_counted_failures_still_give_up_at_the_limit(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher, "SLOW_DOWN_DELAY", 0.01)
    carrier = ScriptedCarrier([SYSTEM_ERROR])
    message = await _send_through(store, carrier)
    assert message.state == "failed" and carrier.submits == 2
    assert (message.parts[0].last_error or "").startswith("gave up after 2")
