"""The write engine: a write is answered only after its WAL fsync; writes that arrive during a
sync share the next commit; a failed sync fails its writes; checkpoints keep the WAL small."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smsrelay.errors import PermanentError, TransientError
from smsrelay.store import engine
from smsrelay.store.engine import Database
from tests.support import eventually

pytestmark = pytest.mark.asyncio
REAL_FDATASYNC = os.fdatasync


class HeldSync:
    """Stands in for os.fdatasync: counts calls and, while held, blocks them until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_with: OSError | None = None

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        self.release.wait(timeout=10)
        if self.fail_with is not None:
            raise self.fail_with
        REAL_FDATASYNC(fd)


@pytest.fixture
def held_sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldSync]:
    sync = HeldSync()
    monkeypatch.setattr(engine.os, "fdatasync", sync)
    yield sync
    sync.release.set()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(str(tmp_path / "e.db"))
    await database.start()
    await database.write(_create_table)
    yield database
    await database.stop()


def _create_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")


def _insert(value: bytes) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        return int(conn.execute("INSERT INTO t (v) VALUES (?)", (value,)).lastrowid or 0)

    return op


async def _write_while_sync_is_held(
    db: Database, held_sync: HeldSync, value: bytes
) -> asyncio.Future[int]:
    """Start a write and return once its fsync has begun (and is held there)."""
    held_sync.release.clear()
    held_sync.entered.clear()
    write = asyncio.ensure_future(db.write(_insert(value)))
    assert await asyncio.to_thread(held_sync.entered.wait, 5), "the syncer never started"
    return write


async def test_a_write_is_answered_only_after_its_wal_is_fsynced(
    db: Database, held_sync: HeldSync
) -> None:
    write = await _write_while_sync_is_held(db, held_sync, b"x")
    await asyncio.sleep(0)  # give the loop every chance to (wrongly) answer
    assert not write.done()
    held_sync.release.set()
    assert await asyncio.wait_for(write, 5) >= 1


async def test_writes_arriving_during_a_sync_share_the_next_commit(
    db: Database, held_sync: HeldSync
) -> None:
    first = await _write_while_sync_is_held(db, held_sync, b"first")
    calls_before = held_sync.calls
    later = []
    for _ in range(20):  # over twenty loop turns
        later.append(asyncio.ensure_future(db.write(_insert(b"later"))))
        await asyncio.sleep(0)
    held_sync.release.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 5)
    assert held_sync.calls == calls_before + 1  # twenty writes, one more fsync


async def test_a_batch_that_changes_no_row_is_answered_without_a_sync(
    db: Database, held_sync: HeldSync
) -> None:
    # An idle gateway's claims (the dispatcher's, the callback sender's) find nothing ~10
    # times a second, and each was an fdatasync of a WAL it had not written to.
    calls = held_sync.calls

    def claim_nothing(conn: sqlite3.Connection) -> list[object]:
        return conn.execute("UPDATE t SET v = v WHERE id < 0 RETURNING id").fetchall()

    assert await db.write(claim_nothing) == []
    assert held_sync.calls == calls
    await db.write(_insert(b"x"))
    assert held_sync.calls == calls + 1


async def test_writes_behind_a_sync_that_hangs_are_refused_unrun_and_the_store_says_stalled(
    db: Database, held_sync: HeldSync, caplog: pytest.LogCaptureFixture
) -> None:
    # A hung fsync held every later write in the outbox for as long as it hung: a client's
    # send waited past its own timeout, then was stored and sent all the same.
    db._stall._after = 0.2  # 10 s in service
    first = await _write_while_sync_is_held(db, held_sync, b"first")
    behind = asyncio.ensure_future(db.write(_insert(b"behind")))
    with pytest.raises(TransientError, match="stalled"):
        await asyncio.wait_for(behind, 5)
    assert db.health.trouble() == "commits stalled"
    with pytest.raises(TransientError, match="nothing of this write was stored"):
        await db.write(_insert(b"new"))  # refused at once while it lasts
    assert not first.done()  # the batch out may be stored: it waits for its sync
    held_sync.release.set()
    assert await asyncio.wait_for(first, 5) >= 1
    assert db.health.trouble() is None
    await db.write(_insert(b"after"))
    rows = await db.read(lambda conn: [r[0] for r in conn.execute("SELECT v FROM t ORDER BY id")])
    assert rows == [b"first", b"after"]
    assert {"store.stalled", "store.stall.ended"} <= {r.getMessage() for r in caplog.records}


async def test_after_a_failed_sync_no_write_is_promised_again(
    db: Database, held_sync: HeldSync
) -> None:
    held_sync.fail_with = OSError(5, "Input/output error")
    with pytest.raises(TransientError, match="sync failed"):
        await db.write(_insert(b"x"))
    assert db.broken.is_set()
    held_sync.fail_with = None  # a later fsync may "succeed" over pages the kernel dropped
    with pytest.raises(TransientError, match="restart smsrelay"):
        await db.write(_insert(b"y"))


