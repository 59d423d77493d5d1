"""What the store's operations need of a database connection, whichever engine is behind it.

The operations are plain functions of a connection. ``sqlite3.Connection`` fits these
protocols as it is; ``pg_conn.PgConn`` makes a PostgreSQL connection fit them (``?``
placeholders). SQL in the operations is written in the dialect both engines share.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...
