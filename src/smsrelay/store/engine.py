"""SQLite access for asyncio: one writer thread with group commit, one reader thread.

Every write is a function ``fn(conn) -> T`` run inside a transaction on the writer thread. The
writer takes whatever writes are waiting, runs each under its own SAVEPOINT (so one refused write
does not undo its neighbours), commits them together and only then resolves their futures: an
awaited write is durable (WAL + synchronous=FULL) before the caller hears of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from smsrelay.errors import TransientError
from smsrelay.store import schema

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
_STOP = object()
MAX_BATCH = 1024
log = logging.getLogger("smsrelay.store")


def connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the commit we acknowledge survives power loss, not only a process crash.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-32000")
    return conn


def path_from_url(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url}")
    return url.removeprefix("sqlite:///") or ":memory:"


class Database:
    """The writer and reader threads around one SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        self._read_conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[Op, asyncio.Future[Any]]] = []  # this loop turn's writes

    async def start(self) -> list[int]:
        """Open both connections and upgrade the schema; returns the migrations applied."""
        self._loop = asyncio.get_running_loop()
        write_conn = connect(self.path)
        applied = schema.upgrade(write_conn)
        self._writer = threading.Thread(
            target=self._write_loop, args=(write_conn,), name="sqlite-writer", daemon=True
        )
        self._writer.start()
        self._read_conn = await self._loop.run_in_executor(self._reader, connect, self.path)
        return applied

    async def stop(self) -> None:
        if self._writer is not None:
            if self._outbox:
                self._hand_over()
            self._queue.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._read_conn is not None:
            conn = self._read_conn
            await asyncio.get_running_loop().run_in_executor(self._reader, conn.close)
            self._read_conn = None
        self._reader.shutdown(wait=True)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise TransientError("database is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._outbox:
            loop.call_soon(self._hand_over)
        self._outbox.append((fn, future))
        return await future

    def _hand_over(self) -> None:
        """One queue item (one wake-up of the writer) per loop turn, not one per write."""
        ops, self._outbox = self._outbox, []
        if ops:
            self._queue.put(ops)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._read_conn
        if conn is None:
            raise TransientError("database is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, _read_in_snapshot, conn, fn)

    # -- writer thread -------------------------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _next_batch(self) -> tuple[list[tuple[Op, asyncio.Future[Any]]], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = list(first)
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.extend(item)
        return batch, False

    def _run_batch(self, conn: sqlite3.Connection, batch: list[tuple[Op, Any]]) -> None:
        try:
            outcomes = _run_plain(conn, batch)
            if outcomes is None:  # an op refused: redo the batch with one savepoint per op
                outcomes = _run_isolated(conn, batch)
        except sqlite3.Error as exc:
            log.error("store.commit.failed", extra={"error": str(exc)})
            _rollback_quietly(conn)
            error = TransientError(f"database commit failed: {exc}")
            outcomes = [(future, None, error) for _, future in batch]
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve_all, outcomes)


Outcomes = list[tuple[asyncio.Future[Any], Any, BaseException | None]]


def _run_plain(conn: sqlite3.Connection, batch: list[tuple[Op, Any]]) -> Outcomes | None:
    """The common case, every op succeeds: no savepoints. None (rolled back) if one raised."""
    conn.execute("BEGIN IMMEDIATE")
    outcomes: Outcomes = []
    for fn, future in batch:
        try:
            outcomes.append((future, fn(conn), None))
        except Exception:
            conn.execute("ROLLBACK")
            return None
    conn.execute("COMMIT")
    return outcomes


def _run_isolated(conn: sqlite3.Connection, batch: list[tuple[Op, Any]]) -> Outcomes:
    conn.execute("BEGIN IMMEDIATE")
    outcomes: Outcomes = [(future, *_run_one(conn, fn)) for fn, future in batch]
    conn.execute("COMMIT")
    return outcomes


def _run_one(conn: sqlite3.Connection, fn: Op) -> tuple[Any, BaseException | None]:
    conn.execute("SAVEPOINT op")
    try:
        result = fn(conn)
    except Exception as exc:  # the op's own refusal: undo it alone, keep the batch
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return None, exc
    conn.execute("RELEASE op")
    return result, None


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _resolve_all(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _read_in_snapshot(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")
