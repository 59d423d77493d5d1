"""The callback outbox: claim due callbacks, record each attempt, list and retry failures."""

from __future__ import annotations

import sqlite3
from typing import Any

from smsrelay.store.records import CallbackBacklog, WebhookJob, WebhookView

VIEW_COLUMNS = (
    "id, uuid, kind, url, state, attempts, created_at, due_at, delivered_at, last_error, "
    "message_id, reply_id"
)


def claim_due(
    conn: sqlite3.Connection, now: float, limit: int, lease_until: float
) -> list[WebhookJob]:
    rows = conn.execute(
        "UPDATE webhooks SET state = 'sending', lease_until = ? WHERE id IN ("
        "SELECT w.id FROM webhooks w WHERE w.state = 'pending' AND w.due_at <= ? "
        # not while an earlier callback with the same key is still to go: order per key
        "AND (w.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM webhooks o "
        "WHERE o.order_key = w.order_key AND o.id < w.id AND o.state IN ('pending', 'sending')))"
        " ORDER BY w.due_at, w.id LIMIT ?) "
        "RETURNING id, uuid, account_id, kind, url, body, attempts, created_at",
        (lease_until, now, limit),
    ).fetchall()
    secrets = _secrets(conn, {int(r[2]) for r in rows})
    jobs = [
        WebhookJob(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], secrets.get(r[2]))
        for r in rows
    ]
    return sorted(jobs, key=lambda job: job.id)


def _secrets(conn: sqlite3.Connection, account_ids: set[int]) -> dict[int, str | None]:
    if not account_ids:
        return {}
    marks = ",".join("?" * len(account_ids))
    rows = conn.execute(
        f"SELECT id, webhook_secret FROM accounts WHERE id IN ({marks})", tuple(account_ids)
    ).fetchall()
    return {int(r[0]): r[1] for r in rows}


def release_expired_leases(conn: sqlite3.Connection, now: float, keep: tuple[int, ...] = ()) -> int:
    """Callbacks whose claimer died go back to pending; ``keep``: those still being posted
    by this process (its lease may look expired after a wall-clock step)."""
    marks = ",".join("?" * len(keep))
    cursor = conn.execute(
        "UPDATE webhooks SET state = 'pending', lease_until = NULL "
        f"WHERE state = 'sending' AND lease_until < ? AND id NOT IN ({marks})",
        (now, *keep),
    )
    return cursor.rowcount


def record_attempt(
    conn: sqlite3.Connection,
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


def list_webhooks(conn: sqlite3.Connection, state: str | None, limit: int) -> list[WebhookView]:
    where, params = ("WHERE state = ?", (state,)) if state else ("", ())
    rows = conn.execute(
        f"SELECT {VIEW_COLUMNS} FROM webhooks {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_view(conn, r) for r in rows]


def get_webhook(conn: sqlite3.Connection, webhook_id: int) -> WebhookView | None:
    row = conn.execute(
        f"SELECT {VIEW_COLUMNS} FROM webhooks WHERE id = ?", (webhook_id,)
    ).fetchone()
    return None if row is None else _view(conn, row)


def _view(conn: sqlite3.Connection, row: tuple[Any, ...]) -> WebhookView:
    history = conn.execute(
        "SELECT at, status, latency_ms, error FROM webhook_attempts WHERE webhook_id = ? "
        "ORDER BY id",
        (row[0],),
    ).fetchall()
    return WebhookView(*row, history=tuple(tuple(h) for h in history))  # type: ignore[misc]


def retry(conn: sqlite3.Connection, webhook_id: int | None, now: float) -> int:
    """Put failed callbacks (one, or all when webhook_id is None) back in the queue, with a
    fresh retry budget (the budget counts from ``created_at``; the attempts keep the history)."""
    if webhook_id is None:
        cursor = conn.execute(
            "UPDATE webhooks SET state = 'pending', due_at = ?, created_at = ? "
            "WHERE state = 'failed'",
            (now, now),
        )
    else:
        cursor = conn.execute(
            "UPDATE webhooks SET state = 'pending', due_at = ?, created_at = ? "
            "WHERE id = ? AND state IN ('failed', 'pending')",
            (now, now, webhook_id),
        )
    return cursor.rowcount


def pending_count(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM webhooks WHERE state IN ('pending', 'sending')"
    ).fetchone()
    return int(row[0])


def backlog(conn: sqlite3.Connection, late_before: float | None) -> CallbackBacklog:
    """Callbacks still to post: since when the oldest has been due, how many since before
    ``late_before`` (None: not asked), and how many were given up.

    A callback is due from when it is stored (or put back by `webhooks retry`): its
    ``created_at``, not its ``due_at``, which each failed attempt moves to the next try (a
    receiver that is down would never look late). Scans the callbacks still to post."""
    oldest, late = conn.execute(
        "SELECT MIN(created_at), TOTAL(created_at < ?) FROM webhooks "
        "WHERE state IN ('pending', 'sending')",
        (late_before,),
    ).fetchone()
    failed = conn.execute("SELECT COUNT(*) FROM webhooks WHERE state = 'failed'").fetchone()[0]
    return CallbackBacklog(None if oldest is None else float(oldest), int(late), int(failed))
