"""What ``GET /metrics`` reads of the store: one snapshot, each figure bounded by the live
work (the parts' and callbacks' partial indexes) or one index probe, never by history (the
callbacks given up, kept until purged, are counted by the sender instead)."""

from __future__ import annotations

from smsrelay.store import message_ops
from smsrelay.store.records import StoreFigures
from smsrelay.store.sql import Conn

# what each "stored so far" counter counts: a table's highest id (ids only grow)
STORED_TABLES = {
    "messages": "messages",
    "receipts": "receipts",
    "replies": "replies",
    "callbacks": "webhooks",
}


def store_figures(conn: Conn, now: float) -> StoreFigures:
    pending, oldest = conn.execute(
        "SELECT COUNT(*), MIN(created_at) FROM webhooks WHERE state IN ('pending', 'sending')"
    ).fetchone()
    return StoreFigures(
        now=now,
        parts=message_ops.queue_depth(conn),
        overdue=message_ops.overdue_parts(conn, now),
        callbacks_pending=int(pending),
        callbacks_oldest_pending=None if oldest is None else float(oldest),
        stored={kind: _highest_id(conn, table) for kind, table in STORED_TABLES.items()},
    )


def _highest_id(conn: Conn, table: str) -> int:
    row = conn.execute(f"SELECT MAX(id) FROM {table}").fetchone()  # table: one of ours
    return int(row[0] or 0)
