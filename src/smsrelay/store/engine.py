"""SQLite access for asyncio: writes run on the event loop's thread, made durable off it.

Every write is a function ``fn(conn) -> T``. The writes waiting when the loop gets to them run
in one transaction (no savepoints unless one refuses: then the batch is redone with one per
write, so the others stand), which commits to the WAL without an fsync (``synchronous=NORMAL``).
A syncer thread then fdatasyncs the WAL file, and only then are the writes' futures resolved:
an awaited write is on disk (survives power loss, as ``synchronous=FULL`` would) before the
caller hears of it. Writes that arrive during the sync wait and go together in the next batch
(group commit). Running the SQL on the loop's thread instead of a writer thread saves handing
the GIL back and forth at every statement, which held the process at ~85 % of a core; the fsync,
which releases the GIL, runs beside the loop.

About once a second the syncer also checkpoints (its own connection), while no transaction is
open: the WAL is copied to the end and restarts instead of growing. A failed fsync breaks the
Database for good (every later write is refused, ``broken`` is set): see ``Database.broken``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from smsrelay.errors import MaybeStored, PermanentError, TransientError
from smsrelay.store import grouped, schema
from smsrelay.store.answers import Outcomes, resolve_all
from smsrelay.store.health import MIB, StoreHealth
from smsrelay.store.private_files import create_private_file, make_private_folder
from smsrelay.store.sql import Conn
from smsrelay.store.stall import StallGuard

T = TypeVar("T")
Op = Callable[[Conn], Any]
CHECKPOINT_EVERY_S = 1.0
PROBE_EVERY_S = 1.0  # while commits fail and batches write nothing (see _probe_soon)
# Primary result codes that say the database cannot be written now (busy, locked, out of
# memory, read-only, I/O error, full, cannot open, lock protocol), whatever the write: raised
# inside one write, they fail its batch as transient. Any other (SQLITE_ERROR: no such
# column, too many variables) is that write's own bug, failed alone, or it would fail every
# batch it joins for as long as its caller retries.
DATABASE_STATE_ERRORS = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
SQLITE_BUSY = 5
MAX_BATCH = 1024  # writes per transaction: bounds how long one batch holds the loop
# Statements kept prepared per connection (the module's default is 128): each grouped write
# has a text per row count of ``grouped.ROUNDED`` (17), and there are about 15 of them.
STATEMENT_CACHE = 1024
# How long a batch waits for another process's write lock (a CLI command) before it fails as
# transient. The CLI can wait; `serve` passes SERVING_BUSY_TIMEOUT_MS, because its batches run
# on the event loop's thread and a long wait would stall HTTP and SMPP (503s, retried, instead).
DEFAULT_BUSY_TIMEOUT_MS = 30_000
SERVING_BUSY_TIMEOUT_MS = 2_000
# ...waited for in short tries on the loop's thread, the loop running between them: one wait
# of the whole timeout blocked HTTP and SMPP as long (a 15-s lock: /health unanswered for
# seconds at a time, sends answered 14 s late: the soak review).
LOCK_TRY_MS = 20
LOCK_RETRY_S = 0.05
# A stop gives reads under way this long from its start, then interrupts them (a heavy read held
# the reader's close, and so serve's stop, for its whole run); queued ones are interrupted in
# turn, every INTERRUPT_EVERY_S, until the close runs. The writer's batches are never
# interrupted: accepted writes commit.
STOP_READS_WITHIN_S = 2.0
INTERRUPT_EVERY_S = 0.05
SQLITE_INTERRUPT = 9
log = logging.getLogger("smsrelay.store")


# RETURNING (3.35) and UPDATE ... FROM (3.33), which the operations use.
MIN_SQLITE = (3, 35, 0)


def connect(path: str) -> sqlite3.Connection:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise PermanentError(
            f"smsrelay needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this Python "
            f"links SQLite {sqlite3.sqlite_version}"
        )
    if path != ":memory:":
        make_private_folder(Path(path).parent)
        create_private_file(path)  # its -wal and -shm copy its mode: private too
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        timeout=30.0,
        cached_statements=STATEMENT_CACHE,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL for any connection that commits on its own (migrations, the checkpointer); the
    # write connection switches to NORMAL because the Database fsyncs the WAL itself.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-32000")
    return conn


def path_from_url(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url}")
    return url.removeprefix("sqlite:///") or ":memory:"


def _sync_directory(folder: str) -> None:
    """fsync a folder, so a file just created in it survives a power loss (fdatasync of the
    file itself does not cover its directory entry on every filesystem)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Database:
    """The write connection (event loop's thread), the syncer thread and the reader thread."""

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        min_free_mb: int = 0,
    ) -> None:
        # The real file: SQLite follows a symlink for its -wal, and so must we (and the lock).
        self.path = path if path == ":memory:" else os.path.realpath(path)
        self._busy_timeout_ms = busy_timeout_ms
        folder = None if path == ":memory:" else os.path.dirname(self.path)
        self.health = StoreHealth(folder, min_free_mb * MIB)
        self._conn: sqlite3.Connection | None = None
        self._wal_fd: int | None = None  # fdatasync'd after each commit (None: in memory)
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-sync")
        self._checkpoint_conn: sqlite3.Connection | None = None  # used on the syncer only
        self._last_checkpoint = 0.0
        self._checkpoint_failing = False  # logged when it starts failing, not each time
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        self._read_conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[Op, asyncio.Future[Any]]] = []  # writes waiting for a batch
        self._syncing = False  # a commit's fsync (then maybe a checkpoint) is in flight: hold
        self._settled = asyncio.Event()
        # Set for good when an fsync fails: after that the kernel may have dropped pages it
        # reported written, so no later write can be promised durable (fail-stop, as
        # PostgreSQL does since "fsyncgate"); `serve` stops and exits, a restart recovers.
        self.broken = asyncio.Event()
        self._broken_by: BaseException | None = None
        self._stall = StallGuard(self.health, self._refuse_waiting)  # a sync that hangs
        self._probed_at = float("-inf")
        self._probes: set[asyncio.Task[None]] = set()
        self._locked_since: float | None = None  # another process's write lock, seen first
        self._lock_retry: asyncio.TimerHandle | None = None  # the next try for it

    async def start(self, *, only_new: bool = False) -> list[int]:
        """Open the connections and upgrade the schema; returns the migrations applied."""
        self._loop = asyncio.get_running_loop()
        conn = connect(self.path)
        applied = schema.upgrade(conn, only_new=only_new)
        conn.execute(f"PRAGMA busy_timeout={min(LOCK_TRY_MS, int(self._busy_timeout_ms))}")
        if self.path != ":memory:":
            # We fdatasync the WAL after each commit, so NORMAL loses nothing FULL keeps.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the syncer checkpoints
            self._wal_fd = os.open(self.path + "-wal", os.O_RDONLY)
            _sync_directory(os.path.dirname(self.path))  # the -wal file's own entry, once
            self._checkpoint_conn = await self._loop.run_in_executor(
                self._syncer, connect, self.path
            )
            self._last_checkpoint = time.monotonic()
        self._conn = conn
        self._read_conn = await self._loop.run_in_executor(self._reader, connect, self.path)
        if self.path != ":memory:":
            self.health.watch_file(self.path)
        return applied

    async def stop(self) -> None:
        reads_until = time.monotonic() + STOP_READS_WITHIN_S
        if self._conn is not None:
            while self._outbox or self._syncing:  # every accepted write committed and synced
                self._settled.clear()
                self._run_batch()
                if self._syncing:
                    await self._settled.wait()
                elif self._lock_retry is not None:  # another process's lock: its next try
                    await asyncio.sleep(LOCK_RETRY_S)
            self._conn.close()
            self._conn = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        loop = asyncio.get_running_loop()
        if self._checkpoint_conn is not None:  # (read on the syncer: None once closed there)
            await loop.run_in_executor(self._syncer, self._checkpoint_conn.close)
            self._checkpoint_conn = None
        if (reads := self._read_conn) is not None:
            # None first: a read asked from now on is refused at once (TransientError, a
            # 503), where one queued behind the close met a closed connection (a 500 and a
            # traceback per request waiting its turn at a stop); those queued before it run
            self._read_conn = None
            closed = loop.run_in_executor(self._reader, reads.close)
            await _close_reads(reads, closed, reads_until)
        # Last: closing any descriptor of the database file drops every lock this process
        # holds on it (POSIX), the open connections' included.
        self.health.close()
        self._syncer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    async def write(self, fn: Callable[[Conn], T]) -> T:
        """``fn``'s result once its batch is committed and, if the batch changed a row,
        synced (schema changes are made by ``start``'s migrations, not by writes)."""
        if self._conn is None:
            raise TransientError("database is not open")
        if self._broken_by is not None:
            raise self._refusal()
        if self._stall.stalled:
            raise self._stall.refusal()
        loop = self._loop  # not get_running_loop(): on 3.11 each call is a getpid syscall
        assert loop is not None  # set by start(), with the connection
        future: asyncio.Future[T] = loop.create_future()
        if not self._outbox and not self._syncing:
            loop.call_soon(self._run_batch)  # once per loop turn; after a sync, _synced runs it
        self._outbox.append((fn, future))
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._read_conn
        if conn is None:
            raise TransientError("database is not open")
        loop = self._loop or asyncio.get_running_loop()  # kept: a getpid syscall on 3.11
        return await loop.run_in_executor(self._reader, _read_in_snapshot, conn, fn)

    # -- on the event loop -------------------------------------------------------------------

    def _run_batch(self) -> None:
        """Run and commit the waiting writes, then hand the fsync to the syncer."""
        if self._syncing or not self._outbox or self._conn is None or self._lock_retry:
            return
        # Before each batch: a write into a file removed under us would vanish at the stop
        # (receipts and replies refused then are sent again by the SMSC).
        if self._broken_by is not None or self.health.file_gone():
            refusal, waiting, self._outbox = self._refusal(), self._outbox, []
            resolve_all([(future, None, refusal) for _, future in waiting])
            return
        batch, self._outbox = self._outbox[:MAX_BATCH], self._outbox[MAX_BATCH:]
        changes_before = self._conn.total_changes
        try:
            outcomes = _run_plain(self._conn, batch)
            if outcomes is None:  # an op refused: redo the batch with one savepoint per op
                outcomes = _run_isolated(self._conn, batch)
        except sqlite3.Error as exc:
            _rollback_quietly(self._conn)
            if self._wait_for_the_lock(exc, batch):
                return
            self._locked_since = None  # a lock seen later is waited for afresh
            log.debug("store.commit.failed", extra={"error": str(exc)})  # store.failing: once
            self.health.batch_failed(str(exc))
            error = TransientError(f"database commit failed: {exc}")
            resolve_all([(future, None, error) for _, future in batch])
            self._run_later()
            return
        self._locked_since = None
        wrote = self._conn.total_changes != changes_before
        self.health.batch_stored(wrote=wrote)
        if not wrote and self.health.failing:
            self._probe_soon()
        # In memory, or a batch that changed no row (claims that found nothing: an idle
        # gateway's polls, ~10 a second): nothing was written to sync.
        if self._wal_fd is None or not wrote:
            resolve_all(outcomes)
            self._run_later()
            return
        assert self._loop is not None
        self._syncing = True
        self._stall.began(self._loop)
        synced = self._loop.run_in_executor(self._syncer, os.fdatasync, self._wal_fd)
        synced.add_done_callback(lambda done: self._synced(done, outcomes))

    def _wait_for_the_lock(self, error: sqlite3.Error, batch: list[tuple[Op, Any]]) -> bool:
        """Another process holds the write lock (a CLI command): the batch goes back to the
        front and is tried again shortly, the loop running meanwhile, until the busy timeout
        has passed since the lock was first seen; False once it has (the batch then fails)."""
        if not (isinstance(error, sqlite3.OperationalError) and _busy(error)):
            return False
        now = time.monotonic()
        if self._locked_since is None:
            self._locked_since = now
        if now - self._locked_since >= self._busy_timeout_ms / 1000 or self._loop is None:
            self._locked_since = None  # the next batch waits its own while
            return False
        self._outbox[:0] = batch
        self._lock_retry = self._loop.call_later(LOCK_RETRY_S, self._retry_after_lock)
        return True

    def _retry_after_lock(self) -> None:
        self._lock_retry = None
        self._run_batch()

    def _probe_soon(self) -> None:
        """Commits failed, and batches since wrote nothing (polls: a full disk takes those):
        a write that changes a row, at most once a second, tells whether it takes writes
        again, so an idle gateway's /health recovers too."""
        now = time.monotonic()
        if now - self._probed_at < PROBE_EVERY_S or self._loop is None:
            return
        self._probed_at = now
        task = self._loop.create_task(self._probe())
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self) -> None:
        with contextlib.suppress(TransientError):
            await self.write(_write_probe)

    def _synced(self, done: asyncio.Future[None], outcomes: Outcomes) -> None:
        error = done.exception()
        if error is not None:
            log.critical("store.sync.failed", extra={"error": str(error)})
            self._broken_by = error
            self.broken.set()
            failure = MaybeStored(f"database sync failed: {error}")  # committed, unsynced
            outcomes = [(future, None, failure) for future, _, _ in outcomes]
        resolve_all(outcomes)  # answered now: the checkpoint below is not their business
        if error is None and time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY_S:
            assert self._loop is not None
            # Writes stay held meanwhile: copied to its end with no transaction open, the WAL
            # restarts instead of growing.
            checkpointed = self._loop.run_in_executor(self._syncer, self._checkpoint)
            checkpointed.add_done_callback(self._checkpointed)
            return
        self._resume()

    def _checkpointed(self, _: asyncio.Future[None]) -> None:
        self._last_checkpoint = time.monotonic()
        self._resume()

    def _resume(self) -> None:
        self._stall.ended()
        self._syncing = False
        self._run_batch()  # what arrived during the sync: the next group
        self._settled.set()

    def _refusal(self) -> TransientError:
        if self._broken_by is None:
            return TransientError(
                "the database file was removed or replaced while serving: recover it, then "
                "restart smsrelay"
            )
        return TransientError(
            f"database unusable since an fsync failed ({self._broken_by}): restart smsrelay"
        )

    def _refuse_waiting(self, refusal: TransientError) -> None:
        """The sync (or checkpoint) out has stalled: the writes behind it never ran."""
        waiting, self._outbox = self._outbox, []
        resolve_all([(future, None, refusal) for _, future in waiting])

    def _run_later(self) -> None:
        if self._outbox and self._loop is not None:
            self._loop.call_soon(self._run_batch)  # past MAX_BATCH, or after a failed batch

    # -- on the syncer thread ----------------------------------------------------------------

    def _checkpoint(self) -> None:
        if self._checkpoint_conn is None:
            return
        try:
            self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # what was committed is synced all the same; retried later
            if not self._checkpoint_failing:  # once, not every second of a full disk
                log.warning("store.checkpoint.failed", extra={"error": str(exc)})
            self._checkpoint_failing = True
        else:
            self._checkpoint_failing = False


