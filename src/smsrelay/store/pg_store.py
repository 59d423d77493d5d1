"""The Store on PostgreSQL: several nodes share one database (and so one queue)."""

from __future__ import annotations

from smsrelay.store.pg_engine import PgDatabase
from smsrelay.store.sql_store import SqlStore


class PgStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(url, PgDatabase(url))
