"""The PostgreSQL engine's stop, on a real server: every accepted write committed first, and
bounded all the same. It waited on the event loop's thread for every query to end: a heavy
read held `serve`'s stop for its whole run, and a frozen server for as long as it stayed so."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from smsrelay.errors import MaybeStored, TransientError
from smsrelay.store import pg_engine
from smsrelay.store.pg_engine import PgDatabase
from smsrelay.store.sql import Conn
from tests.pg_server import PostgresServer
from tests.support import eventually

pytestmark = pytest.mark.asyncio
BOUND_S = 15.0  # far above the stop's limits as set here: a stop that waits on fails, not hangs


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    return postgres.new_database("stop")


@pytest.fixture
async def db(url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PgDatabase]:
    monkeypatch.setattr(pg_engine, "STOP_READS_WITHIN_S", 0.2)
    monkeypatch.setattr(pg_engine, "STOP_CANCEL_WITHIN_S", 0.5)
    database = PgDatabase(url)
    await database.start()
    await database.write(lambda c: c.execute("CREATE TABLE t (n integer)"))
    yield database
    await asyncio.wait_for(database.stop(), BOUND_S)  # twice is harmless


def _insert(n: int) -> Any:
    return lambda c: c.execute("INSERT INTO t (n) VALUES (?)", (n,)).rowcount


async def test_a_stop_commits_every_accepted_write_first(
    db: PgDatabase, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch out (held on the server by a lock) and the writes queued behind it."""
    monkeypatch.setattr(pg_engine, "STOP_WRITES_WITHIN_S", 60.0)  # not the point here
    held_lock = 454545
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (held_lock,))

        def held(conn: Conn) -> int:
            conn.execute(f"SELECT pg_advisory_xact_lock_shared({held_lock})")
            return 1

        out = asyncio.ensure_future(db.write(held))
        await eventually(lambda: _waits_for_advisory_lock(holder))  # the batch is out, held
        behind = [asyncio.ensure_future(db.write(_insert(n))) for n in range(20)]
        stopping = asyncio.ensure_future(db.stop())
        await eventually(lambda: len(db._outbox) == 20)  # type: ignore[attr-defined]
        assert not stopping.done()
        holder.execute("SELECT pg_advisory_unlock(%s)", (held_lock,))
        await asyncio.wait_for(stopping, BOUND_S)
    assert out.result() == 1
    assert [w.result() for w in behind] == [1] * 20
    with psycopg.connect(url) as check:
        assert check.execute("SELECT count(*) FROM t").fetchone() == (20,)


async def test_a_stop_cancels_a_read_under_way_and_its_caller_hears_transient(
    db: PgDatabase, url: str
) -> None:
    """A read changes nothing: after its grace it is cancelled on the server, not waited for
    (30 s here); its caller is answered a TransientError (a 503), not left hanging."""
    reading = asyncio.ensure_future(db.read(lambda c: c.execute("SELECT pg_sleep(30)").fetchone()))
    await eventually(lambda: _sleeping(url))
    await asyncio.wait_for(db.stop(), BOUND_S)
    with pytest.raises(TransientError, match="database closing"):
        await asyncio.wait_for(reading, BOUND_S)
    await eventually(lambda: not _sleeping(url))  # the server stopped it too


