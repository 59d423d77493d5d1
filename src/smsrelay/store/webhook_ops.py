"""The callback outbox: claim due callbacks, record each attempt, list and retry failures.

Callbacks that share an order key go out in id order: the claim skips a row while an earlier
one of its key is pending or sending. A row behind such an earlier one is also *parked*: its
``due_at`` is ``PARKED``, so the claim's walk over due rows never meets it (a receiver down for
hours would otherwise leave every claim walking all the callbacks queued behind its failing
ones, on the event loop's thread). Each path keeps this exact, so no row is left parked once
nothing is ahead of it: a row is stored parked behind an open one; the first open row of a key
is unparked (due at once) when the row ahead of it is delivered or given up; a row going back to
pending behind an earlier open one (a lease released, a retry planned) is parked; a manual
retry re-parks the rows behind the one it queues.

A DLR callback is alone in its order key (its message's, ``m<id>``): a message ends once, so
no other callback ever shares the key. Nothing can be ahead of it or behind it, so it is stored
due, and neither the claim nor a finished attempt probes its key (``ALONE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from smsrelay.store.grouped import flat, marks, padded, padded_chunks, values
from smsrelay.store.records import CallbackBacklog, WebhookJob, WebhookView
from smsrelay.store.sql import Conn

PARKED = float("inf")  # due_at of a callback waiting behind an earlier one of its key
ALONE = "dlr"  # the kind of callback that is the only one of its order key (see above)


def message_key(message_id: int) -> str:
    """The order key of a message's callbacks (its DLR's: see ``ALONE``)."""
    return f"m{message_id}"


OPEN = "state IN ('pending', 'sending')"  # the webhooks_in_order index's condition: use it
# SQL: a callback's attempts in its current round, which its backoff counts (a manual retry
# starts a round; ``attempts`` counts every post)
ROUND_ATTEMPTS = "attempts - attempts_before_round"
# SQL: what a manual retry sets: a new round, its budget counted from ``now`` (the parameter)
NEW_ROUND = "state = 'pending', due_at = ?, created_at = ?, attempts_before_round = attempts"


def _one_ahead(row: str) -> str:
    """SQL: an earlier callback of ``row``'s order key still to go (``row``: the outer alias).
    The one rule behind the claim's order and the parking."""
    return (
        f"EXISTS (SELECT 1 FROM webhooks o WHERE o.order_key = {row}.order_key "
        f"AND o.id < {row}.id AND o.{OPEN})"
    )


def due_unless_behind(key: str, due: str) -> str:
    """SQL for a new row's ``due_at``: ``due``, or parked (the parameter before it, PARKED)
    while an open callback of its order ``key`` is ahead of it. Both are SQL expressions."""
    return (
        f"CASE WHEN EXISTS (SELECT 1 FROM webhooks o WHERE o.order_key = {key} AND o.{OPEN}) "
        f"THEN ? ELSE {due} END"
    )


VIEW_COLUMNS = (
    "id, uuid, kind, url, state, attempts, created_at, due_at, delivered_at, last_error, "
    "message_id, reply_id"
)


def claim_due(conn: Conn, now: float, limit: int, lease_until: float) -> list[WebhookJob]:
    rows = conn.execute(
        "UPDATE webhooks SET state = 'sending', lease_until = ? WHERE id IN ("
        "SELECT w.id FROM webhooks w WHERE w.state = 'pending' AND w.due_at <= ? "
        # not while an earlier callback with the same key is still to go: order per key
        f"AND (w.order_key IS NULL OR w.kind = '{ALONE}' OR NOT {_one_ahead('w')}) "
        "ORDER BY w.due_at, w.id LIMIT ?) "
        "RETURNING id, uuid, account_id, kind, url, body, attempts, created_at, "
        f"{ROUND_ATTEMPTS}",
        (lease_until, now, limit),
    ).fetchall()
    secrets = _secrets(conn, {int(r[2]) for r in rows})
    jobs = [
        WebhookJob(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], secrets.get(r[2]), r[8])
        for r in rows
    ]
    return sorted(jobs, key=lambda job: job.id)


def _secrets(conn: Conn, account_ids: set[int]) -> dict[int, str | None]:
    if not account_ids:
        return {}
    keys = padded(sorted(account_ids))
    rows = conn.execute(
        f"SELECT id, webhook_secret FROM accounts WHERE id IN ({marks(len(keys))})", keys
    ).fetchall()
    return {int(r[0]): r[1] for r in rows}


def defer(conn: Conn, items: list[tuple[int, float, float]]) -> int:
    """Claimed callbacks (id, due at, the claim's lease_until) handed back unposted: pending
    again, each due at its time, no attempt counted; how many. Only while the claim is still
    the one that lease names: a lease run out may have let another node claim the row, and
    handing it back then would post it a third time. Nothing of their order key was open
    when they were claimed, so none is parked."""
    deferred = 0
    for chunk in padded_chunks(sorted(items)):  # keyed by id: a repeated row changes nothing
        table = values(len(chunk), ("BIGINT", "DOUBLE PRECISION", "DOUBLE PRECISION"))
        deferred += conn.execute(
            "UPDATE webhooks SET state = 'pending', lease_until = NULL, due_at = v.column2 "
            f"FROM {table} AS v WHERE webhooks.id = v.column1 AND webhooks.state = 'sending' "
            "AND webhooks.lease_until = v.column3",
            flat(chunk),
        ).rowcount
    return deferred


