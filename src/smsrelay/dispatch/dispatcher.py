"""The dispatcher: claims due parts per connector, submits them, records each outcome.

A claimed part is leased: if this process dies before recording an outcome, the lease runs
out and the part goes back to the queue (``release_expired_leases``), so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

from smsrelay.carrier.connector import (
    Connector,
    OutboundPart,
    SentIntoSilence,
    SubmitOutcome,
    SubmitUnanswered,
)
from smsrelay.dispatch.outcomes import Outcome, classify, status_name
from smsrelay.domain.backoff import SUBMIT_RETRY_CAP, BackoffPolicy, next_attempt_at
from smsrelay.domain.states import PartState
from smsrelay.domain.text import Encoding, split_segments
from smsrelay.errors import PermanentError, SmsRelayError, TransientError
from smsrelay.logs import SparseLine
from smsrelay.service.clock import Clock
from smsrelay.service.due_times import DueTimes
from smsrelay.service.retrying import until_stored
from smsrelay.smpp.receipts import normalise_carrier_id
from smsrelay.store.interface import Store
from smsrelay.store.records import CallbackBuilders, ClaimedPart, TakenPart
from smsrelay.turn_batch import TurnBatch

log = logging.getLogger("smsrelay.dispatch")
REFUSED_COUNT = "refused_since_last_line"  # the key of a refusal line's count
IDLE_POLL = 0.2
LATE_CLAIM_FLOOR = 1.0  # a claim answered within this is never late (a lease is 60 s)
SWEEP_EVERY = 5.0
SLOW_DOWN_DELAY = 1.0
SANDBOX_KEPT_FOR = 86400.0  # SMS Partner purges sandbox messages daily
# A message is valid 48 h at the carrier; an hour later its receipt is not coming.
RECEIPT_DEADLINE = 49 * 3600.0
# Parts of a long reply that are not all in after this are posted one by one.
REASSEMBLY_WAIT = 3600.0
SAY_PART_EVERY_S = 1.0  # a rejected, given-up or id-less part is logged at most this often
STOP_GRACE = 15.0  # more than a response timeout (10 s) plus the time to store the outcome
CLAIM_GRACE = 5.0  # a claim being written when the dispatcher stops: its time to finish


@dataclass(frozen=True)
class DispatchPolicy:
    batch: int = 500
    in_flight: int = 1000  # parts handed to one connector at once (its window queues the rest)
    lease_seconds: float = 60.0
    max_attempts: int = 5
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(cap=SUBMIT_RETRY_CAP))


class Dispatcher:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        connectors: Mapping[str, Connector],
        builders: CallbackBuilders,
        policy: DispatchPolicy,
    ) -> None:
        self._store = store
        self._clock = clock
        self._connectors = dict(connectors)
        self._builders = builders
        self._policy = policy
        self._due_times = DueTimes()  # quiet hours, asked again at each claim
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lanes: list[_Lane] = []
        self._late_watchers: set[asyncio.Task[None]] = set()
        self._closing = False
        self.stopping = False
        # (connector, outcome) -> submit_sm outcomes recorded since start (SUBMIT_OUTCOMES)
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.sweeps = 0  # lease sweeps done (tests wait on it rather than on the clock)
        self.sole = True  # set by start: the only dispatcher of its database
        self.withheld = False  # see withhold_sending
        self.claims_refused = SparseLine(log, "dispatch.claim.failed", 1.0, REFUSED_COUNT)
        self.records_refused = SparseLine(log, "dispatch.record.retrying", 1.0, REFUSED_COUNT)

    def withhold_sending(self, error: TransientError) -> None:
        """An outcome the store refused (a full disk, a failing database): what the SMSC
        answers from now on could not be stored either, and a crash or a stop would then send
        those parts again. Parts still waiting for a window slot stay unsent until an outcome
        is stored again (the claim, also a write, brings no new ones meanwhile)."""
        if not self.withheld:
            self.withheld = True
            log.warning("dispatch.sending.withheld", extra={"error": str(error)})
            for connector in self._connectors.values():
                connector.withhold(True)

    def resume_sending(self) -> None:
        if self.withheld:
            self.withheld = False
            log.warning("dispatch.sending.resumed")
            for connector in self._connectors.values():
                connector.withhold(False)

    def wake(self) -> None:
        """A message was accepted: look for due work now rather than at the next poll."""
        self._wake.set()

    async def start(self, *, sole_dispatcher: bool = True) -> None:
        # A SQLite database has one serving process (serve holds its lock), so whatever was
        # claimed before a crash is released at once rather than when its lease runs out.
        until = float("inf") if sole_dispatcher else self._clock.now()
        self.sole = sole_dispatcher  # no other process can take what this one claimed
        await self._store.release_expired_leases(until)
        self._tasks = [
            asyncio.create_task(self._sweep_leases(), name="lease-sweeper"),
        ]
        for name, connector in self._connectors.items():
            lane = _Lane(self, name, connector)
            self._lanes.append(lane)
            lane.task = asyncio.create_task(lane.run(), name=f"dispatch-{name}")
            self._tasks.append(lane.task)

    async def stop_claiming(self) -> None:
        """No more claims (nor sweeps); the parts already handed to connectors go on. A claim
        being written finishes and gives its parts straight back: cancelled, it still
        committed, and its parts waited a lease (a minute) for another node or a restart."""
        self.stopping = True
        claiming = {lane.task for lane in self._lanes if lane.claiming and lane.task}
        for task in self._tasks:
            if task not in claiming:
                task.cancel()
        if claiming:
            await asyncio.wait(claiming, timeout=CLAIM_GRACE)
            for task in claiming:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop claiming, and give the parts the SMSC is answering ``grace`` seconds to have
        their outcome stored: a part it took is not sent again after a restart. What is left
        keeps its lease and comes back (at least once)."""
        await self.stop_claiming()
        for connector in self._connectors.values():  # withheld (a full disk): never sent
            connector.refuse_parked()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Late answers too (the connectors have stopped: they are in or cannot come), and a
        # send may hand its part to a new watcher while we wait: wait until none is left.
        while (busy := self._busy()) and loop.time() < deadline:
            await asyncio.wait(busy, timeout=deadline - loop.time())
        self._closing = True  # from here a part left unanswered keeps its lease (comes back)
        unstored = sum(len(lane.held - lane.never_left) for lane in self._lanes)
        unsent = sum(len(lane.held & lane.never_left) for lane in self._lanes)
        if unstored:  # answered by the SMSC (or maybe taken), not stored: a database that
            # refuses writes (a full disk) through the whole grace
            log.error(
                "dispatch.stop.unrecorded",
                extra={
                    "parts": unstored,
                    "then": "sent again after a start (the SMSC may have them)",
                },
            )
        if unsent:  # never left (withheld, or refused at the stop): no copy can result
            log.warning(
                "dispatch.stop.unsent",
                extra={"parts": unsent, "then": "sent after a start (they never left)"},
            )
        busy = self._busy()
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
        self._lanes = []

    def _busy(self) -> set[asyncio.Future[Any]]:
        """What is still to conclude: parts with the connector, their records, late answers."""
        busy: set[asyncio.Future[Any]] = set(self._late_watchers)
        for lane in self._lanes:
            busy |= lane.tasks
            busy |= lane.pending
        return {future for future in busy if not future.done()}

    def _watch_late_answer(self, lane: _Lane, part: ClaimedPart, late: SubmitUnanswered) -> None:
        if self._closing:
            return  # stopped: the part stays 'sending' until its lease brings it back
        task = asyncio.create_task(lane.conclude_when_answered(part, late))
        self._late_watchers.add(task)
        task.add_done_callback(self._late_watchers.discard)

    async def _sweep_leases(self) -> None:
        """Renew what this process holds, return parts whose lease ran out to the queue, purge
        day-old sandbox messages, expire parts whose receipt never came."""
        every = min(SWEEP_EVERY, self._policy.lease_seconds / 3)
        while not self.stopping:
            await asyncio.sleep(every)
            now = self._clock.now()
            try:
                # What this process still holds is its own, whatever the wall clock did (an
                # NTP step, a resumed VM): renewed first, so only a dead claimer's come back.
                await self._renew_held()
                released = await self._store.release_expired_leases(now)
                await self._store.purge_sandbox(now - SANDBOX_KEPT_FOR)
                await self._store.expire_unanswered(now - RECEIPT_DEADLINE, now, self._builders)
                await self._store.flush_stale_reassemblies(
                    now - REASSEMBLY_WAIT, now, self._builders
                )
            except TransientError as exc:  # tried again at the next sweep
                log.warning("dispatch.sweep.failed", extra={"error": str(exc)})
                continue
            finally:
                self.sweeps += 1
            if released:
                log.warning("dispatch.lease.expired", extra={"released": released})
                self.wake()

    async def _renew_held(self) -> None:
        """A part can wait in a slow connector (rate cap, full window, a late answer) longer
        than its lease: what this process still holds is renewed at every sweep (at most a
        third of a lease apart), so it is never handed out twice; only a dead process stops."""
        held = [part_id for lane in self._lanes for part_id in lane.held]
        if held:
            await self._store.renew_leases(held, self._clock.now() + self._policy.lease_seconds)

    async def _wait_for_work(self) -> None:
        self._wake.clear()
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races
        # with the event, and stop() would then wait forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IDLE_POLL):
                await self._wake.wait()


