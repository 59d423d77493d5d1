"""The dispatcher's retry accounting, against a real SQLite store and a scripted carrier.

The carrier is the one part scripted here: a real SMSC cannot be told to throttle exactly
four times and then fail once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from smsrelay.carrier.connector import (
    OutboundPart,
    SubmitOutcome,
    SubmitUnanswered,
    submitted_each,
)
from smsrelay.dispatch import dispatcher
from smsrelay.dispatch.dispatcher import Dispatcher, DispatchPolicy
from smsrelay.domain.backoff import BackoffPolicy
from smsrelay.errors import DomainError
from smsrelay.service.clock import Clock, FixedClock, SystemClock
from smsrelay.store.records import ClaimedPart, MessageView, PartView
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

    def withhold(self, withheld: bool) -> None: ...

    def refuse_parked(self) -> None: ...

    def submit_many(self, parts: Sequence[OutboundPart]) -> list[asyncio.Future[SubmitOutcome]]:
        return submitted_each(self.submit, parts)

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


class TakesWithoutId(ScriptedCarrier):
    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        self.submits += 1
        return SubmitOutcome(status=0, message_id="")


async def test_a_part_taken_without_an_id_is_said_in_the_log(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Stored as submitted with carrier id "", no receipt could ever find it, and it expired
    # 49 h later without a word (the SMPP review).
    message = await _send_through(store, TakesWithoutId([0]))
    assert message.state == "submitted"
    [line] = [r for r in caplog.records if r.getMessage() == "dispatch.part.taken_without_id"]
    assert line.__dict__["error"] == "submit_sm_resp without message_id"


async def test_crashes_with_the_part_claimed_leave_its_retries_for_the_carriers_errors(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process that died with the part claimed (most claimed parts never left) did not try
    # it: after three such crashes the part still has both of its attempts for the SMSC's
    # transient errors, where each crash used to spend one and the first error failed it.
    monkeypatch.setattr(dispatcher, "SLOW_DOWN_DELAY", 0.01)
    now = time.time()
    message_id = await store.accept_message(new_message(cost_micros=1, created_at=now, due_at=now))
    for _ in range(3):
        [claimed] = await store.claim_due_parts("default", now, 10, now + 60.0)
        assert await store.release_expired_leases(float("inf")) == 1  # what a restart does
    assert claimed.attempts == 1
    carrier = ScriptedCarrier([SYSTEM_ERROR, 0])
    policy = DispatchPolicy(max_attempts=2, backoff=BackoffPolicy(first=0.01, cap=0.01))
    running = Dispatcher(store, SystemClock(), {"default": carrier}, BUILDERS, policy)
    await running.start()
    try:
        await eventually(lambda: carrier.submits == 2)
        part = await eventually(lambda: _part_when(store, message_id, "submitted"))
    finally:
        await running.stop()
    assert part.attempts == 2


async def _part_when(store: SqliteStore, message_id: int, state: str) -> PartView | None:
    part = await _part(store, message_id)
    return part if part.state == state else None


class UnansweredFirst(ScriptedCarrier):
    """Leaves its first submit unanswered (the test gives the late answer), then takes them."""

    def __init__(self) -> None:
        super().__init__([0])
        self.late: asyncio.Future[SubmitOutcome | None] | None = None

    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        if self.late is None:
            self.submits += 1
            self.late = asyncio.get_running_loop().create_future()
            raise SubmitUnanswered("no submit_sm_resp in time", self.late)
        return await super().submit(part)


async def _start_one(
    store: SqliteStore,
    carrier: ScriptedCarrier,
    max_attempts: int = 3,
    clock: Clock | None = None,
    lease_seconds: float = 60.0,
    backoff: float = 0.01,
) -> tuple[int, Dispatcher]:
    clock = clock or SystemClock()
    now = clock.now()
    message_id = await store.accept_message(new_message(cost_micros=1, created_at=now, due_at=now))
    policy = DispatchPolicy(
        max_attempts=max_attempts,
        backoff=BackoffPolicy(first=backoff, cap=backoff),
        lease_seconds=lease_seconds,
    )
    running = Dispatcher(store, clock, {"default": carrier}, BUILDERS, policy)
    await running.start()
    return message_id, running


async def _part(store: SqliteStore, message_id: int) -> PartView:
    message = await store.get_message(message_id)
    assert message is not None
    return message.parts[0]


async def _unanswered(store: SqliteStore, message_id: int, carrier: UnansweredFirst) -> None:
    """Wait until the first submit went unanswered; the part must still be the SMSC's."""
    await eventually(lambda: carrier.late is not None)
    for _ in range(20):  # loop turns: had the timeout been recorded, it would be by now
        await asyncio.sleep(0)
    part = await _part(store, message_id)
    assert part.state == "sending" and part.attempts == 1
    with pytest.raises(DomainError, match="already left"):  # it may be at the SMSC
        await store.cancel_message(1, message_id, time.time())