def release_expired_leases(conn: Conn, now: float, keep: tuple[int, ...] = ()) -> int:
    """Callbacks whose claimer died go back to pending; ``keep``: those still being posted
    by this process (its lease may look expired after a wall-clock step)."""
    kept = f" AND id NOT IN ({','.join('?' * len(keep))})" if keep else ""  # () is SQLite's only
    released = conn.execute(
        "UPDATE webhooks SET state = 'pending', lease_until = NULL "
        f"WHERE state = 'sending' AND lease_until < ?{kept} RETURNING id",
        (now, *keep),
    ).fetchall()
    for (webhook_id,) in released:
        _park_if_behind(conn, webhook_id)
    return len(released)


def reschedule(conn: Conn, items: list[tuple[int, float]]) -> int:
    """Pending callbacks (id, due at) due earlier than they were; how many. One claimed,
    delivered or parked meanwhile is left as it is."""
    moved = 0
    for chunk in padded_chunks(sorted(items)):  # keyed by id: a repeated row changes nothing
        table = values(len(chunk), ("BIGINT", "DOUBLE PRECISION"))
        moved += conn.execute(
            f"UPDATE webhooks SET due_at = v.column2 FROM {table} AS v "
            "WHERE webhooks.id = v.column1 AND webhooks.state = 'pending' "
            "AND webhooks.due_at > v.column2 AND webhooks.due_at < ?",
            (*flat(chunk), PARKED),
        ).rowcount
    return moved


def bring_forward(conn: Conn, waits: Sequence[float], now: float) -> int:
    """Pending callbacks due later than a retry may wait after their round's attempts so far
    are due ``now``; how many. ``waits[n]``: the longest wait after ``n`` attempts (the last
    for any more). Only a receiver's line puts one later (a hung receiver's backlog handed back,
    spaced by its timeouts), and a line lives in the memory of the process that made it:
    after a restart its callbacks waited up to 15 minutes for a receiver long back (the
    soak review). The sender runs this once, at start. Parked ones stay parked."""
    moved = 0
    last = len(waits) - 1
    for attempts, wait in enumerate(waits):
        which = f"{ROUND_ATTEMPTS} {'>=' if attempts == last else '='} ?"
        moved += conn.execute(
            f"UPDATE webhooks SET due_at = ? WHERE state = 'pending' AND {which} "
            "AND due_at > ? AND due_at < ?",
            (now, attempts, now + wait, PARKED),
        ).rowcount
    return moved


def unpark_stranded(conn: Conn) -> int:
    """Parked callbacks with nothing open ahead of them any more are due at once; how many.

    This build never leaves one, but an older build on the same database does: one still
    serving when a newer command upgraded the database (migration 6 parks), or run on it
    after, delivers the callbacks ahead without unparking the next, which would then wait
    for ever. The sender runs this once, at start; it reads the parked callbacks only."""
    return conn.execute(
        "UPDATE webhooks SET due_at = created_at WHERE state = 'pending' AND due_at = ? "
        f"AND NOT {_one_ahead('webhooks')}",
        (PARKED,),
    ).rowcount


def record_attempt(
    conn: Conn,
    webhook_id: int,
    at: float,
    status: int | None,
    latency_ms: float | None,
    error: str | None,
    outcome: str,
    next_due: float | None,
) -> None:
    """outcome: 'delivered', 'pending' (retry at next_due) or 'failed' (gave up)."""
    conn.execute(
        "INSERT INTO webhook_attempts (webhook_id, at, status, latency_ms, error) "
        "VALUES (?, ?, ?, ?, ?)",
        (webhook_id, at, status, latency_ms, error),
    )
    conn.execute(
        "UPDATE webhooks SET state = ?, attempts = attempts + 1, lease_until = NULL, "
        "due_at = COALESCE(?, due_at), delivered_at = ?, last_error = ? WHERE id = ?",
        (outcome, next_due, at if outcome == "delivered" else None, error, webhook_id),
    )
    if outcome == "pending":
        _park_if_behind(conn, webhook_id)
    else:  # it no longer holds its key back: the next one may go
        _unpark_next(conn, webhook_id)


