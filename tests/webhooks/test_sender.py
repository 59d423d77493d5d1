"""The webhook sender against real HTTP receivers on 127.0.0.1 and a real SQLite outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web

from smsrelay.domain.backoff import BackoffPolicy
from smsrelay.errors import TransientError
from smsrelay.service.clock import FixedClock
from smsrelay.store.records import Account, WebhookAttempt, WebhookView
from smsrelay.store.sqlite_store import SqliteStore
from smsrelay.webhooks import sender as sender_module
from smsrelay.webhooks.sender import WebhookSender
from smsrelay.webhooks.signing import verify

from .conftest import Receiver, add_callback, eventually

MakeReceiver = Callable[..., Awaitable[Receiver]]
MakeSender = Callable[..., Awaitable[WebhookSender]]
BODY = b'{"messageId": 42, "status": "Delivered", "stat": "DELIVRD"}'
T0 = 1_767_225_600.0


async def state_of(store: SqliteStore, webhook_id: int) -> WebhookView:
    view = await store.get_webhook(webhook_id)
    assert view is not None
    return view


def is_state(store: SqliteStore, webhook_id: int, state: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await state_of(store, webhook_id)).state == state

    return check


def has_attempts(store: SqliteStore, webhook_id: int, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len((await state_of(store, webhook_id)).history) >= count

    return check


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- delivery -------------------------------------------------------------------------------------


async def test_delivers_on_2xx_with_exact_headers_and_body(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()
    webhook_id = await add_callback(store, account, receiver.url, body=BODY, uuid="cb-1")
    sender = await senders(user_agent="smsrelay/test")

    await eventually(is_state(store, webhook_id, "delivered"))

    [request] = receiver.seen
    assert request.body == BODY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "smsrelay/test"
    assert request.headers["X-Smsrelay-Id"] == "cb-1"
    assert request.headers["X-Smsrelay-Event"] == "dlr"
    assert request.headers["X-Smsrelay-Attempt"] == "1"
    assert "X-Smsrelay-Signature" not in request.headers  # the account has no secret
    view = await state_of(store, webhook_id)
    assert view.attempts == 1 and view.delivered_at is not None and view.last_error is None
    [(_, status, latency_ms, error)] = view.history
    assert (status, error) == (200, None) and latency_ms is not None and latency_ms >= 0
    await eventually(lambda: sender.delivered == 1)  # counted once its write has returned


async def test_reply_callbacks_say_so(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()
    webhook_id = await add_callback(store, account, receiver.url, kind="reply")
    await senders()
    await eventually(is_state(store, webhook_id, "delivered"))
    assert receiver.seen[0].headers["X-Smsrelay-Event"] == "reply"


async def test_callbacks_of_an_account_with_a_secret_are_signed(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    await store.update_account("acme", {"webhook_secret": "whsec_test"})
    receiver = await receivers()
    clock = FixedClock(T0)
    webhook_id = await add_callback(store, account, receiver.url, body=BODY, now=T0)
    await senders(clock=clock)

    await eventually(is_state(store, webhook_id, "delivered"))

    headers, body = receiver.seen[0].headers, receiver.seen[0].body
    timestamp = int(headers["X-Smsrelay-Timestamp"])
    # The receiver's wall clock, not the gateway's business clock (pinned in a CI stand-in,
    # it made every signature look replayed): the receiver checks it against its own time.
    assert abs(timestamp - time.time()) < 60 and abs(timestamp - T0) > 3600
    assert verify("whsec_test", timestamp, body, headers["X-Smsrelay-Signature"], now=time.time())
    assert not verify("other", timestamp, body, headers["X-Smsrelay-Signature"], now=time.time())


async def test_wake_sends_new_callbacks_without_waiting_for_a_poll(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()
    sender = await senders()
    ids = [await add_callback(store, account, receiver.url) for _ in range(5)]
    sender.wake()
    for webhook_id in ids:
        await eventually(is_state(store, webhook_id, "delivered"))
    # counted once the sender's write returns, which may be a loop turn after the commit
    await eventually(lambda: sender.delivered == 5)


async def test_a_chain_of_ordered_callbacks_goes_out_without_waiting_a_poll_each(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Replies from one person go out one after the other. Each one's end must let the next
    # go at once: 300 replies at one per claim poll (0.2 s) took a minute to drain.
    monkeypatch.setattr(sender_module, "IDLE_POLL", 3600.0)  # only wake-ups move it
    receiver = await receivers()
    key = "c+33612345678>+33757000001"
    ids = [await add_callback(store, account, receiver.url, order_key=key) for _ in range(5)]
    sender = await senders()
    sender.wake()
    for webhook_id in ids:
        await eventually(is_state(store, webhook_id, "delivered"))
    assert [request.headers["X-Smsrelay-Id"] for request in receiver.seen] == [
        (await state_of(store, webhook_id)).uuid for webhook_id in ids
    ]


async def test_a_callback_an_older_build_left_waiting_with_nothing_ahead_goes_at_start(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    # The package was upgraded under a running serve and a newer command (the cron's
    # `status`) opened the database first: migration 6 parked the second reply behind the
    # first. The older serve still running delivered the first without unparking the second:
    # it knows nothing of parking. Once the newer serve starts, the second must go.
    receiver = await receivers()
    key = "c+33612345678>+33757000001"
    first = await add_callback(store, account, receiver.url, now=T0, order_key=key)
    second = await add_callback(store, account, receiver.url, now=T0 + 1, order_key=key)
    assert (await state_of(store, second)).due_at is None  # parked behind the first
    assert [job.id for job in await store.claim_due_webhooks(T0 + 2, 10, T0 + 60)] == [first]
    older_build_delivers = (  # that build's record_attempt, as it was
        "UPDATE webhooks SET state = 'delivered', attempts = attempts + 1, lease_until = NULL, "
        "delivered_at = ? WHERE id = ?"
    )
    await store.db.write(lambda c: c.execute(older_build_delivers, (T0 + 3, first)))

    await senders(clock=FixedClock(T0 + 3600), sole_sender=True)  # as serve starts it
    await eventually(is_state(store, second, "delivered"))
    assert [seen.headers["X-Smsrelay-Id"] for seen in receiver.seen] == [
        (await state_of(store, second)).uuid
    ]


# -- retries --------------------------------------------------------------------------------------


async def test_server_errors_are_retried_until_delivered_and_every_attempt_is_recorded(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers(script=[500, 502, 503])
    webhook_id = await add_callback(store, account, receiver.url, uuid="cb-retry")
    await senders()

    await eventually(is_state(store, webhook_id, "delivered"))

    view = await state_of(store, webhook_id)
    assert [status for _, status, _, _ in view.history] == [500, 502, 503, 200]
    assert [error for _, _, _, error in view.history] == ["HTTP 500", "HTTP 502", "HTTP 503", None]
    assert view.attempts == 4
    assert [seen.headers["X-Smsrelay-Attempt"] for seen in receiver.seen] == ["1", "2", "3", "4"]
    assert {seen.headers["X-Smsrelay-Id"] for seen in receiver.seen} == {"cb-retry"}


async def test_failed_attempts_are_one_log_line_per_receiver_not_one_per_retry(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A line per failed attempt was ~150 a day per callback for a receiver that is down.
    caplog.set_level(logging.INFO, logger="smsrelay.webhooks")
    receiver = await receivers(script=[500] * 12)
    ids = [await add_callback(store, account, receiver.url) for _ in range(3)]
    await senders()
    for webhook_id in ids:
        await eventually(is_state(store, webhook_id, "delivered"))

    assert len(receiver.seen) == 15  # every failure was retried
    lines = [
        r for r in caplog.records if r.name == "smsrelay.webhooks" and r.levelno >= logging.INFO
    ]
    assert [r.getMessage() for r in lines] == ["webhook.retrying"]  # within its first minute
    assert lines[0].levelno == logging.WARNING  # was info: at WARNING, nothing for 24 h
    line = lines[0].__dict__
    assert (line["failed_attempts"], line["status"], line["error"]) == (1, 500, "HTTP 500")
    assert line["host"] == receiver.url.split("/")[2]  # host:port, as other lines say


async def test_receiver_down_then_up_gets_the_callback_once(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    port = free_port()
    webhook_id = await add_callback(store, account, f"http://127.0.0.1:{port}/hook")
    await senders()
    await eventually(has_attempts(store, webhook_id, 2))
    view = await state_of(store, webhook_id)
    assert view.state in ("pending", "sending")
    assert view.history[0][1] is None
    assert (view.history[0][3] or "").startswith("connection failed")

    receiver = await receivers(port=port)
    await eventually(is_state(store, webhook_id, "delivered"))
    assert len(receiver.seen) == 1


async def test_slow_receiver_times_out_and_is_retried(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()

    async def slow_once(request: web.Request) -> web.StreamResponse:
        if len(receiver.seen) == 1:
            await receiver.hang(request)
        return web.Response(status=204)

    receiver.behaviour = slow_once
    webhook_id = await add_callback(store, account, receiver.url)
    await senders(timeout=0.2)

    await eventually(is_state(store, webhook_id, "delivered"))
    history = (await state_of(store, webhook_id)).history
    assert [(status, error) for _, status, _, error in history] == [
        (None, "timeout after 0.2 s"),
        (204, None),
    ]
    assert history[0][2] is not None and history[0][2] >= 200


async def test_receiver_closing_the_connection_is_retried(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()

    async def rude_once(request: web.Request) -> web.StreamResponse:
        if len(receiver.seen) == 1:
            assert request.transport is not None
            request.transport.abort()
            await receiver.hang(request)
        return web.Response(status=200)

    receiver.behaviour = rude_once
    webhook_id = await add_callback(store, account, receiver.url)
    await senders()

    await eventually(is_state(store, webhook_id, "delivered"))
    history = (await state_of(store, webhook_id)).history
    assert [error for _, _, _, error in history] == ["server disconnected", None]


async def test_redirects_are_not_followed(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    target = await receivers()
    bouncer = await receivers()

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(target.url)

    bouncer.behaviour = redirect
    webhook_id = await add_callback(store, account, bouncer.url)
    await senders()

    await eventually(has_attempts(store, webhook_id, 1))
    _, status, _, error = (await state_of(store, webhook_id)).history[0]
    assert (status, error) == (307, "redirect not followed (HTTP 307)")
    assert target.seen == []


# -- giving up ------------------------------------------------------------------------------------


async def test_gives_up_when_the_next_try_would_exceed_the_budget_then_retry_puts_it_back(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers(default=500)
    clock = FixedClock(T0)
    webhook_id = await add_callback(store, account, receiver.url, now=T0)
    backoff = BackoffPolicy(first=10.0, factor=2.0, cap=600.0)
    sender = await senders(clock=clock, backoff=backoff, give_up_after=25.0)

    await eventually(has_attempts(store, webhook_id, 1))
    view = await state_of(store, webhook_id)
    assert view.state == "pending" and T0 + 10 <= view.due_at <= T0 + 12.5

    clock.set(T0 + 13)  # due now; the next delay (20 s or more) would end past T0 + 25
    sender.wake()
    await eventually(is_state(store, webhook_id, "failed"))
    assert len((await state_of(store, webhook_id)).history) == 2
    assert [view.id for view in await store.list_webhooks("failed")] == [webhook_id]

    receiver.default = 200
    assert await store.retry_webhooks(None, clock.now()) == 1
    sender.wake()
    await eventually(is_state(store, webhook_id, "delivered"))
    assert await store.list_webhooks("failed") == []


async def test_a_retried_callback_gets_a_fresh_round_of_backoff_not_one_more_post(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    # The backoff counted every post ever made: past the first round, a retried callback's
    # first wait (40 s here) ran past a budget below the cap, and it was given up after one
    # more post. Its round starts over: 10 s, then 20 s, as a new callback's.
    receiver = await receivers(default=500)
    clock = FixedClock(T0)
    webhook_id = await add_callback(store, account, receiver.url, now=T0)
    backoff = BackoffPolicy(first=10.0, factor=2.0, cap=600.0)
    sender = await senders(clock=clock, backoff=backoff, give_up_after=25.0)
    await eventually(has_attempts(store, webhook_id, 1))
    clock.set(T0 + 13)
    sender.wake()
    await eventually(is_state(store, webhook_id, "failed"))  # after 2 posts: 20 s is past 25

    retried_at = T0 + 1000
    clock.set(retried_at)
    assert await store.retry_webhooks(None, retried_at) == 1
    sender.wake()
    await eventually(has_attempts(store, webhook_id, 3))
    view = await state_of(store, webhook_id)
    assert view.state == "pending", view.last_error  # not given up after one post
    assert retried_at + 10 <= view.due_at <= retried_at + 12.5  # the round's first wait
    clock.set(retried_at + 13)
    sender.wake()
    await eventually(is_state(store, webhook_id, "failed"))  # its round's 20 s: past 25
    view = await state_of(store, webhook_id)
    assert (view.attempts, len(view.history)) == (4, 4)  # every post still counted
    assert receiver.seen[-1].headers["X-Smsrelay-Attempt"] == "4"


async def test_a_callback_stored_before_a_long_outage_gets_its_retries_after_it(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    # Stored, then the gateway was down for longer than the whole budget: its first failed
    # post after the restart must not spend the budget the outage used up.
    receiver = await receivers(default=500)
    webhook_id = await add_callback(store, account, receiver.url, now=T0)
    clock = FixedClock(T0 + 3600)
    backoff = BackoffPolicy(first=10.0, factor=2.0, cap=600.0)
    await senders(clock=clock, backoff=backoff, give_up_after=25.0)

    await eventually(has_attempts(store, webhook_id, 1))
    view = await state_of(store, webhook_id)
    assert view.state == "pending" and T0 + 3610 <= view.due_at <= T0 + 3612.5


async def test_a_restart_gives_an_old_callback_an_hour_not_a_fresh_budget(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    # Failing for most of its 2 h budget, then the gateway restarts: counting from the
    # restart gave it 2 h more at every restart (a daily restart never gave up on a dead
    # receiver). It gets an hour (OUTAGE_GRACE) after the restart, then it is given up.
    receiver = await receivers(default=500)
    webhook_id = await add_callback(store, account, receiver.url, now=T0)
    clock = FixedClock(T0 + 7100)  # the restart
    backoff = BackoffPolicy(first=10.0, factor=2.0, cap=600.0)
    sender = await senders(clock=clock, backoff=backoff, give_up_after=7200.0)
    await eventually(has_attempts(store, webhook_id, 1))
    assert (await state_of(store, webhook_id)).state == "pending"  # within the hour

    clock.set(T0 + 7100 + 3601)
    sender.wake()
    await eventually(is_state(store, webhook_id, "failed"))


async def test_a_malformed_url_fails_at_once(
    store: SqliteStore, account: Account, senders: MakeSender
) -> None:
    webhook_id = await add_callback(store, account, "ftp://example.com/hook")
    await senders()
    await eventually(is_state(store, webhook_id, "failed"))
    view = await state_of(store, webhook_id)
    assert view.attempts == 1 and view.last_error == "invalid callback URL"


# -- isolation between receivers ------------------------------------------------------------------


async def _stuck_and_fine(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    *,
    stuck: int,
    stuck_host: str = "127.0.0.2",
) -> tuple[Receiver, list[int], list[int]]:
    """A receiver that never answers with ``stuck`` callbacks stored first, then a working
    one's 3 (on 127.0.0.1, another port): the stuck receiver, and each one's callback ids."""
    hung = await receivers(host=stuck_host)
    hung.behaviour = hung.hang
    fine = await receivers(host="127.0.0.1")
    hung_ids = [await add_callback(store, account, hung.url) for _ in range(stuck)]
    fine_ids = [await add_callback(store, account, fine.url) for _ in range(3)]
    return hung, hung_ids, fine_ids


@pytest.mark.parametrize("stuck_host", ["127.0.0.2", "127.0.0.1"])
async def test_one_stuck_receiver_does_not_hold_back_another(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    stuck_host: str,
) -> None:
    # A receiver is its origin: two ports of one host are two receivers (a hung one took the
    # slots of the host's every port, and callbacks to a fine port waited 20 minutes)
    slow, slow_ids, fast_ids = await _stuck_and_fine(
        store, account, receivers, stuck=3, stuck_host=stuck_host
    )
    await senders(concurrency_per_host=1, timeout=5.0)

    for webhook_id in fast_ids:
        await eventually(is_state(store, webhook_id, "delivered"))
    assert len(slow.seen) == 1  # the other two wait for the slow host's only slot

    slow.release.set()
    for webhook_id in slow_ids:
        await eventually(is_state(store, webhook_id, "delivered"))


async def test_posts_to_one_host_are_bounded(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await gate.wait()  # every post waits here until the test has looked
        return web.Response(status=200)

    receiver.behaviour = held
    ids = [await add_callback(store, account, receiver.url) for _ in range(8)]
    sender = await senders(concurrency_per_host=2)
    await eventually(lambda: receiver.in_flight == 2)
    gate.set()
    await eventually(lambda: sender.delivered == len(ids))
    assert receiver.most_in_flight == 2


# -- address safety -------------------------------------------------------------------------------


async def test_private_addresses_are_refused_unless_allowed(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()
    literal = await add_callback(store, account, receiver.url)
    by_name = await add_callback(store, account, f"http://localhost:{receiver.port}/hook")
    await senders(allow_private=False)

    for webhook_id in (literal, by_name):
        await eventually(is_state(store, webhook_id, "failed"))  # at once: no day of retries
        view = await state_of(store, webhook_id)
        assert len(view.history) == 1
        assert (view.history[0][3] or "").startswith("unsafe address:")
    assert receiver.seen == []


async def test_a_private_host_name_is_called_when_allowed(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()
    webhook_id = await add_callback(store, account, f"http://localhost:{receiver.port}/hook")
    await senders(allow_private=True)
    await eventually(is_state(store, webhook_id, "delivered"))


# -- crash safety ---------------------------------------------------------------------------------


async def test_callbacks_claimed_by_a_dead_sender_come_back_when_the_lease_ends(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()
    clock = FixedClock(T0)
    ids = [await add_callback(store, account, receiver.url, now=T0) for _ in range(2)]
    claimed = await store.claim_due_webhooks(T0, 10, lease_until=T0 + 30)
    assert [job.id for job in claimed] == ids  # ...and then that sender died

    sender = await senders(clock=clock)
    assert [(await state_of(store, i)).state for i in ids] == ["sending", "sending"]

    clock.set(T0 + 31)
    assert await store.release_expired_webhook_leases(clock.now()) == 2
    sender.wake()
    for webhook_id in ids:
        await eventually(is_state(store, webhook_id, "delivered"))
    assert len(receiver.seen) == 2


async def test_a_post_cut_short_by_stop_is_sent_again_with_the_same_id(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    receiver = await receivers()
    receiver.behaviour = receiver.hang
    clock = FixedClock(T0)
    webhook_id = await add_callback(store, account, receiver.url, now=T0, uuid="cb-crash")
    first = await senders(clock=clock)
    await eventually(lambda: len(receiver.seen) == 1)
    await first.stop(grace=0.05)
    assert (await state_of(store, webhook_id)).state == "sending"

    receiver.behaviour = None
    clock.set(T0 + 3600)
    await senders(clock=clock)  # start() releases expired leases
    await eventually(is_state(store, webhook_id, "delivered"))
    assert [seen.headers["X-Smsrelay-Id"] for seen in receiver.seen] == ["cb-crash"] * 2


def before_attempt_writes(
    store: SqliteStore,
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[Sequence[WebhookAttempt]], Awaitable[None]],
) -> None:
    """Runs ``before`` ahead of each write of attempts (a spy, a slow disk, a lock)."""
    real_record = store.record_webhook_attempts_many

    async def wrapped(attempts: Sequence[WebhookAttempt]) -> None:
        await before(attempts)
        await real_record(attempts)

    monkeypatch.setattr(store, "record_webhook_attempts_many", wrapped)


async def test_a_stop_names_every_posted_callback_whose_attempt_it_could_not_store(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A full disk at a stop: 40 callbacks were posted again after the restart, and the log
    # named 24 (those cut off between two tries of their write said nothing: the storage
    # review). Each is posted again at the start; each must be named.
    receiver = await receivers()
    ids = [await add_callback(store, account, receiver.url) for _ in range(3)]
    refusals = dict.fromkeys(ids, 0)

    async def disk_full(attempts: Sequence[WebhookAttempt]) -> None:
        for attempt in attempts:
            refusals[attempt.webhook_id] += 1
        raise TransientError("database commit failed: database or disk is full")

    before_attempt_writes(store, monkeypatch, disk_full)
    sender = await senders()
    # five refusals each: the wait before the next try (0.8 s) outlasts the stop's grace
    await eventually(lambda: min(refusals.values()) >= 5)
    caplog.set_level(logging.ERROR, logger="smsrelay.webhooks")
    await sender.stop(grace=0.05)  # inside until_stored's wait between two tries
    named = [
        webhook_id
        for record in caplog.records
        if record.getMessage() == "webhook.record.failed"
        for webhook_id in record.__dict__["webhook_ids"]
    ]
    assert sorted(named) == sorted(ids)


async def test_a_post_answered_while_stopping_is_recorded_before_stop_returns(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The attempt is recorded by a task of its own, made when the answer comes: stop() must
    # wait for that one too, or the callback would stay 'sending' and be posted again.
    receiver = await receivers()
    receiver.behaviour = receiver.hang
    webhook_id = await add_callback(store, account, receiver.url)
    sender = await senders()
    waited_on: list[set[asyncio.Task[None]]] = []  # what stop() waits for, each time it looks
    real_busy = sender._busy

    def busy() -> set[asyncio.Task[None]]:
        waited_on.append(real_busy())
        return waited_on[-1]

    monkeypatch.setattr(sender, "_busy", busy)
    disk_busy = asyncio.Event()

    async def slow_disk(_: Sequence[WebhookAttempt]) -> None:
        # The commit goes on only once stop() counts this write among what it waits for; a
        # stop that did not would cancel it here, and the callback would stay 'sending'.
        disk_busy.set()
        recorder = asyncio.current_task()
        await eventually(lambda: any(recorder in tasks for tasks in waited_on))

    before_attempt_writes(store, monkeypatch, slow_disk)
    await eventually(lambda: len(receiver.seen) == 1)
    stopping = asyncio.create_task(sender.stop(grace=5.0))
    # its claim loop gone, stop() is waiting for the post: only now does the answer come
    await eventually(lambda: sender._stopping and all(t.done() for t in sender._loops))
    assert receiver.in_flight == 1
    receiver.release.set()
    await disk_busy.wait()
    await stopping
    assert (await state_of(store, webhook_id)).state == "delivered"
    assert sender.delivered == 1


async def test_a_turn_of_answers_is_recorded_in_one_write(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = await receivers()
    receiver.behaviour = receiver.hang
    writes: list[list[int]] = []

    async def spy(attempts: Sequence[WebhookAttempt]) -> None:
        writes.append([attempt.webhook_id for attempt in attempts])

    before_attempt_writes(store, monkeypatch, spy)
    ids = [await add_callback(store, account, receiver.url) for _ in range(4)]
    await senders()
    await eventually(lambda: receiver.in_flight == 4)
    receiver.release.set()  # the four answers come together
    for webhook_id in ids:
        await eventually(is_state(store, webhook_id, "delivered"))
    assert sorted(i for write in writes for i in write) == ids  # each recorded once
    assert len(writes) < len(ids)  # some in the same write


async def test_an_attempt_the_store_briefly_refuses_is_recorded_later_not_posted_again(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The database is locked (a CLI command) just after the receiver said 200: the attempt
    # must be recorded once the lock is gone, not the callback posted again after its lease.
    receiver = await receivers()
    refusals: list[int] = []

    async def locked_twice(attempts: Sequence[WebhookAttempt]) -> None:
        if len(refusals) < 2:
            refusals.extend(attempt.webhook_id for attempt in attempts)
            raise TransientError("database commit failed: database is locked")

    before_attempt_writes(store, monkeypatch, locked_twice)
    webhook_id = await add_callback(store, account, receiver.url, uuid="cb-once")
    await senders(timeout=0.5)  # a 7 s lease: the re-post would come within the wait below

    await eventually(is_state(store, webhook_id, "delivered"))
    assert refusals == [webhook_id, webhook_id]
    assert [s.headers["X-Smsrelay-Id"] for s in receiver.seen] == ["cb-once"]
    view = await state_of(store, webhook_id)
    assert view.attempts == 1 and len(view.history) == 1


async def test_a_wall_clock_step_does_not_release_a_callback_still_being_posted(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An NTP step or a resumed VM moves the wall clock past the lease mid-post: the callback
    # is still this sender's, and must not be posted a second time in parallel.
    monkeypatch.setattr(sender_module, "SWEEP_EVERY", 0.02)
    receiver = await receivers()
    receiver.behaviour = receiver.hang
    clock = FixedClock(T0)
    webhook_id = await add_callback(store, account, receiver.url, now=T0)
    sender = await senders(clock=clock)
    await eventually(lambda: len(receiver.seen) == 1)
    clock.set(T0 + 3600)
    swept = sender.sweeps
    await eventually(lambda: sender.sweeps >= swept + 3)
    assert (await state_of(store, webhook_id)).state == "sending"
    assert len(receiver.seen) == 1


async def test_a_callback_given_its_slot_after_its_start_by_gives_it_back_unposted() -> None:
    """Its lease may have run out meanwhile (another node can take the row): it is not posted,
    and the host's slot goes on to the next callback."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(1)
    await gate.acquire()  # the host's only slot, busy
    late = asyncio.create_task(sender_module._acquire(gate, loop.time() + 0.05, loop))
    in_time = asyncio.create_task(sender_module._acquire(gate, loop.time() + 60.0, loop))
    start_by = loop.time() + 0.05
    await eventually(lambda: loop.time() > start_by)
    gate.release()
    assert await late is False
    assert await in_time is True  # the slot went on to the waiter still in time
    assert gate.locked()
    assert await sender_module._acquire(asyncio.Semaphore(1), loop.time() - 1, loop) is False


