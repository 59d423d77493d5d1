"""The Store on PostgreSQL: several nodes share one database (and so one queue)."""

from __future__ import annotations

from smsrelay.store.pg_engine import PgDatabase
from smsrelay.store.sql import Conn
from smsrelay.store.sql_store import SqlStore


class PgStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(url, PgDatabase(url))

    async def database_time(self) -> float:
        """The server's clock, which every node keeps time by (``service.database_time``)."""
        return await self.db.read(_database_time)


def _database_time(conn: Conn) -> float:
    # clock_timestamp(), not now(): now() is the transaction's start
    row = conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()
    return float(row[0])
