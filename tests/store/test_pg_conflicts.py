"""Nodes sharing one PostgreSQL database get in each other's way; none stops the others.

Connections to one real server stand for the nodes: a rival commits small updates of one row
as fast as it can while a slow batch reads that row and writes it back (left to retrying, the
slow batch loses every time; running alone lets it through); two batches skew-write, and the
server refuses one at COMMIT; a node freezes mid-transaction, holding a lock the others wait for.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from smsrelay.errors import TransientError
from smsrelay.store import pg_batch, pg_conn
from smsrelay.store.pg_batch import BEGIN, WRITE_LOCK, Outcome, run_batch
from smsrelay.store.pg_conn import connect
from smsrelay.store.sql import Conn

WAIT_S = 20  # the deadline of every wait here: a failure, never a pause


class Rival:
    """Another node's writer: one-row updates, each in its own batch, until stopped."""

    def __init__(self, url: str) -> None:
        self.conn = connect(url)
        self.committed = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.conn.execute(BEGIN)
            (outcome,) = run_batch(self.conn, [_bump])
            with self._changed:
                self.committed += outcome[1] is None
                self._changed.notify_all()

    def wait_for(self, commits: int) -> None:
        with self._changed:
            reached = self._changed.wait_for(lambda: self.committed >= commits, WAIT_S)
        assert reached, f"the rival did not reach {commits} commits within {WAIT_S}s"

    def __enter__(self) -> Rival:
        self._thread.start()
        self.wait_for(10)  # it is running flat out
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_S)
        self.conn.close()


def _bump(conn: Conn) -> None:
    conn.execute("UPDATE hot SET n = n + 1 WHERE id = 1")


