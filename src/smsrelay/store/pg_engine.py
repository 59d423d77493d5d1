"""PostgreSQL access for asyncio, so several nodes can share one database.

Writes: as in the SQLite engine, the writes waiting when the writer is free go together in
one transaction (``pg_batch``), here SERIALIZABLE and on the writer thread: one commit per
batch, and within a node no two writes conflict. Between nodes, PostgreSQL commits concurrent
transactions only if some one-at-a-time order gives the same result, and aborts one
otherwise; that batch runs again. So the operations, written for SQLite's single writer,
keep their guarantees across nodes. A write is answered after its COMMIT, which PostgreSQL
makes durable before it returns (``synchronous_commit`` on, the server's default).

Reads: REPEATABLE READ READ ONLY transactions (a snapshot) on reader threads.

Stop: bounded, and never waiting on the event loop's thread (a frozen server held the whole of
``serve``'s stop for as long as it stayed frozen): see ``stop`` and ``pg_open``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg

from smsrelay.errors import MaybeStored, TransientError
from smsrelay.store import pg_schema
from smsrelay.store.answers import resolve_all
from smsrelay.store.health import StoreHealth
from smsrelay.store.pg_batch import BEGIN, CommitUnknown, Op, Outcome, run_batch
from smsrelay.store.pg_conn import CONNECTION_LOST, PgConn, connect
from smsrelay.store.pg_open import OpenConnections, cancel
from smsrelay.store.sql import Conn
from smsrelay.store.stall import StallGuard

T = TypeVar("T")
READERS = 2
MAX_BATCH = 512  # writes per transaction: bounds the work redone after a conflict
# How long to keep asking what became of a COMMIT whose answer was lost (a server that
# restarts comes back within this), and how often.
COMMIT_CHECK_FOR = 30.0
COMMIT_CHECK_EVERY = 0.2
# A read the server has not answered by then is given up (the thread finishes it later).
READ_DEADLINE_S = 15.0
# A stop's limits (within the 10 s systemd's TimeoutStopSec leaves after serve's other steps):
# how long the accepted writes have to commit, how long reads under way have from the stop's
# start, how long a cancel request may take, and the threads to finish once sockets are cut.
STOP_WRITES_WITHIN_S = 5.0
STOP_READS_WITHIN_S = 2.0
STOP_CANCEL_WITHIN_S = 1.0
STOP_THREADS_WITHIN_S = 1.0
log = logging.getLogger("smsrelay.store")


class PgDatabase:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = url  # what logs and messages name the database by
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pg-write")
        self._readers = ThreadPoolExecutor(
            READERS, thread_name_prefix="pg-read", initializer=self._runs_reads
        )
        self._local = threading.local()  # each thread's own connection
        self._open = OpenConnections()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[Op, asyncio.Future[Any]]] = []
        self._out: list[tuple[Op, asyncio.Future[Any]]] = []  # the batch being written
        self._writing = False
        self._gave_up = False  # on the batch out, at a stop: its late outcome is nobody's
        # Set once a stop is past its writes: no new connection, no more asking after a COMMIT.
        self._ending = threading.Event()
        self._idle = asyncio.Event()
        # Never set: PostgreSQL owns durability (the SQLite engine's fsync failure has no twin).
        self.broken = asyncio.Event()
        self.health = StoreHealth(None)  # the server's disk is the server's to watch
        self._stall = StallGuard(self.health, self._refuse_waiting)

    async def start(self, *, only_new: bool = False) -> list[int]:
        self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._writer, self._upgrade, only_new)

    async def stop(self) -> None:
        """Every accepted write committed (up to STOP_WRITES_WITHIN_S: ``_give_up_writes``),
        reads under way given up to STOP_READS_WITHIN_S, then cancelled and their sockets
        cut (their callers get a TransientError); the threads are waited for off the loop."""
        reads_until = time.monotonic() + STOP_READS_WITHIN_S
        try:
            await asyncio.wait_for(self._commit_accepted(), STOP_WRITES_WITHIN_S)
        except TimeoutError:
            self._give_up_writes()
        self._loop = None
        self._ending.set()
        finished = asyncio.ensure_future(asyncio.to_thread(self._finish_threads))
        if not await _done_within(finished, reads_until - time.monotonic()):
            await self._end_queries()
            if not await _done_within(finished, STOP_THREADS_WITHIN_S):
                # one still connecting (CONNECT_TIMEOUT_S) or busy outside the server: freeing
                # its connection under it could crash the process; its exit frees them all.
                # The process's exit waits for it (asyncio.run joins _finish_threads), but no
                # longer than its connect: connected after the cut, it runs nothing (pg_open)
                log.error("store.stop.threads_left", extra={"seconds": STOP_THREADS_WITHIN_S})
                return
        self._open.close_all()

    async def _commit_accepted(self) -> None:
        while self._writing or self._outbox:
            self._idle.clear()
            self._next_batch()
            await self._idle.wait()

    def _give_up_writes(self) -> None:
        """The batch out has not committed in STOP_WRITES_WITHIN_S (a frozen or cut-off server,
        a lock held): the stop goes on without it, or it would wait as long. A write is
        answered only after its COMMIT, so none of these was answered as stored, and giving up
        loses nothing a client was told is stored. The batch out is answered as maybe stored
        (its COMMIT may still land when the server wakes), as a COMMIT whose answer was lost
        is; the writes behind it as not stored (never run)."""
        out, self._out = self._out, []
        waiting, self._outbox = self._outbox, []
        self._gave_up = True
        self._stall.cancel()  # the gateway is stopping: no "stalled" after it
        log.error("store.stop.writes_given_up", extra={"out": len(out), "waiting": len(waiting)})
        late = f"database closing: a commit did not come back in {STOP_WRITES_WITHIN_S:g} s"
        unsure = MaybeStored(f"{late} (the write may be stored)")
        unrun = TransientError(f"{late} (nothing of this write was stored)")
        resolve_all([(f, None, unsure) for _, f in out] + [(f, None, unrun) for _, f in waiting])

    async def _end_queries(self) -> None:
        """Reads still running cancelled on the server, then every socket cut: a frozen server
        takes no cancel request, and its threads wait on their sockets until the cut."""
        running = self._open.running_reads()
        await asyncio.gather(
            *(asyncio.to_thread(cancel, conn, STOP_CANCEL_WITHIN_S) for conn in running)
        )
        self._open.cut()

    async def write(self, fn: Callable[[Conn], T]) -> T:
        if self._loop is None:
            raise TransientError("database is not open")
        if self._stall.stalled:
            raise self._stall.refusal()
        future: asyncio.Future[T] = self._loop.create_future()
        if not self._outbox and not self._writing:
            # once per loop turn, as SQLite's engine does: the writes made in this turn go
            # together, rather than the first alone and the rest in the next transaction
            self._loop.call_soon(self._next_batch)
        self._outbox.append((fn, future))
        return await future

    async def read(self, fn: Callable[[Conn], T]) -> T:
        """``fn`` in a snapshot; refused at once while commits are stalled, and after
        READ_DEADLINE_S when the server does not answer (a frozen server held a send's key
        lookup for the whole freeze; a read changes nothing, so giving up on it is safe)."""
        if self._loop is None:
            raise TransientError("database is not open")
        if self._stall.stalled:
            raise self._stall.refusal()
        reading = self._loop.run_in_executor(self._readers, self._read_in_snapshot, fn)
        try:
            return await asyncio.wait_for(reading, READ_DEADLINE_S)
        except TimeoutError:
            raise TransientError(
                f"database unavailable: a read got no answer in {READ_DEADLINE_S:g} s"
            ) from None

    # -- on the event loop ---------------------------------------------------------------------

    def _next_batch(self) -> None:
        if self._writing:
            return  # its end starts the next batch
        if not self._outbox or self._loop is None:
            self._idle.set()
            return
        batch, self._outbox = self._outbox[:MAX_BATCH], self._outbox[MAX_BATCH:]
        self._out = batch
        self._writing = True
        self._stall.began(self._loop)
        done = self._loop.run_in_executor(self._writer, self._write, [fn for fn, _ in batch])
        done.add_done_callback(lambda finished: self._answer(finished, batch))

    def _answer(
        self, finished: asyncio.Future[list[Outcome]], batch: list[tuple[Op, asyncio.Future[Any]]]
    ) -> None:
        if self._gave_up:  # answered by the stop: no health to keep, nor lines after it
            log.debug("store.stop.late_outcome", extra={"failed": finished.exception() is not None})
            return
        self._stall.ended()
        self._out = []
        failure = finished.exception()
        outcomes = finished.result() if failure is None else [(None, failure)] * len(batch)
        if failure is None:
            self.health.batch_stored()
        else:
            self.health.batch_failed(str(failure))
        futures = (future for _, future in batch)
        resolve_all([(f, *outcome) for f, outcome in zip(futures, outcomes, strict=True)])
        self._writing = False
        self._next_batch()  # what arrived meanwhile: the next group

    def _refuse_waiting(self, refusal: TransientError) -> None:
        """The batch out has stalled: the writes behind it were never run (see ``stall``)."""
        waiting, self._outbox = self._outbox, []
        resolve_all([(future, None, refusal) for _, future in waiting])

    # -- on the worker threads -----------------------------------------------------------------

    def _runs_reads(self) -> None:
        self._local.reads = True

    def _finish_threads(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)  # the reads queued still run: each gets an answer

    def _upgrade(self, only_new: bool) -> list[int]:
        return pg_schema.upgrade(self._connection(), only_new=only_new)

    def _write(self, ops: list[Op]) -> list[Outcome]:
        conn = self._begun(BEGIN)
        try:
            return run_batch(conn, ops)
        except CommitUnknown as unknown:
            self._forget(conn)
            if self._committed(unknown.xid):
                return unknown.outcomes
            raise TransientError(f"database unavailable, nothing stored: {unknown}") from None
        except CONNECTION_LOST as exc:  # connection lost, server down or restarting
            self._forget(conn)
            raise TransientError(f"database unavailable: {exc}") from exc
        finally:
            if conn.closed:  # by a failed batch's release (pg_batch): the socket's copy too
                self._forget(conn)

    def _committed(self, xid: int) -> bool:
        """Whether transaction ``xid`` committed, asked on a new connection until the server
        knows (it ends a transaction whose client is gone). Not knowing by the deadline is a
        failure that says so: the writes may be stored."""
        deadline = time.monotonic() + COMMIT_CHECK_FOR
        while True:
            status = self._xact_status(xid)
            if status in ("committed", "aborted"):
                return status == "committed"
            if time.monotonic() > deadline or self._ending.is_set():
                raise MaybeStored(
                    f"database unavailable: whether transaction {xid} committed is unknown "
                    "(the writes may be stored)"
                )
            self._ending.wait(COMMIT_CHECK_EVERY)

    def _xact_status(self, xid: int) -> str | None:
        """'committed', 'aborted', 'in progress', or None when the server cannot be asked."""
        try:
            conn = self._connection()
        except TransientError:
            return None
        try:
            row = conn.execute("SELECT txid_status(%s)", (xid,)).fetchone()
        except CONNECTION_LOST:
            self._forget(conn)
            return None
        return None if row is None else str(row[0])

    def _read_in_snapshot(self, fn: Callable[[Conn], T]) -> T:
        conn = self._begun("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            try:
                return fn(PgConn(conn))
            finally:
                conn.execute("COMMIT")
        except CONNECTION_LOST as exc:
            self._forget(conn)
            if self._ending.is_set():
                raise TransientError("database closing: a read under way was given up") from exc
            raise TransientError(f"database unavailable: {exc}") from exc

    def _begun(self, begin: str) -> psycopg.Connection[Any]:
        """This thread's connection, in a new transaction. One the server dropped while it
        sat idle (a restart, an idle timeout) is replaced once: nothing was sent on it yet."""
        for last in (False, True):
            conn = self._connection()
            try:
                conn.execute(begin)
                return conn
            except CONNECTION_LOST as exc:
                self._forget(conn)
                if last:
                    raise TransientError(f"database unavailable: {exc}") from exc
        raise AssertionError("unreachable")

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        if conn is not None:  # closed under us: its socket's copy (pg_open) closed too
            self._forget(conn)
        if self._ending.is_set():
            raise TransientError("database closing")
        try:
            conn = connect(self.url)
        except CONNECTION_LOST as exc:
            raise TransientError(f"database unavailable: {exc}") from exc
        try:
            taken = self._open.add(conn, reads=getattr(self._local, "reads", False))
        except OSError as exc:  # no descriptor left for the socket's copy
            conn.close()
            raise TransientError(f"database unavailable: {exc}") from exc
        if not taken:  # still connecting when the stop cut the others
            conn.close()
            raise TransientError("database closing")
        self._local.conn = conn
        return conn

    def _forget(self, conn: psycopg.Connection[Any]) -> None:
        if getattr(self._local, "conn", None) is conn:  # not a newer one (see _committed)
            self._local.conn = None
        self._open.close(conn)


async def _done_within(work: asyncio.Future[None], seconds: float) -> bool:
    await asyncio.wait({work}, timeout=max(seconds, 0.0))
    return work.done()
