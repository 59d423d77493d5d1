"""The webhook sender: posts stored callbacks, records every attempt, retries with backoff.

The outbox row is the work item. The sender claims due rows in batches under a lease and posts
each one; every attempt is recorded, and a failure becomes a later ``due_at``
(:func:`~smsrelay.domain.backoff.next_attempt_at`), so retries survive restarts. If the process
dies between claim and record, the lease runs out and ``release_expired_leases`` puts the row
back: a callback is delivered at least once, and ``X-Smsrelay-Id`` lets receivers drop repeats.

Receivers are isolated from each other: posts to one host (a host and port,
``Target.receiver``: what "host" means below) are bounded by that host's semaphore
(``concurrency_per_host``) and wait on it in their own tasks, and a host keeps in the sender's
hands (posting or waiting for a slot) only what its slots can post within HELD_FOR seconds at
its recent post time (at least twice its slots). A claimed callback beyond that is handed back
unposted, due when the host should have room for it (its place in the host's line times the
host's post time over its slots), so a slow or dead receiver with a backlog neither fills the
sender's hands nor holds the other receivers' callbacks back (the claim takes the longest
due first: theirs).
A claimed callback that cannot start its post in time for its lease to cover it is dropped
unrecorded and comes back when the lease is released. A callback handed back once its
retry budget is spent (``_budget_spent``: since it was stored, with an hour's grace after a
restart) is given up instead (failed, no post): a receiver slower than its callbacks arrive
would otherwise keep an ever-growing backlog, since only an attempt reaches the give-up.

Ordering: callbacks that share an order key (one message's, one conversation's replies) go
out one after the other: the claim skips a row while an earlier one with its key is still
pending or being posted, so a long reply's parts and the STOP after them arrive in order, even
across retries. Callbacks with different keys go in parallel (up to ``concurrency_per_host``
per receiver), and a failing one holds back only its own key. The ones it holds back are
parked in the store (not due) until it is delivered or given up, so claims do not walk them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from dataclasses import dataclass, field

from smsrelay.domain.backoff import BackoffPolicy, next_attempt_at
from smsrelay.errors import TransientError
from smsrelay.logs import SparseLine
from smsrelay.quick_init import quick_init
from smsrelay.service.clock import Clock
from smsrelay.service.retrying import until_stored
from smsrelay.store.interface import Store
from smsrelay.store.records import WebhookAttempt, WebhookJob
from smsrelay.turn_batch import TurnBatch
from smsrelay.webhooks.address_safety import UnsafeAddress
from smsrelay.webhooks.http_client import CallbackClient, HttpClientError, InvalidTarget, Target
from smsrelay.webhooks.keyed_gates import KeyedGates
from smsrelay.webhooks.retry_log import RetryDigest
from smsrelay.webhooks.signing import signature_headers

log = logging.getLogger("smsrelay.webhooks")
IDLE_POLL = 0.2
SWEEP_EVERY = 5.0
LEASE_MARGIN = 5.0  # seconds of lease left after the slowest possible post, to record it
KEEPALIVE = 30.0
CLAIM_GRACE = 5.0  # a claim being written when the sender stops: its time to finish
POST_TIME_KEPT = 0.8  # weight of a host's post time so far against the latest post's
HELD_FOR = 5.0  # seconds of posts a host may have in the sender's hands at its post time
LAPSED_SAID_EVERY_S = 1.0  # webhook.lease.lapsed is logged a line a second at most
# a start brings forward callbacks due later than a retry may wait plus this (a process
# stopped before its receiver came back left a hung receiver's line minutes or hours ahead)
LINE_MARGIN = 5.0
MAX_LINE_IDS = 200_000  # in all lines (past it, a callback waits for its stored due time)
RECOVERED_BY = 4.0  # a host whose post time fell so many times has its line brought in
FIRST_POST_TIME = 0.25  # a host's post time until one is measured
MIN_POST_TIME = 0.001  # the least a post is taken to take
MAX_LINES = 1000  # hosts with a line of handed-back callbacks remembered before pruning
OUTAGE_GRACE = 3600.0  # seconds of tries a callback stored before a restart still gets
NO_ROOM = "not posted: its receiver had no room for it for the whole retry period"


@quick_init
@dataclass(frozen=True)
class PostResult:
    """What one POST came to: an HTTP status, an error text, or both."""

    status: int | None
    error: str | None = None
    permanent: bool = False  # retrying cannot help (a malformed URL)

    @property
    def delivered(self) -> bool:
        return self.error is None


class WebhookSender:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        timeout: float,
        backoff: BackoffPolicy,
        give_up_after: float,
        concurrency_per_host: int,
        allow_private: bool,
        batch: int = 200,
        user_agent: str = "smsrelay",
        tls: ssl.SSLContext | None = None,  # https trust; default: the system's CAs
        sole_sender: bool = False,  # True in serve: nothing else posts from this database
    ) -> None:
        self._tls = tls
        self._store = store
        self._clock = clock
        self._timeout = timeout
        self._backoff = backoff
        self._give_up_after = give_up_after
        # a callback stored before a long outage of the gateway still gets OUTAGE_GRACE of
        # tries from here (_budget_spent)
        self._running_since = clock.now()
        self._allow_private = allow_private
        self._batch = batch
        self._user_agent = user_agent
        self._lease_seconds = 4 * timeout + LEASE_MARGIN
        self._max_held = 4 * batch
        self._gates = KeyedGates(concurrency_per_host)  # a semaphore per receiver
        self._retries = RetryDigest()
        # callbacks whose lease lapsed, for the log
        self._lapsed = SparseLine(log, "webhook.lease.lapsed", LAPSED_SAID_EVERY_S, "callbacks")
        self._post_time: dict[str, float] = {}  # host -> its recent post time (seconds)
        self._line_ends: dict[str, float] = {}  # host -> when its last handed-back one is due
        self._lines: dict[str, _Line] = {}  # host -> the callbacks of its line, to bring in
        self._claims_refused = SparseLine(
            log, "webhook.claim.failed", 1.0, "refused_since_last_line"
        )
        self._remembered = 0  # callbacks in those lines (at most MAX_LINE_IDS)
        self._prune_lines_past = MAX_LINES  # hosts in _line_ends that make it look for old ones
        self._client: CallbackClient | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._jobs: dict[asyncio.Task[None], _InHand] = {}  # task -> the callback it posts
        self._posting: set[asyncio.Task[None]] = set()
        # posted, the attempt not stored yet: still this sender's (held, its lease kept)
        self._recording: set[int] = set()
        self._recorders: set[asyncio.Task[None]] = set()
        self._posted: TurnBatch[_Posted] | None = None  # made on the loop, in start()
        self._sole_sender = sole_sender
        self.sweeps = 0
        self._stopping = False
        # cleared while a claim is written and its callbacks are put in hand (or handed
        # back): a stop waits for that, and so does the lease sweep
        self._claim_settled = asyncio.Event()
        self._claim_settled.set()
        self.delivered = 0
        self.given_up = 0  # callbacks failed for good by this sender (posted or not)
        # kept from start(): asking asyncio for it costs a getpid syscall per call on 3.11
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """New callbacks were stored: look for due work now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._posted = TurnBatch(self._record_posted, self._recorders, self._loop)
        self._recording.clear()  # a stop cut short: those rows' leases bring them back
        self._running_since = self._clock.now()
        self._stopping = False
        self._client = CallbackClient(
            allow_private=self._allow_private,
            max_idle=self._gates.size,
            keepalive=KEEPALIVE,
            tls=self._tls,
        )
        # serve is the database's only process: what an earlier one held is released at once
        until = float("inf") if self._sole_sender else self._clock.now()
        await self._store.release_expired_webhook_leases(until)
        # callbacks an older build left waiting behind ones it has since delivered
        await self._store.unpark_stranded_webhooks()
        # and those a stopped process placed ahead in a hung receiver's line, which only its
        # memory would have brought in (see _place_in_line): due later than a retry waits
        await self._store.bring_forward_webhooks(self._longest_waits(), self._clock.now())
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="webhook-claims"),
            asyncio.create_task(self._sweep_leases(), name="webhook-lease-sweeper"),
        ]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, give posts under way up to ``grace`` seconds. What is claimed and
        not posting (a claim being written included) is handed back, due at once: left to
        its lease, it waited most of a minute for another node or a restart."""
        self._stopping = True
        if not self._claim_settled.is_set() and self._loops:  # it finishes, hands back
            await asyncio.wait({self._loops[0]}, timeout=CLAIM_GRACE)
        await _cancel(self._loops)
        waiting = self._jobs.keys() - self._posting
        now = self._clock.now()
        unposted = [(self._jobs[task].id, now, self._jobs[task].lease) for task in waiting]
        for task in waiting:
            task.cancel()
        if unposted:
            await self._hand_back(unposted)
        loop = self._running_loop()
        deadline = loop.time() + grace
        # a post that ends meanwhile hands its attempt to a new recorder: wait for that too
        while (busy := self._busy()) and loop.time() < deadline:
            await asyncio.wait(busy, timeout=deadline - loop.time())
        await _cancel([*self._jobs, *self._recorders])
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _longest_waits(self) -> list[float]:
        """The longest a callback waits after 0, 1, 2, ... attempts (jitter included), up
        to the cap's: a callback due later was put in a line."""
        waits = [LINE_MARGIN]
        while waits[-1] < self._backoff.cap * 1.25 + LINE_MARGIN:
            attempts = len(waits)
            waits.append(next_attempt_at(attempts, 0.0, self._backoff, 1.0) + LINE_MARGIN)
        return waits

    def _busy(self) -> set[asyncio.Task[None]]:
        return {task for task in [*self._jobs, *self._recorders] if not task.done()}

    # -- claiming ------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            room = self._max_held - len(self._jobs) - len(self._recording)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            limit = min(self._batch, room)
            self._wake.clear()  # a wake() during the claim below makes the wait return at once
            self._claim_settled.clear()
            try:
                lease_ends = self._running_loop().time() + self._lease_seconds  # from the ask
                jobs, lease = await self._claim(limit)
                if self._stopping:
                    await self._hand_back([(job.id, self._clock.now(), lease) for job in jobs])
                    return
                handed_back = [
                    item
                    for job in jobs
                    if (item := self._spawn_safely(job, lease, lease_ends)) is not None
                ]
                if handed_back:
                    await self._hand_back(handed_back)
            finally:
                self._claim_settled.set()
            if len(jobs) < limit:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                # races with the event, and stop() would then wait forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_POLL):
                        await self._wake.wait()

    async def _claim(self, limit: int) -> tuple[list[WebhookJob], float]:
        """Due callbacks, and the lease_until their claim wrote."""
        now = self._clock.now()
        lease = now + self._lease_seconds
        try:
            return await self._store.claim_due_webhooks(now, limit, lease), lease
        except TransientError as exc:  # a line a second at most (a full disk: every poll)
            self._claims_refused.note({"error": str(exc)})
        except Exception:  # a bug must not end the claim loop: nothing would be posted again
            log.exception("webhook.claim.crashed")
        return [], lease

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def _spawn_safely(
        self, job: WebhookJob, lease: float, lease_ends: float
    ) -> tuple[int, float, float] | None:
        """``_spawn``, whose bug must not end the claim loop (nothing would be posted again
        until a restart, silently): the job is logged and left to its lease."""
        try:
            return self._spawn(job, lease, lease_ends)
        except Exception:
            log.exception("webhook.crashed", extra={"webhook_id": job.id})
            return None

    def _spawn(
        self, job: WebhookJob, lease: float, lease_ends: float
    ) -> tuple[int, float, float] | None:
        """Post ``job`` in its own task; or, when its host has as many in hand as it can take
        meanwhile, the job's id and when to hand it out again (nothing is started).
        ``lease_ends``: the lease's end in loop time, counted from when the claim was asked
        (a claim answered late, after a database stall, may have little or none of it left:
        another node's sweep would release it and post it too)."""
        try:
            target: Target | None = Target.parse(job.url)
        except InvalidTarget:
            target = None
        host = target.receiver if target else ""
        if self._gates.in_hand(host) >= self._hand_limit(host):
            if self._waited_too_long(job):
                self._give_up_unposted(job, target)
                return None
            return job.id, self._place_in_line(host, job.id), lease
        loop = self._running_loop()
        start_by = lease_ends - self._timeout - LEASE_MARGIN
        # in the host's hands from now (not from the task's first step: a claim's callbacks
        # for one host are all spawned before any of them runs); left in _finished
        semaphore = self._gates.enter(host)
        run = self._run(job, target, host, semaphore, start_by)
        task = loop.create_task(run, name=f"webhook-{job.id}")
        self._jobs[task] = _InHand(job.id, host, lease)
        task.add_done_callback(self._finished)
        return None

    def _waited_too_long(self, job: WebhookJob) -> bool:
        return self._budget_spent(job, self._clock.now())

    def _budget_spent(self, job: WebhookJob, at: float) -> bool:
        """The retry budget counts from when the callback was stored, but a callback stored
        before an outage still gets OUTAGE_GRACE of tries once this sender runs (at most the
        budget): after a day down, its first failed post must not be its last. (Counting only
        this run's time gave every callback a fresh budget at each restart: a gateway
        restarted daily never gave up on a dead receiver.)"""
        grace = min(self._give_up_after, OUTAGE_GRACE)
        return at - job.created_at > self._give_up_after and at - self._running_since > grace

    def _give_up_unposted(self, job: WebhookJob, target: Target | None) -> None:
        assert self._posted is not None
        self._recording.add(job.id)
        shown_host = target.receiver if target else None
        self._posted.add(_Posted(job, shown_host, PostResult(None, NO_ROOM, permanent=True)))

    def _hand_limit(self, host: str) -> float:
        """How many of ``host``'s callbacks the sender keeps in hand (see the module doc)."""
        slots = self._gates.size
        return max(2 * slots, slots * HELD_FOR / self._post_time.get(host, FIRST_POST_TIME))

    def _place_in_line(self, host: str, webhook_id: int) -> float:
        """When a callback handed back now should be due: one post time over the host's slots
        after the one handed back before it. The line is remembered: spaced by a hung
        receiver's timeouts, a minute's backlog goes hours ahead, and once the receiver is
        back (its post time falls) it is brought in (_pull_forward_if_recovered)."""
        now = self._clock.now()
        if len(self._line_ends) > self._prune_lines_past:  # forget lines behind them
            self._line_ends = {h: t for h, t in self._line_ends.items() if t > now}
            for gone in self._lines.keys() - self._line_ends.keys():
                self._forget_line(gone)
            # twice what is left: with more hosts than MAX_LINES all backlogged, a pass on
            # every hand-back made handing back quadratic
            self._prune_lines_past = max(MAX_LINES, 2 * len(self._line_ends))
        post_time = self._post_time.get(host, FIRST_POST_TIME)
        line_end = self._line_ends.get(host, now)
        if line_end <= now:  # a new line: the one before has all come due
            self._forget_line(host)
        due = max(now, line_end) + post_time / self._gates.size
        self._line_ends[host] = due
        self._remember(host, webhook_id, post_time)
        return due

    def _remember(self, host: str, webhook_id: int, post_time: float) -> None:
        if self._remembered >= MAX_LINE_IDS:
            return  # its stored due time stands (at the rate it was placed by)
        line = self._lines.get(host)
        if line is None:
            line = self._lines[host] = _Line(post_time)
        line.ids.append(webhook_id)
        self._remembered += 1

    def _forget_line(self, host: str) -> _Line | None:
        line = self._lines.pop(host, None)
        if line is not None:
            self._remembered -= len(line.ids)
        return line

    def _pull_forward_if_recovered(self, host: str) -> None:
        """The host posts RECOVERED_BY times faster than when its line was placed: its
        callbacks there are due again in line at the rate it posts now (the soak: after a
        one-minute hang, 75,000 stayed due hours ahead, and restarts did not help)."""
        line = self._lines.get(host)
        if line is None or self._post_time[host] * RECOVERED_BY > line.post_time:
            return
        self._forget_line(host)
        now = self._clock.now()
        step = self._post_time[host] / self._gates.size
        items = [(webhook_id, now + step * (i + 1)) for i, webhook_id in enumerate(line.ids)]
        if items:
            self._line_ends[host] = items[-1][1]
            task = self._running_loop().create_task(self._reschedule(host, items))
            self._recorders.add(task)  # kept until done; a stop cancels it (they wait on)
            task.add_done_callback(self._recorders.discard)

    async def _reschedule(self, host: str, items: list[tuple[int, float]]) -> None:
        """Tried again until stored (a refusal left the line hours ahead: it is no longer
        remembered); a stop gives up, and the next start brings forward what is due later than
        any retry could wait."""
        moved: list[int] = []

        async def write() -> None:
            moved.append(await self._store.reschedule_webhooks(items))

        def refused(exc: TransientError) -> None:
            log.warning("webhook.reschedule.retrying", extra={"host": host, "error": str(exc)})

        try:
            await until_stored(write, on_refusal=refused, give_up=lambda: self._stopping)
        except TransientError:
            return
        log.info("webhook.brought_forward", extra={"host": host, "callbacks": moved[0]})
        self.wake()

    async def _hand_back(self, items: list[tuple[int, float, float]]) -> None:
        if not items:
            return
        try:
            await self._store.defer_webhooks(items)
        except TransientError as exc:  # their leases bring them back
            log.warning("webhook.defer.failed", extra={"error": str(exc)})
        else:
            log.debug("webhook.deferred", extra={"callbacks": len(items)})  # every 0.2 s

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._gates.leave(self._jobs.pop(task).host)
        self._posting.discard(task)
        self._room.set()
        # The next callback with its order key (a person's next reply) may go now: claim
        # at once, not at the next poll, or a chain drains at one callback per poll.
        self._wake.set()

    async def _sweep_leases(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            # A claim's callbacks are in hand (in ``keep``) only once spawned: swept between
            # its write and then, after a pause longer than the lease (SIGSTOP), one was
            # released, claimed again and posted twice. ``keep`` is read right after the wait.
            await self._claim_settled.wait()
            try:
                # what this process is still posting stays its own, whatever the clock did
                released = await self._store.release_expired_webhook_leases(
                    self._clock.now(),
                    keep=[held.id for held in self._jobs.values()] + [*self._recording],
                )
            except TransientError:
                continue
            finally:
                self.sweeps += 1
            if released:
                log.warning("webhook.lease.expired", extra={"released": released})
                self.wake()

    # -- one callback --------------------------------------------------------------------------

    async def _run(
        self,
        job: WebhookJob,
        target: Target | None,
        host: str,
        semaphore: asyncio.Semaphore,
        start_by: float,
    ) -> None:
        try:
            if not await _acquire(semaphore, start_by, self._running_loop()):
                self._say_lapsed(job.id, host)
                return
            if self._stopping:
                semaphore.release()
                return
            await self._attempt(job, target, host, semaphore)
        except Exception:
            log.exception("webhook.crashed", extra={"webhook_id": job.id})

    def _say_lapsed(self, webhook_id: int, host: str) -> None:
        """A line a second at most: a hung receiver's whole hand lapses at once (~750 lines in
        one second each time, in the soak); its lease brings each back."""
        self._lapsed.note({"webhook_id": webhook_id, "host": host})

    async def _attempt(
        self,
        job: WebhookJob,
        target: Target | None,
        host: str,
        semaphore: asyncio.Semaphore,
    ) -> None:
        """Post, free the host's slot, then record (with the others of this loop turn): the
        slot bounds connections to the receiver, and holding it across the commit would cap
        a host at slots / commit time."""
        loop = self._running_loop()
        task = asyncio.current_task(loop)
        if task is not None:
            self._posting.add(task)
        started = loop.time()
        try:
            result = await self._post(job, target)
        finally:
            semaphore.release()
        took = loop.time() - started
        self._note_post_time(host, took)
        assert self._posted is not None
        self._recording.add(job.id)
        shown_host = host if target else None  # host:port, as the other lines name a receiver
        self._posted.add(_Posted(job, shown_host, result, round(took * 1000.0, 1)))

    def _note_post_time(self, host: str, took: float) -> None:
        """The host's recent post time, for its hand limit: never 0 (a post refused before
        any await, an unsafe address, takes no time on uvloop's per-turn clock, and the limit
        divides by it: a ZeroDivisionError ended the claim loop)."""
        if took > self._timeout + 1.0:
            # no post takes longer than its timeout (and its grace) unless this process was
            # paused (SIGSTOP, a frozen VM): such a time, counted, spread a healthy receiver's
            # callbacks over 41 minutes (8 at the timeout), so it is not counted at all
            return
        took = max(took, MIN_POST_TIME)
        if len(self._post_time) > MAX_LINES and host not in self._post_time:
            self._post_time.clear()  # a host per callback: forget them (measured again)
        before = self._post_time.get(host, took)
        if took * RECOVERED_BY <= before and host in self._lines:
            # back from a hang, a line waiting: its posts are fast again now (averaged down
            # from its timeouts, the line was brought in, and handed back, at 12 a second)
            self._post_time[host] = took
        else:
            self._post_time[host] = took + (before - took) * POST_TIME_KEPT
        if self._lines:
            self._pull_forward_if_recovered(host)

    async def _record_posted(self, posted: list[_Posted]) -> None:
        """The receivers have answered: the attempts of a loop turn go to the store in one
        write, tried again until stored (the rows stay this sender's: the lease sweep keeps
        them). Only a stop gives up: the rows' leases then bring them back, and they are
        posted again (at least once; ``X-Smsrelay-Id`` lets a receiver drop the repeat)."""
        now = self._clock.now()
        attempts = [self._attempt_of(item, now) for item in posted]
        try:
            await until_stored(
                lambda: self._store.record_webhook_attempts_many(attempts),
                on_refusal=lambda exc: log.warning(
                    "webhook.record.retrying",
                    extra={"webhook_ids": [a.webhook_id for a in attempts], "error": str(exc)},
                ),
                give_up=lambda: self._stopping,
            )
        except TransientError as exc:  # stopping: these will be posted again after a start
            _say_unrecorded(attempts, str(exc))
        except asyncio.CancelledError:  # a stop out of grace, between two tries: the same
            _say_unrecorded(attempts, "the stop's grace ended before it was stored")
            raise
        except Exception:
            log.exception(
                "webhook.crashed", extra={"webhook_ids": [a.webhook_id for a in attempts]}
            )
        else:
            unposted: list[_Posted] = []
            for item, attempt in zip(posted, attempts, strict=True):
                if item.latency_ms is None:  # given up without a post: one line for them all
                    self.given_up += 1
                    unposted.append(item)
                else:
                    self._report(item, attempt)
            if unposted:
                _report_given_up_unposted(unposted)
        finally:
            self._recording.difference_update(a.webhook_id for a in attempts)
            self._room.set()
            self._wake.set()  # the next callbacks of their order keys may go now

    async def _post(self, job: WebhookJob, target: Target | None) -> PostResult:
        if target is None:
            return PostResult(None, "invalid callback URL", permanent=True)
        assert self._client is not None
        try:
            status = await self._client.post(target, self._headers(job), job.body, self._timeout)
        except UnsafeAddress as exc:  # the URL itself is wrong: retrying for a day won't help
            return PostResult(None, f"unsafe address: {exc}", permanent=True)
        except TimeoutError:
            return PostResult(None, f"timeout after {self._timeout:g} s")
        except HttpClientError as exc:
            return PostResult(None, str(exc))
        except OSError as exc:  # a socket or TLS failure after connecting (SSLError is one)
            return PostResult(None, f"{type(exc).__name__}: {exc}")
        return judge(status)

    def _headers(self, job: WebhookJob) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            "X-Smsrelay-Id": job.uuid,
            "X-Smsrelay-Event": job.kind,
            "X-Smsrelay-Attempt": str(job.attempts + 1),
        }
        if job.secret:
            # wall time, what the receiver checks it against (not a pinned test clock)
            headers.update(signature_headers(job.secret, int(time.time()), job.body))
        return headers

    def _attempt_of(self, posted: _Posted, now: float) -> WebhookAttempt:
        job, result = posted.job, posted.result
        if result.delivered:
            return WebhookAttempt(
                job.id, now, result.status, posted.latency_ms, None, "delivered", None
            )
        due = self._next_due(job, job.round_attempts + 1, now, result)
        outcome = "failed" if due is None else "pending"
        return WebhookAttempt(
            job.id, now, result.status, posted.latency_ms, result.error, outcome, due
        )

    def _report(self, posted: _Posted, attempt: WebhookAttempt) -> None:
        """An attempt now stored: counted (if delivered) and logged."""
        if attempt.outcome == "delivered":
            self.delivered += 1
            level, event = logging.DEBUG, "webhook.delivered"  # each attempt is in the store
        elif attempt.outcome == "failed":
            self.given_up += 1
            level, event = logging.WARNING, "webhook.failed"
        else:
            level, event = logging.DEBUG, "webhook.retry"  # and a line a minute per receiver
            self._log_retry(posted, attempt)
        if not log.isEnabledFor(level):
            return
        job = posted.job
        fields = {"webhook_id": job.id, "uuid": job.uuid, "kind": job.kind, "host": posted.host}
        fields |= {"attempt": job.attempts + 1, "status": attempt.status}
        fields |= {"latency_ms": attempt.latency_ms}
        if attempt.outcome != "delivered":
            fields |= {"error": attempt.error, "next_due": attempt.next_due}
        log.log(level, event, extra=fields)

    def _log_retry(self, posted: _Posted, attempt: WebhookAttempt) -> None:
        last = {"status": attempt.status, "error": attempt.error}
        for fields in self._retries.add(str(posted.host), posted.job.id, attempt.at, last):
            # a warning: a receiver that fails is the operator's to fix, and at info it was the
            # only sign of it for 24 h, until each callback's webhook.failed
            log.warning("webhook.retrying", extra=fields)

    def _next_due(
        self, job: WebhookJob, attempt: int, now: float, result: PostResult
    ) -> float | None:
        """When to try again, or None to give up (permanent error, retry budget spent).
        ``attempt``: of the callback's round (a manual retry starts one, its budget too)."""
        if result.permanent:
            return None
        due = next_attempt_at(attempt, now, self._backoff, random.random())
        return None if self._budget_spent(job, due) else due


