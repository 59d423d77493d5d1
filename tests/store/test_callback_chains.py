"""Callbacks that share an order key: the ones behind a failing callback wait for it, off the
claim's path, and go out in order the moment it is delivered, given up or retried by hand."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrelay.store import schema, webhook_ops
from smsrelay.store.factory import store_for
from smsrelay.store.message_ops import insert_callback
from smsrelay.store.sql_store import SqlStore

KEY = "c+33612345678>+33757000001"  # one person's replies to one number
URL = "https://example.com/mo"
BACKOFF_UNTIL = 600.0  # the failing callback's next attempt


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    s = store_for(store_url)
    await s.open()
    await s.create_account("a", "hash-a", 0, 0.0)
    yield s
    await s.close()


_uuids = itertools.count()


async def add(store: SqlStore, at: float, key: str = KEY) -> int:
    return await store.db.write(
        partial(
            insert_callback,
            uuid=f"cb-{next(_uuids)}",
            account_id=1,
            kind="reply",
            url=URL,
            body=b"{}",
            now=at,
            order_key=key,
        )
    )


async def claim(store: SqlStore, at: float) -> list[int]:
    return [job.id for job in await store.claim_due_webhooks(at, 10, at + 60.0)]


async def retry_later(store: SqlStore, webhook_id: int, at: float, due: float) -> None:
    await store.record_webhook_attempt(webhook_id, at, None, 1.0, "refused", "pending", due)


async def give_up(store: SqlStore, webhook_id: int, at: float) -> None:
    await store.record_webhook_attempt(webhook_id, at, None, 1.0, "refused", "failed", None)


async def deliver(store: SqlStore, webhook_id: int, at: float) -> None:
    await store.record_webhook_attempt(webhook_id, at, 200, 1.0, None, "delivered", None)


async def waiting(store: SqlStore, webhook_id: int) -> bool:
    """Not due at any time: it waits for an earlier callback of its key."""
    view = await store.get_webhook(webhook_id)
    assert view is not None and view.state == "pending"
    return view.due_at is None


async def a_head_in_backoff(store: SqlStore, followers: int) -> tuple[int, list[int]]:
    head = await add(store, 10.0)
    behind = [await add(store, 11.0 + i) for i in range(followers)]
    assert await claim(store, 20.0) == [head]
    await retry_later(store, head, 21.0, BACKOFF_UNTIL)
    return head, behind


async def test_callbacks_behind_a_failing_one_wait_for_it_then_go_in_order(
    store: SqlStore,
) -> None:
    head, behind = await a_head_in_backoff(store, 3)
    for webhook_id in behind:
        assert await waiting(store, webhook_id)  # not due before the head's next attempt
    assert await claim(store, BACKOFF_UNTIL - 1) == []
    assert await claim(store, BACKOFF_UNTIL) == [head]
    await retry_later(store, head, BACKOFF_UNTIL + 1, 2 * BACKOFF_UNTIL)  # fails again
    assert [await waiting(store, webhook_id) for webhook_id in behind] == [True] * 3
    assert await claim(store, 2 * BACKOFF_UNTIL) == [head]
    await deliver(store, head, 2 * BACKOFF_UNTIL + 1)
    for webhook_id in behind:  # each one the moment the one before it is delivered
        assert await claim(store, 2 * BACKOFF_UNTIL + 1) == [webhook_id]
        await deliver(store, webhook_id, 2 * BACKOFF_UNTIL + 1)


async def test_a_callback_given_up_lets_the_next_one_go_at_once(store: SqlStore) -> None:
    head, (first, second) = await a_head_in_backoff(store, 2)
    assert await waiting(store, first) and await waiting(store, second)
    assert await claim(store, BACKOFF_UNTIL) == [head]
    await give_up(store, head, BACKOFF_UNTIL + 1)
    assert await claim(store, BACKOFF_UNTIL + 1) == [first]  # not at some later backoff time
    assert await waiting(store, second)
    await deliver(store, first, BACKOFF_UNTIL + 2)
    assert await claim(store, BACKOFF_UNTIL + 2) == [second]


async def test_a_callback_stored_behind_one_in_backoff_is_not_due_before_it(
    store: SqlStore,
) -> None:
    head, _ = await a_head_in_backoff(store, 0)
    late = await add(store, 30.0)  # the person writes again while the receiver is down
    other = await add(store, 30.0, key="c+33699999999>+33757000001")
    assert await waiting(store, late) and not await waiting(store, other)
    assert await claim(store, 30.0) == [other]
    assert await claim(store, BACKOFF_UNTIL) == [head]
    await deliver(store, head, BACKOFF_UNTIL + 1)
    assert await claim(store, BACKOFF_UNTIL + 1) == [late]


@pytest.mark.parametrize("retry_all", [False, True], ids=["retry-id", "retry-all"])
async def test_retrying_a_given_up_callback_brings_the_later_ones_of_its_key_along_in_order(
    store: SqlStore, retry_all: bool
) -> None:
    head = await add(store, 10.0)
    first, second = await add(store, 11.0), await add(store, 12.0)
    assert await claim(store, 20.0) == [head]
    await give_up(store, head, 21.0)  # the receiver's URL was wrong, say
    assert await claim(store, 21.0) == [first]
    await retry_later(store, first, 22.0, BACKOFF_UNTIL)  # first now in its own backoff
    # the receiver is fixed: the operator re-queues the given-up one
    assert await store.retry_webhooks(None if retry_all else head, 100.0) == 1
    assert await waiting(store, first) and await waiting(store, second)
    assert await claim(store, 100.0) == [head]  # first things first
    await deliver(store, head, 101.0)
    assert await claim(store, 101.0) == [first]  # at once, not at its old backoff time
    await deliver(store, first, 102.0)
    assert await claim(store, 102.0) == [second]


async def test_retrying_every_failed_callback_goes_in_steps_and_takes_none_twice(
    store: SqlStore,
) -> None:
    # `webhooks retry --all` was one transaction: 500,000 failed callbacks held serve's every
    # write for 12 s. Steps of a few, each after the last id looked at.
    ids = []
    for n in range(5):
        ids.append(await add(store, 10.0 + n, key=f"k{n}"))
    assert sorted(await claim(store, 20.0)) == sorted(ids)
    for webhook_id in ids:
        await give_up(store, webhook_id, 21.0)
    assert await store.retry_failed_webhooks(100.0, 0, 2) == (2, ids[1])
    await give_up(store, ids[0], 101.0)  # failed again at once (an unsafe address, say)
    assert await store.retry_failed_webhooks(101.0, ids[1], 2) == (2, ids[3])
    assert await store.retry_failed_webhooks(102.0, ids[3], 2) == (1, ids[4])
    assert await store.retry_failed_webhooks(103.0, ids[4], 2) == (0, ids[4])
    assert all([await waiting(store, i) is False for i in ids[1:]])


async def test_a_released_callback_behind_a_retried_earlier_one_waits_for_it(
    store: SqlStore,
) -> None:
    head, first = await add(store, 10.0), await add(store, 11.0)
    assert await claim(store, 20.0) == [head]
    await give_up(store, head, 21.0)
    assert await claim(store, 22.0) == [first]  # being posted when the operator retries
    assert await store.retry_webhooks(head, 23.0) == 1
    assert await store.release_expired_webhook_leases(1_000.0) == 1  # its sender died
    assert await waiting(store, first)
    assert await claim(store, 1_000.0) == [head]
    await deliver(store, head, 1_001.0)
    assert await claim(store, 1_001.0) == [first]


# -- any sequence of events ------------------------------------------------------------------------

KEYS = ("k1", "k2", None)
EVENTS = (
    "store",
    "claim",
    "deliver",
    "retry_later",
    "give_up",
    "lease_lapses",
    "retry_one",
    "retry_all",
)


def _open_rows(conn: sqlite3.Connection) -> list[tuple[int, str | None, str, float]]:
    return conn.execute(
        "SELECT id, order_key, state, due_at FROM webhooks "
        "WHERE state IN ('pending', 'sending') ORDER BY id"
    ).fetchall()


def _check_parked_exactly_behind_open_ones(conn: sqlite3.Connection) -> None:
    """A pending callback waits (is parked) if and only if an earlier one of its key is open:
    the claim never walks a blocked one, and no callback waits with nothing ahead of it."""
    seen: set[str] = set()
    for _, key, state, due_at in _open_rows(conn):
        if state == "pending":
            assert (due_at == webhook_ops.PARKED) == (key is not None and key in seen)
        if key is not None:
            seen.add(key)


def _apply(conn: sqlite3.Connection, event: str, pick: int, now: float) -> None:
    sending = [r[0] for r in _open_rows(conn) if r[2] == "sending"]
    queued = [r[0] for r in conn.execute("SELECT id FROM webhooks WHERE state != 'delivered'")]
    if event == "store":
        insert_callback(conn, f"u{now}", 1, "reply", URL, b"{}", now, order_key=KEYS[pick % 3])
    elif event == "claim":
        for job in webhook_ops.claim_due(conn, now, 1 + pick, now + 30.0):
            key = conn.execute("SELECT order_key FROM webhooks WHERE id = ?", (job.id,)).fetchone()
            earlier = conn.execute(
                "SELECT COUNT(*) FROM webhooks WHERE order_key = ? AND id < ? "
                "AND state IN ('pending', 'sending')",
                (key[0], job.id),
            ).fetchone()
            assert earlier == (0,), "claimed ahead of an earlier callback of its key"
    elif event in ("deliver", "retry_later", "give_up") and sending:
        webhook_id = sending[pick % len(sending)]
        outcome = {"deliver": "delivered", "retry_later": "pending", "give_up": "failed"}[event]
        due = now + 1 + 10 * pick if event == "retry_later" else None
        webhook_ops.record_attempt(conn, webhook_id, now, None, 1.0, None, outcome, due)
    elif event == "lease_lapses":
        webhook_ops.release_expired_leases(conn, float("inf"))
    elif event == "retry_one" and queued:
        webhook_ops.retry(conn, queued[pick % len(queued)], now)
    elif event == "retry_all":
        webhook_ops.retry(conn, None, now)


def _drain(conn: sqlite3.Connection, now: float) -> list[tuple[str | None, int]]:
    """The receiver is up for good: everything still to go is delivered, returns the order."""
    delivered: list[tuple[str | None, int]] = []
    for _ in range(100):
        webhook_ops.release_expired_leases(conn, float("inf"))
        jobs = webhook_ops.claim_due(conn, now, 1_000, now + 30.0)
        for job in jobs:
            webhook_ops.record_attempt(conn, job.id, now, 200, 1.0, None, "delivered", None)
            key = conn.execute("SELECT order_key FROM webhooks WHERE id = ?", (job.id,))
            delivered.append((key.fetchone()[0], job.id))
        now += 1.0
    assert _open_rows(conn) == [], "a callback was left waiting with nothing ahead of it"
    return delivered


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(EVENTS), st.integers(min_value=0, max_value=5)), max_size=40
    )
)
def test_any_sequence_of_events_keeps_the_order_and_leaves_nothing_waiting(
    events: list[tuple[str, int]],
) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.upgrade(conn)
    now = 0.0
    for event, pick in events:
        now += 1.0
        _apply(conn, event, pick, now)
        _check_parked_exactly_behind_open_ones(conn)
    delivered = _drain(conn, now + 10_000.0)
    for key in ("k1", "k2"):
        ids = [webhook_id for k, webhook_id in delivered if k == key]
        assert ids == sorted(ids)
