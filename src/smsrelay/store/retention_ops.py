"""Retention: history older than a cutoff is deleted, oldest first, a chunk per transaction.

Only what is finished goes: a message in a final state with no callback still to post (with
its parts and receipts), a reply likewise (and that no reassembly waits for), a callback
delivered or given up (with its attempts). Each is walked by id, which grows with time, so a
chunk reads only the rows it looks at, however large the tables; the open-callback checks are
index seeks (a message's order key among callbacks still to go, a reply's own callbacks).
Receipts that never found their part go too.
"""

from __future__ import annotations

from typing import Any

from smsrelay.store import webhook_ops
from smsrelay.store.records import PurgeStep
from smsrelay.store.sql import Conn

_OPEN = "state IN ('pending', 'sending')"  # the condition of the webhooks_in_order index
_MESSAGE_OPEN = f"SELECT 1 FROM webhooks WHERE order_key = ? AND {_OPEN}"
# a reply held for reassembly answers this message: its callback goes to the message's
# urlResponse once its other parts come (or the hour is up), read from the message row
_MESSAGE_ANSWERED = "SELECT 1 FROM replies WHERE awaiting = 1 AND message_id = ?"
# `state || ''` is not the column, so the index of callbacks still to go (whose condition is
# `state IN ...`) cannot be chosen for it, and the seek is by reply_id; walking the callbacks
# still to go took seconds with a receiver down a day. (SQLite's INDEXED BY does the same, but
# PostgreSQL has no such hint.)
_REPLY_OPEN = "SELECT 1 FROM webhooks WHERE reply_id = ? AND state || '' IN ('pending', 'sending')"


def purge_messages(conn: Conn, older_than: float, after_id: int, limit: int) -> PurgeStep:
    rows = _next_rows(conn, "messages", "created_at, final_at", after_id, limit)
    finished = [
        int(r[0])
        for r in rows
        if r[1] < older_than
        and r[2] is not None
        and r[2] < older_than
        and not conn.execute(_MESSAGE_OPEN, (webhook_ops.message_key(r[0]),)).fetchone()
        and not conn.execute(_MESSAGE_ANSWERED, (r[0],)).fetchone()
    ]
    for message_id in finished:
        _delete_message(conn, message_id)
    return _step(rows, len(finished), after_id, older_than, limit)


def purge_replies(conn: Conn, older_than: float, after_id: int, limit: int) -> PurgeStep:
    rows = _next_rows(conn, "replies", "received_at, awaiting", after_id, limit)
    finished = [
        int(r[0])
        for r in rows
        if r[1] < older_than and not r[2] and not conn.execute(_REPLY_OPEN, (r[0],)).fetchone()
    ]
    conn.executemany("DELETE FROM replies WHERE id = ?", [(i,) for i in finished])
    return _step(rows, len(finished), after_id, older_than, limit)


def purge_callbacks(conn: Conn, older_than: float, after_id: int, limit: int) -> PurgeStep:
    rows = _next_rows(conn, "webhooks", "created_at, state", after_id, limit)
    finished = [(int(r[0]),) for r in rows if r[1] < older_than and r[2] in ("delivered", "failed")]
    conn.executemany("DELETE FROM webhook_attempts WHERE webhook_id = ?", finished)
    conn.executemany("DELETE FROM webhooks WHERE id = ?", finished)
    return _step(rows, len(finished), after_id, older_than, limit)


def purge_unmatched_receipts(conn: Conn, older_than: float, after_id: int, limit: int) -> PurgeStep:
    """Receipts that never found their part (kept for an id that never came)."""
    rows = _next_rows(conn, "receipts", "received_at, part_id", after_id, limit)
    stale = [(int(r[0]),) for r in rows if r[1] < older_than and r[2] is None]
    conn.executemany("DELETE FROM early_receipt_keys WHERE receipt_id = ?", stale)
    conn.executemany("DELETE FROM receipts WHERE id = ?", stale)
    return _step(rows, len(stale), after_id, older_than, limit)


def _next_rows(
    conn: Conn, table: str, columns: str, after_id: int, limit: int
) -> list[tuple[Any, ...]]:
    """The next ``limit`` rows by id: (id, its time, one more column). Never the table's
    newest row (``below_newest``)."""
    return conn.execute(
        f"SELECT id, {columns} FROM {table} WHERE id > ? AND {below_newest(table)} "
        "ORDER BY id LIMIT ?",
        (after_id, limit),
    ).fetchall()


def below_newest(table: str) -> str:
    """SQL: the row is not ``table``'s newest. SQLite gives a new row the highest id plus one,
    so with the newest row deleted the next message took its id again, and a client holding
    that id read another message's status; the newest row stays until a newer one comes (its
    id is a seek, not a scan). PostgreSQL's identity never goes back, and loses one row."""
    return f"id < (SELECT MAX(id) FROM {table})"


def _step(
    rows: list[tuple[Any, ...]], deleted: int, after_id: int, cutoff: float, limit: int
) -> PurgeStep:
    last_id = int(rows[-1][0]) if rows else after_id
    # Ids grow with time, so the walk ends where the rows reach the cutoff. Judged by the
    # chunk's last row: one row stamped in the future (a clock stepped back after it) ended
    # every walk in its first chunk, and retention deleted ~1,000 rows a run.
    done = len(rows) < limit or rows[-1][1] >= cutoff
    return PurgeStep(deleted, last_id, done)


def _delete_message(conn: Conn, message_id: int) -> None:
    receipts = "SELECT r.id FROM receipts r JOIN parts p ON p.id = r.part_id WHERE p.message_id = ?"
    conn.execute(f"DELETE FROM early_receipt_keys WHERE receipt_id IN ({receipts})", (message_id,))
    conn.execute(f"DELETE FROM receipts WHERE id IN ({receipts})", (message_id,))
    conn.execute("DELETE FROM parts WHERE message_id = ?", (message_id,))
    conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