async def test_a_stop_while_the_server_is_frozen_ends_in_bounded_time(
    db: PgDatabase, url: str, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen server (SIGSTOP: its kernel still takes our bytes, nothing answers) held the
    stop for the whole freeze. The batch out is answered "may be stored" (its COMMIT may
    land when the server wakes), the write behind it "not stored" (never run), the read a
    TransientError; and the engine's threads end, so the process can exit."""
    monkeypatch.setattr(pg_engine, "STOP_WRITES_WITHIN_S", 0.5)
    assert await db.read(lambda c: c.execute("SELECT 1").fetchone()) == (1,)  # connected
    with _frozen(postgres, url):
        out = asyncio.ensure_future(db.write(_insert(1)))
        await eventually(lambda: db._writing)  # type: ignore[attr-defined]
        behind = asyncio.ensure_future(db.write(_insert(2)))
        reading = asyncio.ensure_future(db.read(lambda c: c.execute("SELECT 1").fetchone()))
        await eventually(lambda: db._outbox)  # type: ignore[attr-defined]
        await asyncio.wait_for(db.stop(), BOUND_S)
        with pytest.raises(MaybeStored):
            await asyncio.wait_for(out, BOUND_S)
        with pytest.raises(TransientError, match="nothing of this write was stored"):
            await asyncio.wait_for(behind, BOUND_S)
        with pytest.raises(TransientError):
            await asyncio.wait_for(reading, BOUND_S)
        await eventually(lambda: not _engine_threads_alive(db))


async def test_the_late_outcome_of_a_batch_given_up_by_a_stop_is_not_logged_as_a_failing_store(
    db: PgDatabase,
    url: str,
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The batch out on a frozen server, given up and answered by the stop: its outcome when
    the stop cut its socket was still logged as the store failing."""
    monkeypatch.setattr(pg_engine, "STOP_WRITES_WITHIN_S", 0.3)
    caplog.set_level(logging.DEBUG, logger="smsrelay.store")
    assert await db.read(lambda c: c.execute("SELECT 1").fetchone()) == (1,)  # connected
    with _frozen(postgres, url):
        out = asyncio.ensure_future(db.write(_insert(1)))
        await eventually(lambda: db._writing)  # type: ignore[attr-defined]
        await asyncio.wait_for(db.stop(), BOUND_S)
        with pytest.raises(MaybeStored):
            await asyncio.wait_for(out, BOUND_S)
        await eventually(lambda: not _engine_threads_alive(db))
        await _loop_turns()  # the late outcome's callbacks
    after_give_up = _lines_after("store.stop.writes_given_up", caplog)
    assert not _store_trouble_said(after_give_up)
    assert after_give_up.count("store.stop.late_outcome") == 1  # (a debug line) it came


async def test_a_batch_given_up_by_a_stop_says_nothing_of_it_after_the_stop(
    db: PgDatabase, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch the stop could not cut loose (its thread busy outside the server) outlives the
    stop: its stall timer said "stalled" after the stop had returned, and its outcome "stall
    ended" and "failing"."""
    monkeypatch.setattr(pg_engine, "STOP_WRITES_WITHIN_S", 0.3)
    monkeypatch.setattr(pg_engine, "STOP_THREADS_WITHIN_S", 0.2)
    db._stall._after = 1.0  # type: ignore[attr-defined]  # due after the stop has returned
    caplog.set_level(logging.DEBUG, logger="smsrelay.store")
    running, release = threading.Event(), threading.Event()

    def held(conn: Conn) -> int:
        running.set()
        release.wait(BOUND_S)
        return int(conn.execute("SELECT 1").fetchone()[0])

    out = asyncio.ensure_future(db.write(held))
    try:
        await eventually(running.is_set)
        stall_timer = db._stall._timer  # type: ignore[attr-defined]
        assert stall_timer is not None
        await asyncio.wait_for(db.stop(), BOUND_S)
        stopped_at = len(caplog.records)
        assert _engine_threads_alive(db)  # the batch outlived the stop
        with pytest.raises(MaybeStored):
            await asyncio.wait_for(out, BOUND_S)
        loop = asyncio.get_running_loop()
        await eventually(lambda: stall_timer.cancelled() or loop.time() > stall_timer.when())
        await _loop_turns()  # the timer's run, when due
    finally:
        release.set()
    await eventually(lambda: not _engine_threads_alive(db))
    await _loop_turns()  # the late outcome's callbacks
    after_stop = [r.getMessage() for r in caplog.records[stopped_at:]]
    assert not _store_trouble_said(after_stop)
    assert after_stop.count("store.stop.late_outcome") == 1  # (a debug line) it came


async def test_a_connection_made_after_the_stop_cut_the_sockets_runs_nothing(
    db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread still connecting when the stop cut the sockets (a server slow to answer) went
    on to run its query on a socket the stop could no longer reach, and the process's exit
    waited for that query: for a heavy read, its whole run."""
    monkeypatch.setattr(pg_engine, "STOP_THREADS_WITHIN_S", 0.2)
    connecting, answered = threading.Event(), threading.Event()
    real_connect = pg_engine.connect

    def slow_connect(url: str) -> Any:
        connecting.set()
        answered.wait(BOUND_S)
        return real_connect(url)

    monkeypatch.setattr(pg_engine, "connect", slow_connect)
    ran: list[int] = []

    def read(conn: Conn) -> Any:
        ran.append(1)
        return conn.execute("SELECT 1").fetchone()

    reading = asyncio.ensure_future(db.read(read))  # the readers' first: it connects
    await eventually(connecting.is_set)
    await asyncio.wait_for(db.stop(), BOUND_S)  # the reader left connecting
    answered.set()  # the server answers it only now
    with pytest.raises(TransientError, match="database closing"):
        await asyncio.wait_for(reading, BOUND_S)
    await eventually(lambda: not _engine_threads_alive(db))
    assert not ran


@contextmanager
def _frozen(postgres: PostgresServer, url: str) -> Iterator[None]:
    """The postmaster (no new connection is answered) and the database's backends stopped,
    as a paused VM would be; always woken again."""
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    pids = [postgres.process.pid, *(pid for (pid,) in rows)]
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def _loop_turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def _lines_after(event: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records]
    return lines[lines.index(event) + 1 :]


def _store_trouble_said(lines: list[str]) -> bool:
    return bool({"store.stalled", "store.stall.ended", "store.failing"} & set(lines))


def _sleeping(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as watcher:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'active' AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()"
        )
        row = watcher.execute(query).fetchone()
    return row is not None and row[0] > 0


def _waits_for_advisory_lock(conn: Any) -> bool:
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    return bool(conn.execute(query).fetchone()[0])


def _engine_threads_alive(db: PgDatabase) -> bool:
    pools = (db._writer, db._readers)  # type: ignore[attr-defined]
    return any(thread.is_alive() for pool in pools for thread in pool._threads)