@dataclass(slots=True)
class _Line:
    """A host's callbacks handed back in its current line, and its post time then."""

    post_time: float
    ids: list[int] = field(default_factory=list)


@quick_init
@dataclass(frozen=True, slots=True)
class _InHand:
    """A claimed callback the sender is posting or about to: its id, its receiver host (its
    gate's count), and its claim's lease (to hand it back under)."""

    id: int
    host: str
    lease: float


@quick_init
@dataclass(frozen=True, slots=True)
class _Posted:
    """A callback posted (or found unpostable), its attempt waiting to be recorded."""

    job: WebhookJob
    host: str | None
    result: PostResult
    latency_ms: float | None = None  # None: not posted


def _report_given_up_unposted(unposted: list[_Posted]) -> None:
    """Given up without a post: a receiver slower than its callbacks arrive gives up
    thousands a minute, one line per turn rather than one per callback."""
    hosts = sorted({str(item.host) for item in unposted})
    log.warning(
        "webhook.given_up_unposted",
        extra={
            "callbacks": len(unposted),
            "webhook_ids": [item.job.id for item in unposted[:20]],
            "hosts": hosts[:10],
            "error": NO_ROOM,
        },
    )


def judge(status: int) -> PostResult:
    """2xx is delivered; anything else, redirects included, is a failed attempt."""
    if 200 <= status < 300:
        return PostResult(status)
    if 300 <= status < 400:
        return PostResult(status, f"redirect not followed (HTTP {status})")
    return PostResult(status, f"HTTP {status}")


async def _acquire(
    semaphore: asyncio.Semaphore, start_by: float, loop: asyncio.AbstractEventLoop
) -> bool:
    """A slot of the host, if it came by ``start_by`` (loop time); else none is held.

    No timer: a callback that waited past it gives its slot straight back. Meanwhile this
    process keeps its lease (the sweep's ``keep``), and another node that takes the row once
    the lease runs out is the only one to post it."""
    if loop.time() >= start_by:
        return False
    await semaphore.acquire()
    if loop.time() < start_by:
        return True
    semaphore.release()
    return False


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _say_unrecorded(attempts: list[WebhookAttempt], error: str) -> None:
    """Posted, the attempt not stored: posted again after the next start (every such
    callback named: a stop's count of repeats must match what receivers see)."""
    log.error(
        "webhook.record.failed",
        extra={
            "webhook_ids": [a.webhook_id for a in attempts],
            "error": error,
            "then": "posted again at start",
        },
    )