async def test_a_late_answer_is_recorded_and_the_part_not_sent_again(store: SqliteStore) -> None:
    carrier = UnansweredFirst()
    message_id, running = await _start_one(store, carrier)
    try:
        await _unanswered(store, message_id, carrier)
        assert carrier.late is not None
        carrier.late.set_result(SubmitOutcome(status=0, message_id="late-1"))

        async def taken() -> bool:
            part = await _part(store, message_id)
            return (part.state, part.carrier_id) == ("submitted", "late-1")

        await eventually(taken)
        assert carrier.submits == 1
    finally:
        await running.stop()


@pytest.mark.parametrize(("max_attempts", "final"), [(3, "submitted"), (1, "failed")])
async def test_without_even_a_late_answer_the_part_goes_again_and_that_counts(
    store: SqliteStore, max_attempts: int, final: str
) -> None:
    carrier = UnansweredFirst()
    message_id, running = await _start_one(store, carrier, max_attempts)
    try:
        await _unanswered(store, message_id, carrier)
        assert carrier.late is not None
        carrier.late.set_result(None)  # the link's late window is over

        async def settled() -> PartView | None:
            part = await _part(store, message_id)
            return part if part.state in ("submitted", "failed") else None

        part = await eventually(settled)
        assert part.state == final
        assert carrier.submits == (2 if final == "submitted" else 1)
        assert part.attempts == (2 if final == "submitted" else 1)
    finally:
        await running.stop()


async def test_a_part_left_unanswered_waits_to_go_again_and_cannot_be_cancelled(
    store: SqliteStore,
) -> None:
    # queued again for its next attempt, it looked as if it had never left: a cancel then
    # refunded a message the handset may have had
    carrier = UnansweredFirst()
    message_id, running = await _start_one(store, carrier, backoff=3600.0)
    try:
        await _unanswered(store, message_id, carrier)
        assert carrier.late is not None
        carrier.late.set_result(None)  # no answer, even late
        await eventually(lambda: _part_when(store, message_id, "queued"))
        with pytest.raises(DomainError, match="may already have left"):
            await store.cancel_message(1, message_id, time.time())
    finally:
        await running.stop()


async def test_a_part_the_smsc_does_not_answer_stays_as_old_as_its_claim_through_renewals(
    store: SqliteStore,
) -> None:
    # What `status --max-overdue` watches: the sweep renews the lease while a late answer may
    # come, and the part's claim time stays that of its claim.
    clock = FixedClock(1_000.0)
    carrier = UnansweredFirst()
    message_id, running = await _start_one(store, carrier, clock=clock, lease_seconds=0.03)
    try:
        await _unanswered(store, message_id, carrier)
        clock.set(4_600.0)
        swept = running.sweeps
        await eventually(lambda: running.sweeps >= swept + 2)  # renewed at the new time
        assert await store.sending_parts() == {"default": (1, 1_000.0)}
        assert carrier.late is not None
        carrier.late.set_result(None)  # no answer after all: back to the queue, counted

        async def settled() -> bool:
            return await store.sending_parts() == {}

        await eventually(settled)
        assert (await _part(store, message_id)).state == "queued"
    finally:
        await running.stop()


