"""A psycopg connection that speaks the store's ``sql.Conn`` protocol (``?`` placeholders)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from smsrelay.store.sql import Cursor

CONNECT_TIMEOUT_S = 10
# A node frozen in a transaction (a paused VM, SIGSTOP) keeps its locks: its rows, and the
# shared write lock every batch holds, which a batch running alone waits for, and with it
# every other node. The server ends such a transaction after this long; a node's own never
# sit idle for more than milliseconds between statements.
IDLE_IN_TRANSACTION_S = 30
# What says the connection is gone: psycopg's OperationalError, and the server ending a
# transaction left idle too long (SQLSTATE 25P03, which psycopg files as an InternalError).
CONNECTION_LOST = (psycopg.OperationalError, pg_errors.IdleInTransactionSessionTimeout)
# A server cut off without a reset (a partition, a host gone) left a batch waiting on the
# kernel's retransmissions for ~15 minutes: data unacknowledged for 30 s, or an idle
# connection silent for 10 + 3 × 5 s, ends the connection instead (the batch fails as
# transient, or its COMMIT is asked about). A URL's own values are kept; Unix sockets ignore them.
TCP_OPTIONS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def connect(url: str) -> psycopg.Connection[Any]:
    # autocommit: the engine writes its own BEGIN (with the isolation level) and COMMIT.
    given = conninfo_to_dict(url)
    tcp = {name: value for name, value in TCP_OPTIONS.items() if name not in given}
    conninfo = make_conninfo(url, **tcp)
    conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    try:  # SET, not the URL's options: a URL that brings its own options keeps them
        conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_S}s'")
    except psycopg.Error:
        conn.close()
        raise
    return conn


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