def _run_plain(conn: sqlite3.Connection, batch: list[tuple[Op, Any]]) -> Outcomes | None:
    """The common case, every op succeeds (or a grouped one refuses, having written nothing): no
    savepoints. None (rolled back) if one raised."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = grouped.run_all(conn, [fn for fn, _ in batch])
    except Exception:
        conn.execute("ROLLBACK")
        return None
    conn.execute("COMMIT")
    return [(future, *outcome) for (_, future), outcome in zip(batch, done, strict=True)]


def _run_isolated(conn: sqlite3.Connection, batch: list[tuple[Op, Any]]) -> Outcomes:
    conn.execute("BEGIN IMMEDIATE")
    outcomes: Outcomes = [(future, *_run_one(conn, fn)) for fn, future in batch]
    conn.execute("COMMIT")
    return outcomes


def _run_one(conn: sqlite3.Connection, fn: Op) -> tuple[Any, BaseException | None]:
    conn.execute("SAVEPOINT op")
    try:
        result = fn(conn)
    except Exception as exc:  # the op's own refusal (or bug): undo it alone, keep the batch
        if isinstance(exc, sqlite3.OperationalError) and _database_state(exc):
            raise  # not the op's fault: the batch fails as transient and is retried
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return None, exc
    conn.execute("RELEASE op")
    return result, None


def _write_probe(conn: Conn) -> None:
    conn.execute(
        "INSERT INTO gateway_facts (name, value) VALUES ('store_probe', ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (str(time.time()),),
    )


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_BUSY


def _database_state(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", 1) & 0xFF in DATABASE_STATE_ERRORS


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


async def _close_reads(
    reads: sqlite3.Connection, closed: asyncio.Future[None], reads_until: float
) -> None:
    """Waits for the reader's close; the reads ahead of it still running at ``reads_until``
    are interrupted (their callers get a TransientError) until it runs. interrupt() is safe
    from another thread, and refused once the connection is closed."""
    await asyncio.wait({closed}, timeout=max(reads_until - time.monotonic(), 0.0))
    while not closed.done():
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed meanwhile
            reads.interrupt()
        await asyncio.wait({closed}, timeout=INTERRUPT_EVERY_S)
    await closed


def _read_in_snapshot(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    try:
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != SQLITE_INTERRUPT:
            raise
        # interrupted by a stop (_close_reads), maybe at its COMMIT: the next read needs
        # no snapshot left open
        _rollback_quietly(conn)
        raise TransientError("database closing: a read under way was given up") from exc
