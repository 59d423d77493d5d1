"""What ``GET /metrics`` reads of the store: one snapshot, each figure bounded by the live
work (the parts' and callbacks' partial indexes) or one index probe, never by history (the
callbacks given up, kept until purged, are counted by the sender instead)."""

from __future__ import annotations

from smsrelay.store import message_ops
from smsrelay.store.records import StoreFigures
from smsrelay.store.sql import Conn


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
        sending=message_ops.sending_parts(conn),
    )