async def test_one_refused_write_does_not_undo_the_others(db: Database) -> None:
    def refuse(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('refused')")
        raise ValueError("no")

    results = await asyncio.gather(
        db.write(_insert(b"a")), db.write(refuse), db.write(_insert(b"b")), return_exceptions=True
    )
    assert isinstance(results[1], ValueError)
    rows = await db.read(lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY id")])
    assert rows == [b"a", b"b"]


async def test_a_full_disk_inside_a_write_fails_the_batch_as_transient_not_as_its_refusal(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLite reports a full disk (or an I/O error, a lock) from whichever statement needed
    # the page; once the batch is redone one savepoint per write, that write used to get the
    # sqlite3 error as its own refusal: a 500 at the API, and no retry by the dispatcher.
    def fills_the_disk(conn: sqlite3.Connection) -> None:  # SQLite's own SQLITE_FULL
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        conn.execute("INSERT INTO t (v) VALUES (zeroblob(1000000))")

    def refuse(conn: sqlite3.Connection) -> None:
        raise ValueError("no")  # makes the batch run again, one savepoint per write

    results = await asyncio.gather(
        db.write(_insert(b"a")), db.write(refuse), db.write(fills_the_disk), return_exceptions=True
    )
    assert all(isinstance(r, TransientError) for r in results), results
    assert db.health.trouble() == "commits failing"
    await db.write(lambda conn: conn.execute("PRAGMA max_page_count = 4294967294"))  # room
    assert [r.getMessage() for r in caplog.records].count("store.failing") == 1
    assert await db.write(_insert(b"b")) >= 1  # the next batch that commits clears it
    assert db.health.trouble() is None
    assert "store.recovered" in [r.getMessage() for r in caplog.records]


async def test_a_write_with_a_sql_bug_fails_alone_and_the_others_are_stored(db: Database) -> None:
    # An OperationalError is also SQLite's generic error (no such column): that is the
    # write's own bug, and failing its batch failed every write it joined, again and again.
    def bad_sql(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE t SET missing_column = 1")

    for _ in range(3):
        results = await asyncio.gather(
            db.write(_insert(b"a")),
            db.write(bad_sql),
            db.write(_insert(b"b")),
            return_exceptions=True,
        )
        assert isinstance(results[1], sqlite3.OperationalError)
        assert isinstance(results[0], int) and isinstance(results[2], int)
    rows = await db.read(lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY id")])
    assert rows == [b"a", b"b"] * 3
    assert db.health.trouble() is None


async def test_a_write_that_raises_stop_iteration_fails_alone_and_the_batch_is_answered(
    db: Database,
) -> None:
    # A Future refuses StopIteration (asyncio raises TypeError): set as it is, it broke the
    # answering of the whole batch, and every other write of it waited for ever.
    def stops(conn: sqlite3.Connection) -> None:
        next(iter(()))

    results = await asyncio.wait_for(
        asyncio.gather(
            db.write(_insert(b"a")),
            db.write(stops),
            db.write(_insert(b"b")),
            return_exceptions=True,
        ),
        10,
    )
    assert isinstance(results[1], RuntimeError) and "StopIteration" in str(results[1])
    rows = await db.read(lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY id")])
    assert rows == [b"a", b"b"]


async def test_checkpoints_let_the_wal_restart_instead_of_growing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "CHECKPOINT_EVERY_S", 0.0)  # checkpoint after every commit
    database = Database(str(tmp_path / "w.db"))
    await database.start()
    wal_file = str(tmp_path / "w.db") + "-wal"
    try:
        # the file's size is its high-water mark, which the schema migrations' own commits set
        # (~400 KB with 15 of them; an absolute bound broke with each new migration)
        migrated = os.path.getsize(wal_file)  # noqa: ASYNC240
        await database.write(_create_table)
        payload = os.urandom(2000)
        for _ in range(400):  # ~0.8 MB of rows, each in its own commit
            await database.write(_insert(payload))
        wal = os.path.getsize(wal_file)  # noqa: ASYNC240
    finally:
        await database.stop()
    # Without restarts it would grow by every commit's pages (> 1.6 MB)
    assert wal - migrated < 200_000


async def test_a_write_is_answered_before_the_checkpoint_that_follows_its_sync(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpointing, release = threading.Event(), threading.Event()
    real_checkpoint = db._checkpoint

    def held_checkpoint() -> None:
        checkpointing.set()
        release.wait(timeout=10)
        real_checkpoint()

    monkeypatch.setattr(db, "_checkpoint", held_checkpoint)
    monkeypatch.setattr(engine, "CHECKPOINT_EVERY_S", 0.0)
    try:
        assert await asyncio.wait_for(db.write(_insert(b"answered")), 5) >= 1
        assert await asyncio.to_thread(checkpointing.wait, 5), "no checkpoint after the sync"
        later = asyncio.ensure_future(db.write(_insert(b"held")))
        # A free engine runs a batch on the next turn of the loop (call_soon): after a few
        # turns, with no wall-clock wait, the write must still be queued, not committed.
        for _ in range(5):
            await asyncio.sleep(0)
        assert not later.done() and len(db._outbox) == 1  # held until the checkpoint ends
    finally:
        release.set()
    assert await asyncio.wait_for(later, 5) >= 1


async def test_stop_commits_and_syncs_what_is_still_waiting(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    database = Database(path)
    await database.start()
    await database.write(_create_table)
    writes = [asyncio.ensure_future(database.write(_insert(b"v"))) for _ in range(50)]
    await asyncio.sleep(0)
    await database.stop()
    assert all(w.done() and not w.exception() for w in writes)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 50


async def test_a_write_waits_for_another_process_lock_only_as_long_as_told(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "l.db")
    patient, hasty = Database(path), Database(path, busy_timeout_ms=50)
    await patient.start()
    await hasty.start()
    try:
        await patient.write(_create_table)
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process (a CLI command) holds the write lock
        # released from another thread: a waiting batch blocks this event loop meanwhile
        release = threading.Timer(0.3, other.execute, ("COMMIT",))
        release.start()
        with pytest.raises(TransientError, match="locked"):
            await hasty.write(_insert(b"too soon"))
        assert await patient.write(_insert(b"waited")) >= 1  # default: waits for the lock
        release.join()
        other.close()
    finally:
        await hasty.stop()
        await patient.stop()


async def test_an_sqlite_too_old_for_the_operations_is_named_at_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The grouped writes use UPDATE ... FROM (3.33) and RETURNING (3.35): an older library
    # would fail at the first batch with a syntax error, so it is refused up front, by name.
    monkeypatch.setattr(engine.sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(engine.sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(
        PermanentError, match=r"needs SQLite 3\.35\.0 or newer.*links SQLite 3\.31\.1"
    ):
        engine.connect(str(tmp_path / "old.db"))
    assert not (tmp_path / "old.db").exists()


async def test_the_watch_on_the_database_file_is_closed_after_its_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # closing any descriptor of the file drops the process's locks on it, the connections'
    # still open included: another process could then switch the journal mode (diff review)
    db = Database(str(tmp_path / "watched.db"))
    await db.start()
    seen = []
    close = db.health.close

    def closed_last() -> None:
        seen.append((db._conn, db._read_conn, db._checkpoint_conn))
        close()

    monkeypatch.setattr(db.health, "close", closed_last)
    await db.stop()
    assert seen == [(None, None, None)]


async def test_no_write_is_answered_stored_once_the_database_file_is_removed(
    tmp_path: Path,
) -> None:
    # receipts and replies went on being acknowledged into a file that vanished at the stop;
    # refused, the SMSC sends them again once the file is recovered and serve restarted
    path = tmp_path / "removed.db"
    db = Database(str(path))
    await db.start()
    try:
        assert await db.write(lambda conn: conn.execute("SELECT 1").fetchone()[0]) == 1
        path.unlink()  # the very next batch looks
        with pytest.raises(TransientError, match="removed or replaced"):
            await db.write(lambda conn: conn.execute("SELECT 1").fetchone()[0])
    finally:
        await db.stop()


def _disk_full(conn: sqlite3.Connection) -> None:
    """An op as a full disk fails it (SQLITE_FULL)."""
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = 13
    raise error


async def test_commits_that_failed_end_with_a_batch_that_wrote_or_the_probe(
    db: Database,
) -> None:
    # A full disk still takes polls that change nothing: each ended the failing, and the
    # next write began it again (159 pairs in 100 s, /health flapping). Now only a batch
    # that wrote ends it, and while batches write nothing a probe writes a row.
    def poll(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE t SET v = v WHERE id < 0")

    with pytest.raises(TransientError, match="disk is full"):
        await db.write(_disk_full)
    assert db.health.failing
    await db.write(poll)
    assert db.health.failing  # (the probe it started runs in a later batch)
    await eventually(lambda: not db.health.failing)  # the probe wrote
    facts = await db.read(lambda c: c.execute("SELECT name FROM gateway_facts").fetchall())
    assert ("store_probe",) in facts


async def _loop_gaps_while(work: asyncio.Future[Any]) -> float:
    """The longest the loop went without a turn while ``work`` ran: a callback that puts
    itself back at each turn notes the time between two of its runs."""
    loop = asyncio.get_running_loop()
    longest, last = 0.0, time.monotonic()

    def turn() -> None:
        nonlocal longest, last
        now = time.monotonic()
        longest, last = max(longest, now - last), now
        if not work.done():
            loop.call_soon(turn)

    loop.call_soon(turn)
    await asyncio.wait([work])
    return longest


@pytest.mark.parametrize("held_s", [0.6, 3.0], ids=["shorter than the wait", "longer"])
async def test_another_processs_write_lock_is_waited_for_with_the_loop_running(
    tmp_path: Path, held_s: float
) -> None:
    # A CLI command holding the write lock for 15 s blocked serve's loop in 2-s slices: no
    # /health, sends answered 14 s late (the soak review). The wait is the same; the loop runs.
    db = Database(str(tmp_path / "e.db"), busy_timeout_ms=2_000)
    await db.start()
    await db.write(_create_table)
    other = sqlite3.connect(tmp_path / "e.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    release = asyncio.get_running_loop().call_later(held_s, other.execute, "COMMIT")
    try:
        started = time.monotonic()
        write = asyncio.ensure_future(db.write(_insert(b"x")))
        longest_gap = await _loop_gaps_while(write)
        if held_s < 2.0:
            assert await write > 0  # stored once the lock went
            assert time.monotonic() - started >= held_s
        else:
            with pytest.raises(TransientError, match="locked"):
                await write
            assert 2.0 <= time.monotonic() - started < 2.5
        assert longest_gap < 0.2
    finally:
        release.cancel()
        other.close()
        await db.stop()


async def test_a_lock_seen_before_another_failure_does_not_shorten_the_next_wait(
    tmp_path: Path,
) -> None:
    # A batch that saw the lock, then failed otherwise (a full disk), kept the lock's first
    # sight: a lock met seconds later failed at once, "database is locked" (the diff review)
    db = Database(str(tmp_path / "e.db"), busy_timeout_ms=2_000)
    await db.start()
    await db.write(_create_table)
    db._locked_since = time.monotonic() - 10.0  # a lock seen long ago by the failing batch
    other = sqlite3.connect(tmp_path / "e.db", isolation_level=None)
    try:
        with pytest.raises(TransientError, match="full"):
            await db.write(_disk_full)
        other.execute("BEGIN IMMEDIATE")  # a short lock, later
        asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
        assert await db.write(_insert(b"x")) > 0  # waited for, and stored
    finally:
        other.close()
        await db.stop()


async def test_a_read_asked_while_the_store_stops_is_refused_not_run_on_a_closed_connection(
    tmp_path: Path,
) -> None:
    # Heavy reads waiting their turn at a stop met the reader's connection closed: a
    # ProgrammingError, a 500 and a traceback each (the fairness review). Refused as a
    # TransientError they are a 503; a read already queued before the close still runs.
    database = Database(str(tmp_path / "e.db"))
    await database.start()
    await database.write(_create_table)
    busy, release = threading.Event(), threading.Event()

    def held(conn: sqlite3.Connection) -> int:
        busy.set()
        release.wait(timeout=10)
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])

    first = asyncio.create_task(database.read(held))
    await eventually(busy.is_set)
    stopping = asyncio.create_task(database.stop())
    await eventually(lambda: database._reader._work_queue.qsize() == 1)  # its close, queued
    late = asyncio.create_task(database.read(lambda conn: 1))
    release.set()
    assert await first == 0
    with pytest.raises(TransientError):
        await late
    await stopping


COUNT_TO_A_BILLION = (
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000000) "
    "SELECT count(*) FROM c"
)


async def test_a_stop_interrupts_a_long_read_after_its_grace_and_its_caller_hears_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A heavy read (minutes here) held the reader's close, and so serve's stop, for its whole
    # run. After the grace it is interrupted: its caller gets a 503, the stop goes on, and the
    # write accepted beside it is committed all the same.
    monkeypatch.setattr(engine, "STOP_READS_WITHIN_S", 0.2, raising=False)
    database = Database(str(tmp_path / "e.db"))
    await database.start()
    await database.write(_create_table)
    reading: list[sqlite3.Connection] = []

    def heavy(conn: sqlite3.Connection) -> int:
        reading.append(conn)
        return int(conn.execute(COUNT_TO_A_BILLION).fetchone()[0])

    read = asyncio.create_task(database.read(heavy))
    try:
        await eventually(lambda: reading)
        write = asyncio.create_task(database.write(_insert(b"kept")))
        await asyncio.wait_for(database.stop(), 15)
        with pytest.raises(TransientError, match="database closing"):
            await asyncio.wait_for(read, 15)
        assert await write > 0
    finally:
        for conn in reading:  # a failed run's read would hold the process's exit for minutes
            with contextlib.suppress(sqlite3.ProgrammingError):
                conn.interrupt()
    check = sqlite3.connect(tmp_path / "e.db")
    try:
        assert check.execute("SELECT v FROM t").fetchall() == [(b"kept",)]
    finally:
        check.close()