async def test_stop_waits_for_a_late_answer_that_comes_within_its_grace(
    store: SqliteStore,
) -> None:
    carrier = UnansweredFirst()
    message_id, running = await _start_one(store, carrier)
    await _unanswered(store, message_id, carrier)
    assert carrier.late is not None
    late = carrier.late
    asyncio.get_running_loop().call_later(
        0.05, late.set_result, SubmitOutcome(status=0, message_id="late-1")
    )
    await running.stop(grace=5.0)  # the answer comes during the grace: it is recorded
    part = await _part(store, message_id)
    assert (part.state, part.carrier_id) == ("submitted", "late-1")


async def test_a_late_answer_still_awaited_when_the_grace_ends_leaves_the_part_leased(
    store: SqliteStore,
) -> None:
    # No answer within the stop's grace: nothing is recorded (neither a retry nor a failure);
    # the part stays 'sending' under its lease, and the next start puts it back in the queue.
    carrier = UnansweredFirst()
    message_id, running = await _start_one(store, carrier)
    await _unanswered(store, message_id, carrier)
    await running.stop(grace=0.0)
    part = await _part(store, message_id)
    assert (part.state, part.attempts, part.last_error) == ("sending", 1, None)
    assert await store.release_expired_leases(float("inf")) == 1  # what a restart does
    assert (await _part(store, message_id)).state == "queued"


class CrashingFirst(ScriptedCarrier):
    """Its first submit fails with a bug of its own (not a carrier's answer)."""

    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        if self.submits == 0:
            self.submits += 1
            raise RuntimeError("a bug in the connector")
        return await super().submit(part)


class BrokenBatch(ScriptedCarrier):
    """Its first batch fails as a whole with a bug of its own."""

    def submit_many(self, parts: Sequence[OutboundPart]) -> list[asyncio.Future[SubmitOutcome]]:
        if self.submits == 0:
            self.submits += 1
            raise RuntimeError("a bug in the connector")
        return super().submit_many(parts)


@pytest.mark.parametrize("carrier_kind", [CrashingFirst, BrokenBatch])
async def test_a_connector_that_crashes_has_the_part_logged_and_tried_again(
    store: SqliteStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    carrier_kind: type[ScriptedCarrier],
) -> None:
    monkeypatch.setattr(dispatcher, "SLOW_DOWN_DELAY", 0.01)
    carrier = carrier_kind([0])
    message = await _send_through(store, carrier)
    assert message.state == "submitted" and carrier.submits == 2
    assert any(r.getMessage() == "dispatch.submit.crashed" for r in caplog.records)


async def test_a_part_that_cannot_be_made_ready_to_send_is_logged_and_tried_again(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dispatcher, "SLOW_DOWN_DELAY", 0.01)
    real_outbound = dispatcher.outbound_part
    calls = 0

    def failing_once(part: ClaimedPart) -> OutboundPart:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in making the part")
        return real_outbound(part)

    monkeypatch.setattr(dispatcher, "outbound_part", failing_once)
    carrier = ScriptedCarrier([0])
    message = await _send_through(store, carrier)
    assert message.state == "submitted" and carrier.submits == 1 and calls == 2
    assert any(r.getMessage() == "dispatch.submit.crashed" for r in caplog.records)


class Silent(ScriptedCarrier):
    """Takes every part and never answers (the SMSC's window, a lost link not noticed yet)."""

    def __init__(self) -> None:
        super().__init__([0])
        self.outcomes: list[asyncio.Future[SubmitOutcome]] = []

    def submit_many(self, parts: Sequence[OutboundPart]) -> list[asyncio.Future[SubmitOutcome]]:
        loop = asyncio.get_running_loop()
        made = [loop.create_future() for _ in parts]
        self.outcomes += made
        return made


