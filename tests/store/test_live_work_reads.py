"""Reads that answer about live work cost what the live work costs, not what history does.

SQLite's virtual machine steps are counted (a progress handler called every step), which is
exact where a timing would be noise: a read over a million kept messages differs from one
over none only by the steps it takes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from smsrelay.store import schema
from smsrelay.store.account_ops import stop_page
from smsrelay.store.account_reads import WAITING_COUNT, stopped_among

T = TypeVar("T")


def _store_with(path: Path, *, waiting: int, history: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    schema.upgrade(conn)
    for message_id in range(1, waiting + history + 1):
        state = "queued" if message_id <= waiting else "delivered"
        conn.execute(
            "INSERT INTO messages (id, account_id, sender, recipient, region, text, encoding, "
            "nb_sms, cost_micros, state, connector, created_at, due_at) VALUES "
            "(?, 1, '+33757000001', '+33612345678', 'FR', 'hi', 'gsm7', 1, 45000, ?, "
            "'default', 0, 0)",
            (message_id, state),
        )
        conn.execute(
            "INSERT INTO parts (message_id, seq, connector, state, due_at) "
            "VALUES (?, 1, 'default', ?, 0)",
            (message_id, state),
        )
    conn.commit()
    return conn


def _steps(conn: sqlite3.Connection, sql: str, *args: object) -> tuple[int, list[tuple[int]]]:
    return _counted(conn, lambda: conn.execute(sql, args).fetchall())


def _counted(conn: sqlite3.Connection, read: Callable[[], T]) -> tuple[int, T]:
    """The VM steps ``read`` takes on ``conn``, and what it gave."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    result = read()
    conn.set_progress_handler(None, 1)
    return steps, result


def test_counting_an_accounts_waiting_messages_does_not_walk_its_history(tmp_path: Path) -> None:
    fresh = _store_with(tmp_path / "fresh.db", waiting=5, history=0)
    old = _store_with(tmp_path / "old.db", waiting=5, history=3_000)
    fresh_steps, fresh_rows = _steps(fresh, WAITING_COUNT, 1)
    old_steps, old_rows = _steps(old, WAITING_COUNT, 1)
    assert fresh_rows == old_rows == [(5,)]
    assert old_steps <= fresh_steps + 50  # a few B-tree levels more, not 3,000 rows' worth


def _stop_list_of(conn: sqlite3.Connection, count: int) -> None:
    conn.executemany(
        "INSERT INTO stop_list (account_id, phone, created_at) VALUES (1, ?, 0)",
        ((f"+336{n:08d}",) for n in range(count)),
    )
    conn.commit()


def test_whether_a_recipient_is_stopped_does_not_read_the_whole_stop_list(tmp_path: Path) -> None:
    # Every message-status answer read the account's whole STOP list to tell one recipient's
    # "stopped": a marketing account's list runs to hundreds of thousands of numbers.
    short = _store_with(tmp_path / "short.db", waiting=0, history=0)
    long = _store_with(tmp_path / "long.db", waiting=0, history=0)
    _stop_list_of(short, 3)
    _stop_list_of(long, 3_000)
    asked = ["+33600000001", "+33699999999"]  # one stopped, one not

    def steps(conn: sqlite3.Connection) -> tuple[int, frozenset[str]]:
        return _counted(conn, lambda: stopped_among(conn, 1, asked))

    short_steps, short_stopped = steps(short)
    long_steps, long_stopped = steps(long)
    assert short_stopped == long_stopped == {"+33600000001"}
    assert long_steps <= short_steps + 50  # a few B-tree levels more, not 3,000 rows' worth


def test_a_page_of_the_stop_list_reads_its_page_not_the_whole_list(tmp_path: Path) -> None:
    # GET /v1/stop-sms/list reads the list a page at a time (id > the last seen): by the
    # (account_id, phone) index, each page read and sorted the whole list again.
    short = _store_with(tmp_path / "short.db", waiting=0, history=0)
    long = _store_with(tmp_path / "long.db", waiting=0, history=0)
    _stop_list_of(short, 20)
    _stop_list_of(long, 3_000)

    def steps(conn: sqlite3.Connection) -> tuple[int, list[int]]:
        return _counted(conn, lambda: [e.id for e in stop_page(conn, 1, 5, 10)])

    short_steps, short_ids = steps(short)
    long_steps, long_ids = steps(long)
    assert short_ids == long_ids == list(range(6, 16))
    assert long_steps <= short_steps + 50  # a few B-tree levels more, not 3,000 rows' worth