@pytest.fixture
def url(postgres: Any) -> Iterator[str]:
    url = str(postgres.new_database("conflicts"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE hot (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        conn.execute("INSERT INTO hot VALUES (1, 0), (2, 0)")
    yield url


def _slow_batch(url: str, rival: Rival, tries: list[int]) -> list[Outcome]:
    """A batch that reads the hot row, lets the rival commit an update of it (unless this run
    holds the rival off), then writes it back plus 1000: every run not alone conflicts."""

    def read_then_write(conn: Conn) -> None:
        tries.append(1)
        seen = rival.committed
        (n,) = conn.execute("SELECT n FROM hot WHERE id = 1").fetchone()
        if not _running_alone(conn):
            rival.wait_for(seen + 2)  # the second began after this snapshot: a real conflict
        conn.execute("UPDATE hot SET n = ? WHERE id = 1", (n + 1000,))

    with connect(url) as conn:
        conn.execute(BEGIN)
        return run_batch(conn, [read_then_write])


def _running_alone(conn: Conn) -> bool:
    """Whether this session holds the write lock exclusively (the rival then waits for it)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ExclusiveLock'"
        " AND granted AND pid = pg_backend_pid()"
    ).fetchone()
    return bool(row[0])


def _hot(url: str, row_id: int = 1) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT n FROM hot WHERE id = %s", (row_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_that_keeps_losing_runs_alone_and_commits(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    tries: list[int] = []
    with Rival(url) as rival:
        ((_, error),) = _slow_batch(url, rival, tries)
    assert error is None
    assert len(tries) == pg_batch.ALONE_AFTER + 1  # lost each run not alone, then went alone
    assert _hot(url) == rival.committed + 1000  # no update lost on either side
    assert "store.batch.run_alone" in caplog.messages  # an operator can see the contention


def test_without_running_alone_the_same_batch_starves(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the test above guards against: retrying alone never gets the slow batch through."""
    monkeypatch.setattr(pg_batch, "ALONE_AFTER", pg_batch.MAX_TRIES)
    tries: list[int] = []
    with Rival(url) as rival:
        ((_, error),) = _slow_batch(url, rival, tries)
    assert isinstance(error, TransientError) and "conflicted" in str(error)
    assert len(tries) == pg_batch.MAX_TRIES
    assert _hot(url) == rival.committed


def test_a_conflict_found_only_at_commit_runs_the_batch_again(url: str) -> None:
    """Write skew: each reads the row the other writes. PostgreSQL lets both writes through
    and refuses the second COMMIT (a serialization failure, which psycopg raises as an
    OperationalError, like a lost connection): the batch runs again, not answered as failed."""
    runs: list[int] = []
    with connect(url) as other:

        def skewed(conn: Conn) -> None:
            runs.append(1)
            conn.execute("SELECT n FROM hot WHERE id = 2")
            if len(runs) == 1:  # another node's transaction, interleaved with the first run
                other.execute(BEGIN)
                other.execute("SELECT n FROM hot WHERE id = 1")
                other.execute("UPDATE hot SET n = n + 1 WHERE id = 2")
            conn.execute("UPDATE hot SET n = n + 1 WHERE id = 1")
            if len(runs) == 1:
                other.execute("COMMIT")  # first: so this batch's COMMIT is the one refused

        with connect(url) as conn:
            conn.execute(BEGIN)
            ((_, error),) = run_batch(conn, [skewed])
    assert error is None
    assert len(runs) == 2
    assert (_hot(url, 1), _hot(url, 2)) == (1, 1)  # each write stored once


def test_a_node_frozen_in_a_transaction_holds_the_others_up_only_until_the_server_ends_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node paused mid-batch (its VM, SIGSTOP) holds the shared write lock; a batch that must
    run alone waits for it, and every other node behind that one. The server ends the paused
    transaction after the idle timeout each connection sets, and everyone goes on."""
    monkeypatch.setattr(pg_conn, "IDLE_IN_TRANSACTION_S", 1)
    with connect(url) as frozen, connect(url) as waiting:
        frozen.execute(BEGIN)
        frozen.execute("UPDATE hot SET n = n + 1 WHERE id = 1")  # then it never speaks again
        waiting.execute("SET lock_timeout = '20s'")  # fail rather than hang without the fix
        waiting.execute(f"SELECT pg_advisory_lock({WRITE_LOCK})")  # as a batch running alone
        waiting.execute(f"SELECT pg_advisory_unlock({WRITE_LOCK})")
        with pytest.raises(pg_conn.CONNECTION_LOST):
            frozen.execute("COMMIT")  # thawed: its session was ended, nothing it wrote kept
    assert _hot(url) == 0


def test_a_batch_that_fails_while_running_alone_lets_the_others_write_again(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever stops a batch that holds the write lock exclusively, even an unexpected error
    inside a failed transaction (where PostgreSQL refuses the unlock itself), the lock is let
    go: held by a live session, it would stop every other node's writes for good."""
    runs: list[int] = []

    def loses_once(conn: Conn) -> None:
        runs.append(1)
        if len(runs) == 1:  # a conflict: the next run holds the lock exclusively
            raise psycopg.errors.SerializationFailure("lost to another node")
        conn.execute("UPDATE hot SET n = n + 1 WHERE id = 1")

    def broken_commit(conn: psycopg.Connection[Any]) -> None:
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")  # the transaction is now failed
        raise RuntimeError("a bug between the writes and COMMIT")

    monkeypatch.setattr(pg_batch, "commit", broken_commit)
    with connect(url) as conn, connect(url) as other:
        conn.execute(BEGIN)
        with pytest.raises(RuntimeError, match="a bug"):  # the batch's own error, not the unlock's
            run_batch(conn, [loses_once])
        assert len(runs) == 2
        other.execute("SET lock_timeout = '20s'")  # fail rather than hang without the fix
        other.execute(f"SELECT pg_advisory_lock({WRITE_LOCK})")  # a batch of another node
        other.execute(f"SELECT pg_advisory_unlock({WRITE_LOCK})")
    assert _hot(url) == 0  # nothing of the failed batch was stored


def test_a_connection_gives_up_on_a_silent_server_in_seconds_unless_its_url_says(
    url: str,
) -> None:
    # Cut off without a reset (a partition), a batch waited ~15 minutes on the kernel's
    # retransmissions: every connection asks TCP to give up after 30 s unacknowledged.
    with connect(url) as conn:
        assert conn.info.get_parameters()["tcp_user_timeout"] == "30000"
        assert conn.info.get_parameters()["keepalives_idle"] == "10"
    with connect(url + "?keepalives_idle=120") as conn:  # an operator's own value stays
        assert conn.info.get_parameters()["keepalives_idle"] == "120"