async def test_a_part_with_the_connector_when_the_grace_ends_is_given_up_and_left_leased(
    store: SqliteStore,
) -> None:
    carrier = Silent()
    message_id, running = await _start_one(store, carrier)
    await eventually(lambda: len(carrier.outcomes) == 1)
    await running.stop(grace=0.0)
    assert carrier.outcomes[0].cancelled()  # the connector may still give it up
    part = await _part(store, message_id)
    assert (part.state, part.attempts, part.last_error) == ("sending", 1, None)
    assert await store.release_expired_leases(float("inf")) == 1  # what a restart does


async def test_a_claim_being_written_when_the_dispatcher_stops_gives_its_parts_back(
    store: SqliteStore,
) -> None:
    # The claim was cancelled while it was written: it committed all the same, and its parts
    # sat 'sending', sent by nobody, until their lease ran out (a minute) for another node.
    claimed, release = asyncio.Event(), asyncio.Event()
    claim = store.claim_due_parts

    async def slow_to_answer(*args: object, **kwargs: object) -> list[ClaimedPart]:
        parts = await claim(*args, **kwargs)  # type: ignore[arg-type]
        claimed.set()
        await release.wait()  # the answer is on its way when the stop comes
        return parts

    store.claim_due_parts = slow_to_answer  # type: ignore[method-assign]
    carrier = ScriptedCarrier([0])
    message_id, running = await _start_one(store, carrier)
    await asyncio.wait_for(claimed.wait(), 10)
    stopping = asyncio.create_task(running.stop())
    await eventually(lambda: running.stopping)
    release.set()
    await stopping
    part = await _part(store, message_id)
    assert (part.state, part.attempts, carrier.submits) == ("queued", 0, 0)


class _ClaimAnsweredLate:
    """The store, but its first non-empty claim of parts is answered ``delay`` s late."""

    def __init__(self, store: SqliteStore, delay: float) -> None:
        self._store = store
        self.delay = delay

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def claim_due_parts(self, *args: object) -> list[ClaimedPart]:
        parts = await self._store.claim_due_parts(*args)  # type: ignore[arg-type]
        if parts and self.delay:
            await asyncio.sleep(self.delay)
            self.delay = 0.0
        return parts


@pytest.mark.parametrize("sole", [False, True], ids=["several-nodes", "sole-dispatcher"])
async def test_a_claim_answered_after_a_third_of_its_lease(
    store: SqliteStore, caplog: pytest.LogCaptureFixture, sole: bool
) -> None:
    # A claim answered after a database stall may have no lease left: on PostgreSQL another
    # node releases and sends its parts while the late claimer sends them too (the
    # PostgreSQL review), so it sends none of them. A sole dispatcher (SQLite) sends them:
    # dropped, they came back by their lease, marked may-have-left (the diff review).
    now = time.time()
    message_id = await store.accept_message(new_message(cost_micros=1, created_at=now, due_at=now))
    carrier = ScriptedCarrier([0])
    late = _ClaimAnsweredLate(store, delay=1.2)
    policy = DispatchPolicy(lease_seconds=1.5, backoff=BackoffPolicy(first=0.01, cap=0.01))
    running = Dispatcher(late, SystemClock(), {"default": carrier}, BUILDERS, policy)  # type: ignore[arg-type]
    await running.start(sole_dispatcher=sole)
    try:

        async def sent() -> bool:
            message = await store.get_message(message_id)
            return message is not None and message.state == "submitted"

        await eventually(sent)
    finally:
        await running.stop()
    assert carrier.submits == 1
    said_late = "dispatch.claim.late" in [r.getMessage() for r in caplog.records]
    message = await store.get_message(message_id)
    assert message is not None
    came_back = "lease expired" in (message.parts[0].last_error or "")
    assert (said_late, came_back) == (not sole, not sole)