async def test_a_stuck_host_with_a_backlog_hands_it_back_and_others_go_first(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    # Its backlog used to fill the sender's hands (4 batches) waiting for its few slots, so
    # no other receiver's callback was claimed until those had timed out or lapsed, one
    # handful at a time: tens of seconds for everyone, as long as the backlog lasted.
    _, stuck_ids, fine_ids = await _stuck_and_fine(store, account, receivers, stuck=60)
    await senders(concurrency_per_host=2, timeout=2.0, batch=5)
    for webhook_id in fine_ids:  # after the stuck host's first timeouts, not its backlog
        await eventually(is_state(store, webhook_id, "delivered"), timeout=8.0)
    views = [await state_of(store, webhook_id) for webhook_id in stuck_ids]
    handed_back = [v for v in views if v.state == "pending" and v.attempts == 0]
    assert len(handed_back) >= 60 - 4 * 5  # beyond what it holds: unposted, none counted
    assert all(v.state != "failed" for v in views)


async def test_a_backlog_its_receiver_never_has_room_for_is_given_up_after_the_budget(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Handed back unposted, a callback never reached an attempt, and only an attempt gave
    # up: a receiver slower than its callbacks arrive kept a backlog that grew for ever
    # (2-8.5k a minute in the twenty-first session's leak review).
    hung = await receivers()
    hung.behaviour = hung.hang
    clock = FixedClock(T0)
    stored_before_start = T0 - 3600.0  # older than the budget, but no sender was running
    ids = [await add_callback(store, account, hung.url, now=stored_before_start) for _ in range(30)]
    # one slot and the first post time (0.25 s): 20 in hand, the other 10 handed back
    sender = await senders(
        clock=clock, concurrency_per_host=1, timeout=5.0, batch=50, give_up_after=60.0
    )

    async def views_in(state: str) -> list[WebhookView]:
        views = [await state_of(store, webhook_id) for webhook_id in ids]
        return [view for view in views if view.state == state]

    async def handed_back() -> bool:
        return len([v for v in await views_in("pending") if v.attempts == 0]) == 10

    await eventually(handed_back)
    assert await views_in("failed") == []  # the wait before the sender ran does not count

    clock.set(T0 + 61.0)  # due again, having waited past the budget while the sender ran
    fresh = await add_callback(store, account, hung.url, now=clock.now())
    sender.wake()
    await eventually(lambda: _has_len(views_in("failed"), 10))
    for view in await views_in("failed"):
        assert view.attempts == 1 and view.last_error == sender_module.NO_ROOM
    assert len(hung.seen) == 1  # none of them was posted
    # /metrics counts them (once their write is back: the rows are read as failed before)
    await eventually(lambda: sender.given_up == 10)
    # one line for a turn's worth, not one per callback (thousands a minute, in that case)
    lines = [
        r for r in caplog.records if r.name == "smsrelay.webhooks" and r.levelname == "WARNING"
    ]
    assert [r.getMessage() for r in lines if r.getMessage() != "webhook.lease.lapsed"] == [
        "webhook.given_up_unposted"
    ]
    fresh_view = await state_of(store, fresh)
    assert fresh_view.state == "pending" and fresh_view.attempts == 0  # handed back, in time


async def test_a_hung_receivers_line_is_brought_forward_once_it_posts_fast_again(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    # Spaced by the post time measured while it hung (its timeouts), a minute's backlog was
    # placed hours ahead and stayed there once the receiver was back (the soak: 75,000
    # callbacks, the last due 4.5 h later).
    hung = await receivers()
    hung.behaviour = hung.hang
    clock = FixedClock(T0)
    first = await add_callback(store, account, hung.url, now=T0)
    sender = await senders(clock=clock, concurrency_per_host=1, timeout=0.3, batch=50)
    await eventually(has_attempts(store, first, 1))  # its timeout is the host's post time
    ids = [await add_callback(store, account, hung.url, now=T0) for _ in range(600)]
    sender.wake()

    async def dues() -> list[float]:
        views = [await state_of(store, webhook_id) for webhook_id in ids]
        return [v.due_at for v in views if v.state == "pending" and v.due_at is not None]

    async def placed_far() -> bool:
        placed = await dues()
        return len(placed) >= 500 and max(placed) > T0 + 120.0

    await eventually(placed_far, timeout=10)
    ahead_before = max(await dues()) - T0
    hung.behaviour = None  # back: it answers at once
    await eventually(lambda: not sender._jobs, timeout=10)  # its hung posts have ended
    for _ in range(20):  # its next posts are fast: its post time falls
        await add_callback(store, account, hung.url, now=T0)
    sender.wake()

    async def brought_forward() -> bool:  # in line at a quarter of the hung post time or less
        return max(await dues(), default=T0) - T0 <= ahead_before / 2

    await eventually(brought_forward, timeout=10)


async def test_a_start_brings_in_a_line_a_stopped_sender_left_for_a_receiver_now_back(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    # A stop while the receiver hung: its line (in the stopped process's memory) was lost,
    # and the callbacks waited up to 15 minutes for a receiver that answered at once (the
    # soak review). Due later than a retry waits after their attempts: brought in at start.
    receiver = await receivers()
    clock = FixedClock(T0)
    placed = await add_callback(store, account, receiver.url, now=T0)
    retried = await add_callback(store, account, receiver.url, now=T0)
    waiting = await add_callback(store, account, receiver.url, now=T0)
    await store.db.write(
        lambda c: c.execute(
            "UPDATE webhooks SET due_at = CASE id WHEN ? THEN ? WHEN ? THEN ? ELSE ? END, "
            "attempts = CASE id WHEN ? THEN 0 ELSE 3 END WHERE id IN (?, ?, ?)",
            (placed, T0 + 700, retried, T0 + 600, T0 + 4, placed, placed, retried, waiting),
        )
    )  # a line's 700 s and 600 s; a fourth try's 4 s (after 3 attempts, up to 5 s)
    await senders(clock=clock, backoff=BackoffPolicy(first=1.0, cap=600.0))
    for webhook_id in (placed, retried):
        await eventually(is_state(store, webhook_id, "delivered"))
    view = await state_of(store, waiting)
    assert (view.state, view.due_at) == ("pending", T0 + 4)


async def test_a_hung_receivers_lapsed_hand_is_one_log_line_not_one_per_callback(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # ~750 webhook.lease.lapsed warnings in one second at each hang, in the soak.
    hung = await receivers()
    hung.behaviour = hung.hang
    for _ in range(20):  # all in hand at the first post time; one slot, posts that hang
        await add_callback(store, account, hung.url)
    sender = await senders(concurrency_per_host=1, timeout=0.2, batch=50)

    def lapsed() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "webhook.lease.lapsed"]

    def counted() -> int:
        return sum(r.__dict__["callbacks"] for r in lapsed()) + sender._lapsed.unsaid

    await eventually(lambda: counted() >= 10, timeout=10)
    assert len(lapsed()) == 1  # they lapse within the same second


async def test_callbacks_an_older_build_placed_hours_ahead_are_due_at_start(
    store: SqliteStore, account: Account, senders: MakeSender
) -> None:
    url = "http://127.0.0.1:9/hook"  # nothing answers: the claim is all this looks at
    far = await add_callback(store, account, url, now=T0, order_key="person")
    retrying = await add_callback(store, account, url, now=T0)
    parked = await add_callback(store, account, url, now=T0, order_key="person")

    def place(conn: Any) -> None:
        conn.execute("UPDATE webhooks SET due_at = ? WHERE id = ?", (T0 + 5 * 3600, far))
        # after 5 attempts a retry waits 16 s, up to 20 with its jitter
        conn.execute(
            "UPDATE webhooks SET due_at = ?, attempts = 5 WHERE id = ?", (T0 + 20, retrying)
        )
        conn.execute("UPDATE webhooks SET due_at = ? WHERE id = ?", (float("inf"), parked))

    await store.db.write(place)
    await senders(clock=FixedClock(T0), backoff=BackoffPolicy(first=1.0, cap=600.0))
    await eventually(has_attempts(store, far, 1))  # due at once: posted (and refused)
    assert (await state_of(store, retrying)).due_at == T0 + 20  # a retry's wait is its own
    assert (await state_of(store, parked)).due_at is None  # still behind the one before it


async def _has_len(views: Awaitable[list[WebhookView]], count: int) -> bool:
    return len(await views) == count


async def test_a_stop_hands_back_what_it_claimed_and_did_not_post(
    store: SqliteStore, account: Account, receivers: MakeReceiver, senders: MakeSender
) -> None:
    # Cancelled, the claims and the callbacks waiting for a slot kept their leases: sent by
    # nobody until those ran out (most of a minute) for another node or a restart.
    stuck = await receivers()
    stuck.behaviour = stuck.hang
    ids = [await add_callback(store, account, stuck.url) for _ in range(5)]
    sender = await senders(concurrency_per_host=1, timeout=5.0)
    await eventually(lambda: len(stuck.seen) == 1)  # one posting, four waiting for the slot
    await sender.stop(grace=0.1)
    views = [await state_of(store, webhook_id) for webhook_id in ids]
    assert sorted(v.state for v in views) == ["pending"] * 4 + ["sending"]  # the post in flight
    assert all(v.attempts == 0 for v in views)


async def test_a_bug_in_starting_one_post_does_not_end_the_claim_loop(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A post refused before any await takes no time on uvloop's clock, and the hand limit
    # divided by it: the ZeroDivisionError ended the claim loop, and no callback was posted
    # again until a restart (seen after `webhooks retry` of an unsafe address).
    fine = await receivers()
    parse = sender_module.Target.parse

    def broken_for_one(url: str) -> sender_module.Target:
        if url.endswith("/broken"):
            raise ZeroDivisionError("float division by zero")
        return parse(url)

    monkeypatch.setattr(sender_module.Target, "parse", staticmethod(broken_for_one))
    await add_callback(store, account, fine.url.replace("/hook", "/broken"))
    await senders()
    later = await add_callback(store, account, fine.url)
    await eventually(is_state(store, later, "delivered"))


def unstarted_sender() -> WebhookSender:
    """A sender whose bookkeeping is tested alone: no store, never started."""
    return WebhookSender(
        None,  # type: ignore[arg-type]
        FixedClock(T0),
        timeout=1.0,
        backoff=BackoffPolicy(first=1.0, cap=1.0),
        give_up_after=60.0,
        concurrency_per_host=4,
        allow_private=True,
    )


def test_a_host_whose_posts_take_no_time_has_a_hand_limit() -> None:
    sender = unstarted_sender()
    sender._post_time["h"] = sender_module.MIN_POST_TIME
    assert sender._hand_limit("h") > 0 and sender._place_in_line("h", 1) > T0


def test_a_post_that_spanned_a_pause_of_the_process_counts_as_at_most_the_timeout() -> None:
    # a 2-minute SIGSTOP measured as one post's time spread a healthy receiver's callbacks
    # handed back over 41 minutes (the operations review)
    sender = unstarted_sender()
    sender._note_post_time("h", 0.1)
    sender._note_post_time("h", 120.0)  # the timeout is 1 s: no post takes longer unpaused
    assert sender._post_time["h"] == 0.1
    sender._note_post_time("h", 1.0)  # a post that ran to its timeout counts, as it took
    assert sender._post_time["h"] > 0.1


class _Rescheduled:
    """The one store call a line brought in makes."""

    def __init__(self) -> None:
        self.items: list[tuple[int, float]] = []
        self.refusals = 1  # a database briefly locked: tried again, not left hours ahead

    async def reschedule_webhooks(self, items: list[tuple[int, float]]) -> int:
        if self.refusals:
            self.refusals -= 1
            raise TransientError("database is locked")
        self.items += items
        return len(items)


async def test_a_receiver_back_from_a_hang_is_judged_by_its_fast_posts_at_once() -> None:
    # Averaged down from its timeouts, its post time took dozens of posts to fall, and its
    # line, brought in at that pace and handed back at it again, drained at 12 callbacks/s.
    sender = unstarted_sender()
    store = _Rescheduled()
    sender._store = store  # type: ignore[assignment]
    for _ in range(5):
        sender._note_post_time("h", 1.0)  # its timeouts
    for webhook_id in range(1, 101):  # handed back meanwhile, a post time over 4 slots apart
        sender._place_in_line("h", webhook_id)
    sender._note_post_time("h", 0.01)  # back
    assert sender._post_time["h"] == 0.01
    await eventually(lambda: len(store.items) == 100)
    assert max(due for _, due in store.items) <= T0 + 100 * 0.01 / 4 + 1e-6  # at the new pace
    sender._note_post_time("h", 0.5)  # slower again: averaged, not taken at once
    assert 0.01 < sender._post_time["h"] < 0.5
    sender._note_post_time("k", 1.0)
    sender._note_post_time("k", 0.01)  # a fast post of a receiver with no line: averaged
    assert sender._post_time["k"] > 0.01


def test_many_backlogged_receivers_do_not_make_each_hand_back_walk_them_all() -> None:
    # Past MAX_LINES hosts with a line still ahead, every hand-back rebuilt the whole map.
    sender = unstarted_sender()
    rebuilt = 0
    hosts = 3 * sender_module.MAX_LINES
    for n in range(hosts):
        before = sender._line_ends
        sender._place_in_line(f"h{n}:80", n)
        rebuilt += sender._line_ends is not before
    assert len(sender._line_ends) == hosts  # every line is still ahead: none forgotten
    assert rebuilt <= 3  # at 1,000, then 2,000 (twice what was left), not at each one past
    assert len(sender._lines) == hosts  # each line's callbacks, to bring in when it recovers


async def test_a_sweep_waits_for_a_claims_callbacks_to_be_in_hand(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A 2-minute SIGSTOP between a claim's write and its callbacks' spawning: their lease
    # had run out, the sweep released one, the next claim took it, and it was posted twice
    # (same X-Smsrelay-Id; the re-test of the operations review)
    monkeypatch.setattr(sender_module, "SWEEP_EVERY", 0.02)
    receiver = await receivers()
    clock = FixedClock(T0)
    webhook_id = await add_callback(store, account, receiver.url, now=T0)
    claim = store.claim_due_webhooks
    swept_meanwhile = asyncio.Event()

    async def paused_after_the_write(now: float, limit: int, lease: float) -> object:
        jobs = await claim(now, limit, lease)
        if jobs:
            clock.set(T0 + 3600)  # the process was stopped past the lease
            sweeps = sender.sweeps
            with contextlib.suppress(TimeoutError):  # a sweep now would release them
                async with asyncio.timeout(0.3):
                    await eventually(lambda: sender.sweeps > sweeps, timeout=1.0)
                    swept_meanwhile.set()
        return jobs

    monkeypatch.setattr(store, "claim_due_webhooks", paused_after_the_write)
    sender = await senders(clock=clock)
    await eventually(is_state(store, webhook_id, "delivered"))
    await eventually(lambda: sender.sweeps >= 3)  # the sweeps go on once it is in hand
    assert not swept_meanwhile.is_set()
    assert len(receiver.seen) == 1


class _ClaimAnsweredLate:
    """The store, but its next non-empty claim is answered ``delay`` seconds after it was
    committed (a database stall between the COMMIT and its answer)."""

    def __init__(self, store: SqliteStore, delay: float) -> None:
        self._store = store
        self.delay = delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_due_webhooks(self, *args: Any) -> Any:
        jobs = await self._store.claim_due_webhooks(*args)
        if jobs and self.delay:
            await asyncio.sleep(self.delay)
            self.delay = 0.0
        return jobs


async def test_a_claim_answered_after_its_lease_ran_out_is_not_posted_by_the_late_claimer(
    store: SqliteStore,
    account: Account,
    receivers: MakeReceiver,
    senders: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After a database stall the claim's answer came after its lease had run out; another
    # node had released and posted the callback meanwhile, and the late one posted it too.
    monkeypatch.setattr(sender_module, "LEASE_MARGIN", 0.5)  # a lease of 1.3 s
    monkeypatch.setattr(sender_module, "SWEEP_EVERY", 0.1)
    receiver = await receivers()
    await add_callback(store, account, receiver.url)
    late_store = _ClaimAnsweredLate(store, delay=1.6)
    late = await senders(timeout=0.2, on=late_store)
    await eventually(lambda: late_store.delay == 1.6 and late._claim_settled.is_set() is False)
    await senders(timeout=0.2)  # another node: its sweep releases the lapsed lease
    await eventually(lambda: len(receiver.seen) == 1, timeout=10)
    await eventually(lambda: late_store.delay == 0.0 and not late._jobs, timeout=10)
    assert len(receiver.seen) == 1
