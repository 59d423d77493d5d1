"""A callback attempt recorded, grouped (see ``grouped``): the set-based form of
``webhook_ops.record_attempt`` for the common run, callbacks delivered or given up."""

from __future__ import annotations

from collections.abc import Sequence

from smsrelay.store import webhook_ops
from smsrelay.store.grouped import (
    CHUNK,
    Answers,
    flat,
    insert_rows,
    marks,
    padded,
    runs_of,
    values,
)
from smsrelay.store.records import WebhookAttempt
from smsrelay.store.sql import Conn

_HISTORY_COLUMNS = (
    ("webhook_id", "BIGINT"),
    ("at", "DOUBLE PRECISION"),
    ("status", "BIGINT"),
    ("latency_ms", "DOUBLE PRECISION"),
    ("error", ""),
)


def record_attempts(conn: Conn, items: Sequence[WebhookAttempt]) -> Answers:
    """Each attempt in the history, each callback's new state, and the next callback of each
    order key that one finished lets go."""
    if _in_turn(conn, items):
        for item in items:
            _record_one(conn, item)
        return [None] * len(items)
    for start in range(0, len(items), CHUNK):
        _record_finished(conn, items[start : start + CHUNK])
    return [None] * len(items)


# a sender's loop turn of attempts, written as one
record_attempt_runs = runs_of(record_attempts)


def _in_turn(conn: Conn, items: Sequence[WebhookAttempt]) -> bool:
    """Whether the run must go one attempt at a time: a retry parks behind an earlier open
    callback, one callback twice, or one that is parked (its lease was released while it was
    being posted): whether an earlier attempt of the run unparks it depends on the order."""
    ids = sorted({item.webhook_id for item in items})
    if len(items) == 1 or len(ids) < len(items) or any(i.outcome == "pending" for i in items):
        return True
    keys = padded(ids)
    parked = conn.execute(
        f"SELECT 1 FROM webhooks WHERE id IN ({marks(len(keys))}) AND due_at = ? LIMIT 1",
        (*keys, webhook_ops.PARKED),
    ).fetchone()
    return parked is not None


def _record_one(conn: Conn, item: WebhookAttempt) -> None:
    webhook_ops.record_attempt(
        conn,
        item.webhook_id,
        item.at,
        item.status,
        item.latency_ms,
        item.error,
        item.outcome,
        item.next_due,
    )


def _record_finished(conn: Conn, items: Sequence[WebhookAttempt]) -> None:
    history = [(i.webhook_id, i.at, i.status, i.latency_ms, i.error) for i in items]
    insert_rows(conn, "webhook_attempts", _HISTORY_COLUMNS, history)
    changes = padded(  # each callback once (see _in_turn)
        [
            (
                i.webhook_id,
                i.outcome,
                i.next_due,
                i.at if i.outcome == "delivered" else None,
                i.error,
            )
            for i in items
        ]
    )
    table = values(len(changes), ("BIGINT", "", "DOUBLE PRECISION", "DOUBLE PRECISION", ""))
    keys = conn.execute(
        "UPDATE webhooks SET state = v.column2, attempts = attempts + 1, lease_until = NULL, "
        "due_at = COALESCE(v.column3, due_at), delivered_at = v.column4, last_error = v.column5 "
        f"FROM {table} AS v WHERE webhooks.id = v.column1 "
        "RETURNING webhooks.order_key, webhooks.kind",
        flat(changes),
    ).fetchall()
    followed = {str(key) for key, kind in keys if key is not None and kind != webhook_ops.ALONE}
    _unpark_next(conn, sorted(followed))


def _unpark_next(conn: Conn, keys: Sequence[str]) -> None:
    """The first open callback of each key has nothing ahead of it now: due at once (as
    ``webhook_ops._unpark_next``, for a whole run)."""
    if not keys:
        return
    keyed = padded(keys)
    conn.execute(
        "UPDATE webhooks SET due_at = created_at WHERE state = 'pending' AND due_at = ? "
        "AND id IN (SELECT (SELECT n.id FROM webhooks n WHERE n.order_key = k.column1 "
        f"AND n.{webhook_ops.OPEN} ORDER BY n.id LIMIT 1) FROM {values(len(keyed), ('',))} AS k)",
        (webhook_ops.PARKED, *keyed),
    )