class _Lane:
    """One connector's loop: keep up to ``in_flight`` parts in the connector's hands."""

    def __init__(self, dispatcher: Dispatcher, name: str, connector: Connector) -> None:
        self.d = dispatcher
        self.name = name
        self.tasks: set[asyncio.Task[None]] = set()
        self.pending: set[asyncio.Future[SubmitOutcome]] = set()  # parts with the connector
        self.connector = connector
        self.limit = dispatcher._policy.in_flight
        self.in_flight = 0
        self.held: set[int] = set()  # parts claimed and not yet recorded: their leases renew
        self.never_left: set[int] = set()  # of those, parts whose outcome says they never left
        self.claiming = False  # a claim is being written
        self.task: asyncio.Task[None] | None = None
        self.room = asyncio.Event()
        self.paused_until = 0.0
        self.said: dict[str, SparseLine] = {}  # outcome -> its parts, for the log
        # kept: asyncio.create_task asks for it, a getpid syscall per part on 3.11
        self.loop = asyncio.get_running_loop()
        # parts the SMSC took, recorded together per loop turn (its answers come in bursts)
        self.taken: TurnBatch[tuple[ClaimedPart, str]] = TurnBatch(
            self._record_taken, self.tasks, self.loop
        )

    async def run(self) -> None:
        while not self.d.stopping:
            if self.limit - self.in_flight < max(1, self.limit // 4):
                self.room.clear()
                await self.room.wait()  # claim in chunks, not one part per freed slot
                continue
            self.claiming = True
            asked = self.loop.time()
            try:
                claimed = await self._claim()
                claimed = self._unless_answered_late(claimed, self.loop.time() - asked)
            except TransientError as exc:  # a line a second at most (a full disk: every poll)
                self.d.claims_refused.note({"error": str(exc)})
                claimed = []
            except Exception:  # a bug must not end the lane: nothing would leave, silently
                log.exception("dispatch.claim.crashed", extra={"connector": self.name})
                claimed = []
            finally:
                self.claiming = False
            if self.d.stopping:
                await self._give_back(claimed)
                return
            if not claimed:
                await self.d._wait_for_work()
                continue
            self.in_flight += len(claimed)
            self.held.update(part.part_id for part in claimed)
            self._submit(claimed)

    async def _give_back(self, claimed: list[ClaimedPart]) -> None:
        """Parts claimed as the dispatcher stopped: due again at once, their attempt given
        back (nothing left)."""
        now = self.d._clock.now()
        await asyncio.gather(
            *(self.d._store.mark_retry(p.part_id, now, "stopping", counted=False) for p in claimed),
            return_exceptions=True,  # what is not given back comes back with its lease
        )

    def _unless_answered_late(self, claimed: list[ClaimedPart], took: float) -> list[ClaimedPart]:
        """A claim answered late (a database stall) has little of its lease left, maybe none:
        another node may release and send its parts before our next renewal. Not sent by us:
        their lease brings them back to whoever claims first."""
        if not claimed or took <= max(self.d._policy.lease_seconds / 3, LATE_CLAIM_FLOOR):
            return claimed
        if self.d.sole:  # SQLite: nobody else could take them; left, they would come back
            return claimed  # marked as may-have-left, so no longer cancellable
        log.warning(
            "dispatch.claim.late",
            extra={"connector": self.name, "parts": len(claimed), "seconds": round(took, 1)},
        )
        return []

    async def _claim(self) -> list[ClaimedPart]:
        policy = self.d._policy
        loop_now = self.loop.time()
        if not self.connector.is_up or loop_now < self.paused_until:
            return []
        now = self.d._clock.now()
        limit = min(policy.batch, self.limit - self.in_flight)
        quiet = self.d._due_times.quiet_releases(now)
        return await self.d._store.claim_due_parts(
            self.name, now, limit, now + policy.lease_seconds, quiet
        )

    def _submit(self, claimed: list[ClaimedPart]) -> None:
        """Hand the parts to the connector at once (it sends each as its window allows); each
        outcome comes to ``_answered`` by callback, no task per part."""
        outcomes: list[tuple[ClaimedPart, asyncio.Future[SubmitOutcome]]] = []
        sendable: list[tuple[ClaimedPart, OutboundPart]] = []
        for part in claimed:
            try:
                sendable.append((part, outbound_part(part)))
            except Exception as exc:
                outcomes.append((part, self._failed(exc)))
        try:
            futures = self.connector.submit_many([outbound for _, outbound in sendable])
        except Exception as exc:
            futures = [self._failed(exc) for _ in sendable]
        outcomes += zip((part for part, _ in sendable), futures, strict=True)
        for part, outcome in outcomes:
            self.pending.add(outcome)
            outcome.add_done_callback(partial(self._answered, part))

    def _failed(self, error: Exception) -> asyncio.Future[SubmitOutcome]:
        failed: asyncio.Future[SubmitOutcome] = self.loop.create_future()
        failed.set_exception(error)
        return failed

    def _answered(self, part: ClaimedPart, outcome: asyncio.Future[SubmitOutcome]) -> None:
        # The slot is the SMSC's: free it as soon as the SMSC answered, while the outcome
        # is being committed (the part stays leased until then, so nothing is lost).
        self.pending.discard(outcome)
        self.in_flight -= 1
        self.room.set()
        if outcome.cancelled():
            return  # a stop that ran out of grace: the part keeps its lease (comes back)
        result = _result_of(part, outcome)
        if isinstance(result, SubmitUnanswered):
            # The SMSC may have it: the part stays 'sending' (held, its lease renewed, not
            # cancellable, not sent again) until its answer comes late or cannot any more.
            self.d._watch_late_answer(self, part, result)
        elif not isinstance(result, SmsRelayError) and classify(result.status) is Outcome.OK:
            self.taken.add((part, result.message_id or ""))  # the common case, in bulk
            if not result.message_id:  # no receipt can ever find it: it expires after 49 h
                self._say_part("taken_without_id", part, "submit_sm_resp without message_id")
        else:
            task = self.loop.create_task(self._conclude(part, result))
            self.tasks.add(task)  # keep a reference until it finishes
            task.add_done_callback(self.tasks.discard)

    async def _record_taken(self, taken: list[tuple[ClaimedPart, str]]) -> None:
        """Parts the SMSC took in one loop turn, recorded in one write, until stored (see
        ``_record_until_stored``); held (their leases renewed) until then."""
        parts = [
            TakenPart(part.part_id, carrier_id, normalise_carrier_id(carrier_id), part.nb_sms)
            for part, carrier_id in taken
        ]
        try:
            await until_stored(
                lambda: self._store_taken(parts),
                on_refusal=lambda exc: self._refused(exc, parts=len(parts)),
            )
        except Exception:
            log.exception("dispatch.record.crashed", extra={"parts": len(parts)})
            self.d.resume_sending()  # a bug, not a refusing store: the parked parts go
        finally:
            self.held.difference_update(part.part_id for part in parts)

    async def _store_taken(self, parts: list[TakenPart]) -> None:
        now = self.d._clock.now()
        await self.d._store.mark_submitted_many(parts, now, self.d._builders)
        self.d.resume_sending()
        self.d.outcomes[self.name, "ok"] += len(parts)

    def _refused(self, error: TransientError, **about: int) -> None:
        """An outcome the store refused: said (a line a second at most: each part held
        retries its own), tried again later, and no part leaves until one is stored
        (``withhold_sending``)."""
        self.d.records_refused.note({**about, "error": str(error)})
        self.d.withhold_sending(error)

    async def conclude_when_answered(self, part: ClaimedPart, unanswered: SubmitUnanswered) -> None:
        try:
            answer = await unanswered.late
        except SentIntoSilence as silence:
            await self._conclude(part, silence)
            return
        if answer is not None:
            log.info(
                "dispatch.submit.late_answer",
                extra={"part_id": part.part_id, "status": status_name(answer.status)},
            )
        await self._conclude(part, unanswered if answer is None else answer)

    async def _conclude(self, part: ClaimedPart, outcome: SubmitOutcome | SmsRelayError) -> None:
        if _never_left(outcome):
            self.never_left.add(part.part_id)
        try:
            await self._record_until_stored(part, outcome)
        except TransientError as exc:
            log.warning(
                "dispatch.record.failed", extra={"part_id": part.part_id, "error": str(exc)}
            )
        except Exception:
            log.exception("dispatch.record.crashed", extra={"part_id": part.part_id})
            self.d.resume_sending()  # a bug, not a refusing store: the parked parts go
        finally:
            self.held.discard(part.part_id)
            self.never_left.discard(part.part_id)

    async def _record_until_stored(
        self, part: ClaimedPart, outcome: SubmitOutcome | SmsRelayError
    ) -> None:
        """The SMSC has answered: an outcome that could not be stored (the database locked by
        a CLI command, a stalled disk) is tried again until it is, the part still held so its
        lease renews; only a stop that runs out of grace cancels it (and a failed fsync stops
        the process). Given up, the part would be sent again: a duplicate at the handset."""
        await until_stored(
            lambda: self._record(part, outcome),
            on_refusal=lambda exc: self._refused(exc, part_id=part.part_id),
        )
        self.d.resume_sending()

    async def _record(self, part: ClaimedPart, outcome: SubmitOutcome | SmsRelayError) -> None:
        store, builders = self.d._store, self.d._builders
        now = self.d._clock.now()
        if isinstance(outcome, PermanentError):
            await self._end(part, PartState.FAILED, str(outcome), now)
            return
        if isinstance(outcome, SubmitUnanswered):
            # No answer, even late: counted, as each new send may be a duplicate at a handset
            # (and the part may have left: it can no longer be cancelled).
            await self._retry(part, str(outcome), "unanswered", counted=True, may_have_left=True)
            return
        if isinstance(outcome, SentIntoSilence):
            # Its bytes never reached the SMSC (the link's kernel queue says so): not counted
            # (a path that eats data failed every queued message), cancellable unless it
            # left this host.
            await self._retry(
                part, str(outcome), "unanswered", counted=False, may_have_left=outcome.may_have_left
            )
            return
        if isinstance(outcome, SmsRelayError):
            await self._retry(part, str(outcome), "not_sent", counted=False)
            return
        kind = classify(outcome.status)
        if kind is Outcome.OK:
            carrier_id = outcome.message_id or ""
            key = normalise_carrier_id(carrier_id)
            await store.mark_submitted(part.part_id, carrier_id, key, now, builders, part.nb_sms)
            self.d.outcomes[self.name, "ok"] += 1
            if not carrier_id:
                self._say_part("taken_without_id", part, "submit_sm_resp without message_id")
        elif kind is Outcome.SLOW_DOWN:
            self.paused_until = asyncio.get_running_loop().time() + SLOW_DOWN_DELAY
            await store.mark_retry(
                part.part_id, now + SLOW_DOWN_DELAY, status_name(outcome.status), counted=False
            )
            self.d.outcomes[self.name, "throttled"] += 1
        elif kind is Outcome.REJECT:
            await self._end(part, PartState.REJECTED, status_name(outcome.status), now)
        else:
            await self._retry(part, status_name(outcome.status), "error", counted=True)

    async def _end(self, part: ClaimedPart, state: PartState, reason: str, now: float) -> None:
        """A part the SMSC refused for good, or given up: its message ends (and is reported);
        said in the log, since nothing else shows a carrier refusing everything."""
        await self.d._store.mark_part_final(
            part.part_id, state, reason, now, self.d._builders, part.nb_sms
        )
        outcome = "rejected" if state is PartState.REJECTED else "failed"
        self.d.outcomes[self.name, outcome] += 1
        self._say_part(outcome, part, reason)

    def _say_part(self, outcome: str, part: ClaimedPart, reason: str) -> None:
        """At most a line a second per outcome: an SMSC refusing everything at 1,000/s
        would flood the journal (the counts are in /metrics); ``parts`` counts the parts
        so since the line before."""
        said = self.said.get(outcome)
        if said is None:
            event = f"dispatch.part.{outcome}"
            said = self.said[outcome] = SparseLine(log, event, SAY_PART_EVERY_S, "parts")
        said.note({"part_id": part.part_id, "connector": self.name, "error": reason})

    async def _retry(
        self,
        part: ClaimedPart,
        reason: str,
        outcome: str,
        *,
        counted: bool,
        may_have_left: bool = False,
    ) -> None:
        policy = self.d._policy
        now = self.d._clock.now()
        if counted and part.attempts >= policy.max_attempts:
            await self._end(part, PartState.FAILED, f"gave up after {part.attempts}: {reason}", now)
            return
        if counted:
            due = next_attempt_at(part.attempts, now, policy.backoff, random.random())
        else:
            # The link, not the message, failed: the lane claims again only once the connector
            # is bound, so a short fixed delay cannot hammer anything, and a long outage does
            # not leave parts waiting minutes of backoff after the link is back.
            due = now + SLOW_DOWN_DELAY
        await self.d._store.mark_retry(
            part.part_id, due, reason, counted=counted, may_have_left=may_have_left
        )
        self.d.outcomes[self.name, outcome] += 1


def _result_of(
    part: ClaimedPart, outcome: asyncio.Future[SubmitOutcome]
) -> SubmitOutcome | SmsRelayError:
    error = outcome.exception()
    if error is None:
        return outcome.result()
    if isinstance(error, SmsRelayError):
        return error
    log.error("dispatch.submit.crashed", exc_info=error, extra={"part_id": part.part_id})
    return TransientError(f"submit crashed: {error!r}")


def outbound_part(part: ClaimedPart) -> OutboundPart:
    payloads = segments_of(part.text, part.encoding)
    return OutboundPart(
        part_id=part.part_id,
        source=part.sender.lstrip("+"),
        destination=part.recipient.lstrip("+"),
        payload=payloads[part.seq - 1],
        data_coding=0 if part.encoding == Encoding.GSM7 else 8,
        ref=part.message_id & 0xFFFF,
        total=part.nb_sms,
        seq=part.seq,
    )


@lru_cache(maxsize=4096)
def segments_of(text: str, encoding: str) -> tuple[bytes, ...]:
    """Split once per message, not once per part (the parts of a message are claimed together)."""
    return tuple(split_segments(text, Encoding(encoding)))


def _never_left(outcome: SubmitOutcome | SmsRelayError) -> bool:
    """The part surely never reached the SMSC: not sent (not bound, stopping, withheld), or
    its bytes never left this host."""
    if isinstance(outcome, SentIntoSilence):
        return not outcome.may_have_left
    return isinstance(outcome, TransientError) and not isinstance(outcome, SubmitUnanswered)
