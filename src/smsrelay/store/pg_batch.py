"""One batch of writes in one SERIALIZABLE transaction (on the PostgreSQL writer thread).

As in the SQLite engine, the writes waiting together run in one transaction, so a node
commits (and so waits for the server's WAL flush) once per batch, not once per write. If
one write refuses (a DomainError, say), the batch is run again with a savepoint around each,
so only that one fails. If PostgreSQL aborts the transaction for a conflict with another
node's (SQLSTATE 40001, or a deadlock), the whole batch runs again: each write is a pure
function of its connection, so running it again is safe.

Some conflicts PostgreSQL finds only at COMMIT; that refusal (an OperationalError, like a
lost connection) is a conflict too: nothing was stored, and the batch runs again.

Running again does not promise progress: a big batch can lose to another node's small ones
many times in a row (seven, on a loaded machine). So every batch holds a shared advisory lock
for its transaction, and a batch that lost (``ALONE_AFTER`` times) takes that lock exclusively
before it begins again: the other nodes' batches in progress finish, new ones wait, and it
runs with no concurrent writer, so it cannot conflict again.

A COMMIT whose answer is lost with the connection may or may not have committed: the batch
raises ``CommitUnknown`` with its transaction id, and the engine asks the server (on a new
connection) what became of it, so a write that was stored is not answered as failed (a
client would send it again: a duplicate at the handset).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from smsrelay.errors import DomainError, TransientError
from smsrelay.store import grouped
from smsrelay.store.pg_conn import CONNECTION_LOST, PgConn
from smsrelay.store.sql import Conn

Op = Callable[[Conn], Any]
Outcome = tuple[Any, BaseException | None]
RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
MAX_TRIES = 30  # conflicts in a row before the batch fails as transient
# Conflicts before the batch holds the other nodes' writes off. One: two nodes on one hot
# account conflict on most batches, and each lost run is a whole batch's work thrown away
# (bench/bench_nodes.py: e2e 680-698 msg/s at 1 against 484-552 at 3, p99 0.3 s against 1.4).
ALONE_AFTER = 1
WRITE_LOCK = 0x5353_7265_6C62  # any constant, one per database: the upgrade lock's neighbour
BEGIN_ALONE = "BEGIN ISOLATION LEVEL SERIALIZABLE"
# One round trip (no parameters: the simple query protocol takes both statements).
BEGIN = f"{BEGIN_ALONE}; SELECT pg_advisory_xact_lock_shared({WRITE_LOCK})"
log = logging.getLogger("smsrelay.store")


class CommitUnknown(Exception):
    """The connection failed during COMMIT: transaction ``xid`` may have committed."""

    def __init__(self, xid: int, outcomes: list[Outcome], cause: Exception) -> None:
        super().__init__(f"COMMIT of transaction {xid} unanswered: {cause}")
        self.xid = xid
        self.outcomes = outcomes


def run_batch(conn: psycopg.Connection[Any], ops: list[Op]) -> list[Outcome]:
    """Every op's result or exception; raises only if the connection itself failed. The
    caller has begun the first transaction (``BEGIN``)."""
    alone = False
    try:
        for attempt in range(MAX_TRIES):
            if attempt == ALONE_AFTER:
                # frequent ones say the nodes contend for the same rows (one account's credit)
                log.warning("store.batch.run_alone", extra={"writes": len(ops)})
                conn.execute(f"SELECT pg_advisory_lock({WRITE_LOCK})")  # outside a transaction
                alone = True
            begin = BEGIN_ALONE if alone else BEGIN
            try:
                if attempt:
                    conn.execute(begin)
                return _once(conn, ops, begin)
            except RETRYABLE:
                _rollback(conn)
                if attempt + 1 != ALONE_AFTER:  # else waiting for the lock lets the others finish
                    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
    finally:
        if alone:
            _release(conn)
    busy = TransientError(f"database busy: a write conflicted {MAX_TRIES} times in a row")
    return [(None, busy) for _ in ops]


def _once(conn: psycopg.Connection[Any], ops: list[Op], begin: str) -> list[Outcome]:
    wrapped = PgConn(conn)
    try:
        outcomes: list[Outcome] = grouped.run_all(wrapped, ops)
    except RETRYABLE:
        raise
    except CONNECTION_LOST:
        raise  # the connection failed: the caller answers every op
    except Exception:  # an op's own refusal
        conn.execute("ROLLBACK")
        conn.execute(begin)
        outcomes = [_isolated(conn, wrapped, op) for op in ops]
    row = conn.execute("SELECT txid_current()").fetchone()
    xid = int(row[0]) if row is not None else 0
    try:
        commit(conn)
    except RETRYABLE:
        raise  # refused at COMMIT (SSI finds some conflicts only then): nothing stored
    except CONNECTION_LOST as exc:  # RETRYABLE's base class: caught after it
        raise CommitUnknown(xid, outcomes, exc) from exc
    return outcomes


def commit(conn: psycopg.Connection[Any]) -> None:
    conn.execute("COMMIT")


def _isolated(conn: psycopg.Connection[Any], wrapped: PgConn, op: Op) -> Outcome:
    conn.execute("SAVEPOINT op")
    try:
        result = op(wrapped)
    except RETRYABLE:
        raise
    except CONNECTION_LOST:
        raise
    except Exception as exc:
        conn.execute("ROLLBACK TO SAVEPOINT op")
        conn.execute("RELEASE SAVEPOINT op")
        return None, _as_refusal(exc)
    conn.execute("RELEASE SAVEPOINT op")
    return result, None


def _as_refusal(exc: Exception) -> Exception:
    if isinstance(exc, psycopg.DataError):  # SQLSTATE class 22: a value it cannot take (NUL)
        return DomainError("data.invalid", f"a value the database refuses: {exc}")
    return exc


def _release(conn: psycopg.Connection[Any]) -> None:
    """Let the other nodes write again, whatever stopped the batch. A transaction the failure
    left open is rolled back first (in a failed one the unlock itself would be refused); if
    the unlock still fails, the connection is closed: the server drops a session's locks with
    the session, so the lock never outlives the batch and no node waits for it for good."""
    if conn.closed:
        return
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        conn.execute(f"SELECT pg_advisory_unlock({WRITE_LOCK})")
    except psycopg.Error:
        conn.close()


def _rollback(conn: psycopg.Connection[Any]) -> None:
    if not conn.closed:
        conn.execute("ROLLBACK")  # a warning only when no transaction is open
