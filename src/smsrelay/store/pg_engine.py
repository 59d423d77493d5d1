"""PostgreSQL access for asyncio: each write is its own SERIALIZABLE transaction on a worker
thread, so several nodes can share one database.

The store's operations were written for SQLite, where one writer runs them one after the
other. SERIALIZABLE keeps that promise across connections and nodes: PostgreSQL lets a set of
concurrent transactions commit only if some one-at-a-time order gives the same result, and
aborts one otherwise (SQLSTATE 40001, or a deadlock): that one is simply run again. Every
operation is a pure function of its connection, so running it again is safe. A write is
answered after its COMMIT, which PostgreSQL makes durable before it returns
(``synchronous_commit`` on, the server's default).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from smsrelay.errors import DomainError, TransientError
from smsrelay.store import pg_schema
from smsrelay.store.sql import Conn, Cursor

T = TypeVar("T")
WRITERS = 4  # concurrent write transactions per node (PostgreSQL group-commits them)
READERS = 2
MAX_TRIES = 30  # serialization conflicts retried before the write fails as transient
CONNECT_TIMEOUT_S = 10
RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
log = logging.getLogger("smsrelay.store")


@lru_cache(maxsize=512)
def to_pg_placeholders(sql: str) -> str:
    """``?`` (sqlite3's placeholder) to ``%s`` (psycopg's), outside quoted literals; a
    literal ``%`` doubled so psycopg does not read it as a placeholder."""
    out, quote = [], ""
    for char in sql:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append("%%" if char == "%" else char)
    return "".join(out)


def _param(value: Any) -> Any:
    # The schema keeps SQLite's 0/1 INTEGER flags; psycopg would send a bool as boolean.
    return int(value) if isinstance(value, bool) else value


class PgConn:
    """A psycopg connection that speaks the ``sql.Conn`` protocol (``?`` placeholders)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return self._conn.execute(to_pg_placeholders(sql), [_param(p) for p in parameters])

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        cursor = self._conn.cursor()
        rows = [[_param(p) for p in row] for row in parameters]
        cursor.executemany(to_pg_placeholders(sql), rows)
        return _Done(cursor.rowcount)


class _Done:
    """What executemany returns: a row count and no rows."""

    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


class PgDatabase:
    """Write and read connections on worker threads, one connection per thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = url  # what logs and messages name the database by
        self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="pg-write")
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="pg-read")
        self._local = threading.local()
        self._open: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._started = False
        # Never set: PostgreSQL owns durability (the SQLite engine's fsync failure has no twin).
        self.broken = asyncio.Event()

    async def start(self) -> list[int]:
        loop = asyncio.get_running_loop()
        applied = await loop.run_in_executor(self._writers, self._upgrade)
        self._started = True
        return applied

    async def stop(self) -> None:
        self._started = False
        self._writers.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()

    async def write(self, fn: Callable[[Conn], T]) -> T:
        return await self._run(self._writers, self._write_in_tx, fn)

    async def read(self, fn: Callable[[Conn], T]) -> T:
        return await self._run(self._readers, self._read_in_tx, fn)

    async def _run(
        self, pool: ThreadPoolExecutor, runner: Callable[[Callable[[Conn], T]], T], fn: Any
    ) -> T:
        if not self._started:
            raise TransientError("database is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, runner, fn)
        except RuntimeError as exc:  # the pool was shut down under us: stopping
            raise TransientError("database is closing") from exc

    # -- on the worker threads -----------------------------------------------------------------

    def _upgrade(self) -> list[int]:
        return pg_schema.upgrade(self._connection())

    def _write_in_tx(self, fn: Callable[[Conn], T]) -> T:
        for attempt in range(MAX_TRIES):
            try:
                return self._transaction(fn, "BEGIN ISOLATION LEVEL SERIALIZABLE")
            except RETRYABLE:
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # let the other finish
        raise TransientError(f"database busy: write conflicted {MAX_TRIES} times in a row")

    def _read_in_tx(self, fn: Callable[[Conn], T]) -> T:
        return self._transaction(fn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _transaction(self, fn: Callable[[Conn], T], begin: str) -> T:
        conn = self._begun(begin)
        try:
            try:
                result = fn(PgConn(conn))
                conn.execute("COMMIT")
            except BaseException:
                if not conn.closed:
                    conn.execute("ROLLBACK")
                raise
            return result
        except RETRYABLE:
            raise  # rolled back, the connection is fine: the caller runs fn again
        except psycopg.DataError as exc:  # SQLSTATE class 22: a value it cannot take (a NUL)
            raise DomainError("data.invalid", f"a value the database refuses: {exc}") from exc
        except psycopg.OperationalError as exc:  # connection lost, server down or restarting
            self._forget(conn)
            raise TransientError(f"database unavailable: {exc}") from exc

    def _begun(self, begin: str) -> psycopg.Connection[Any]:
        """A connection in a new transaction. One the server dropped while it sat idle (a
        restart, an idle timeout) is replaced once: nothing of this write was sent yet."""
        conn = self._connection()
        try:
            conn.execute(begin)
        except psycopg.OperationalError:
            self._forget(conn)
            conn = self._connection()
            try:
                conn.execute(begin)
            except psycopg.OperationalError as exc:
                self._forget(conn)
                raise TransientError(f"database unavailable: {exc}") from exc
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = connect(self.url)
            except psycopg.OperationalError as exc:
                raise TransientError(f"database unavailable: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def _forget(self, conn: psycopg.Connection[Any]) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)
        conn.close()