def list_webhooks(conn: Conn, state: str | None, limit: int) -> list[WebhookView]:
    where, params = ("WHERE state = ?", (state,)) if state else ("", ())
    rows = conn.execute(
        f"SELECT {VIEW_COLUMNS} FROM webhooks {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_view(conn, r) for r in rows]


def get_webhook(conn: Conn, webhook_id: int) -> WebhookView | None:
    row = conn.execute(
        f"SELECT {VIEW_COLUMNS} FROM webhooks WHERE id = ?", (webhook_id,)
    ).fetchone()
    return None if row is None else _view(conn, row)


def _view(conn: Conn, row: tuple[Any, ...]) -> WebhookView:
    history = conn.execute(
        "SELECT at, status, latency_ms, error FROM webhook_attempts WHERE webhook_id = ? "
        "ORDER BY id",
        (row[0],),
    ).fetchall()
    fields = list(row)
    if fields[7] == PARKED:
        fields[7] = None  # no due time of its own: it waits for an earlier one of its key
    return WebhookView(*fields, history=tuple(tuple(h) for h in history))  # type: ignore[misc]


def retry(conn: Conn, webhook_id: int | None, now: float) -> int:
    """Put failed callbacks (one, or all when webhook_id is None) back in the queue for a
    fresh round: a new retry budget (it counts from ``created_at``) and a backoff that starts
    over (it counts the round's attempts); ``attempts`` and the history keep every post."""
    if webhook_id is None:
        queued = conn.execute(
            f"UPDATE webhooks SET {NEW_ROUND} WHERE state = 'failed' RETURNING order_key",
            (now, now),
        ).fetchall()
    else:
        queued = conn.execute(
            f"UPDATE webhooks SET {NEW_ROUND} "
            "WHERE id = ? AND state IN ('failed', 'pending') RETURNING order_key",
            (now, now, webhook_id),
        ).fetchall()
    for key in {r[0] for r in queued if r[0] is not None}:
        _settle(conn, key)
    return len(queued)


def retry_failed_step(conn: Conn, now: float, after_id: int, limit: int) -> tuple[int, int]:
    """One step of retrying every failed callback: the first ``limit`` after ``after_id``,
    as ``retry`` puts them back; how many, and the last id looked at (a callback that fails
    again at once, an unsafe address, is not taken twice)."""
    rows = conn.execute(
        f"UPDATE webhooks SET {NEW_ROUND} "
        "WHERE id IN (SELECT id FROM webhooks WHERE state = 'failed' AND id > ? "
        "ORDER BY id LIMIT ?) RETURNING id, order_key",
        (now, now, after_id, limit),
    ).fetchall()
    for key in {r[1] for r in rows if r[1] is not None}:
        _settle(conn, key)
    return len(rows), max((int(r[0]) for r in rows), default=after_id)


def _park_if_behind(conn: Conn, webhook_id: int) -> None:
    """A pending row with an earlier open one of its key waits for it, off the due index."""
    conn.execute(
        "UPDATE webhooks SET due_at = ? WHERE id = ? AND state = 'pending' "
        f"AND {_one_ahead('webhooks')}",
        (PARKED, webhook_id),
    )


def _unpark_next(conn: Conn, webhook_id: int) -> None:
    """The row is done: the first open one of its key has nothing ahead of it now, so it is
    due at once (since it was stored: it has waited longest, and no clock step can make it
    later). One statement, the key looked up inside it: this runs for every callback."""
    conn.execute(
        "UPDATE webhooks SET due_at = created_at WHERE id = ("
        "SELECT n.id FROM webhooks n WHERE n.order_key = ("
        f"SELECT order_key FROM webhooks WHERE id = ?) AND n.{OPEN} ORDER BY n.id LIMIT 1"
        ") AND state = 'pending' AND due_at = ?",
        (webhook_id, PARKED),
    )


def _settle(conn: Conn, key: str) -> None:
    """After a manual retry every pending row of the key but the first open one waits for
    it: the retried one goes first (or after an earlier one still open), then the others
    follow at once, a later one's own backoff included (the receiver is presumably back).
    The first open row is never parked, so it needs nothing."""
    conn.execute(
        f"UPDATE webhooks SET due_at = ? WHERE order_key = ? AND {OPEN} "
        "AND state = 'pending' AND due_at < ? AND id > ("
        f"SELECT id FROM webhooks WHERE order_key = ? AND {OPEN} ORDER BY id LIMIT 1)",
        (PARKED, key, PARKED, key),
    )


def pending_count(conn: Conn) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM webhooks WHERE state IN ('pending', 'sending')"
    ).fetchone()
    return int(row[0])


def backlog(conn: Conn, late_before: float | None) -> CallbackBacklog:
    """Callbacks still to post: since when the oldest has been due, how many since before
    ``late_before`` (None: not asked), and how many were given up.

    A callback is due from when it is stored (or put back by `webhooks retry`): its
    ``created_at``, not its ``due_at``, which each failed attempt moves to the next try (a
    receiver that is down would never look late). Scans the callbacks still to post."""
    oldest, late = conn.execute(
        "SELECT MIN(created_at), COUNT(CASE WHEN created_at < ? THEN 1 END) FROM webhooks "
        "WHERE state IN ('pending', 'sending')",
        (late_before,),
    ).fetchone()
    failed = conn.execute("SELECT COUNT(*) FROM webhooks WHERE state = 'failed'").fetchone()[0]
    return CallbackBacklog(None if oldest is None else float(oldest), int(late), int(failed))
