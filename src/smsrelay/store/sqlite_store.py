"""The Store on SQLite: one process, one file, group commit (the embedded default)."""

from __future__ import annotations

from smsrelay.store.engine import DEFAULT_BUSY_TIMEOUT_MS, Database, path_from_url
from smsrelay.store.sql_store import SqlStore


class SqliteStore(SqlStore):
    def __init__(
        self, url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, min_free_mb: int = 0
    ) -> None:
        database = Database(
            path_from_url(url), busy_timeout_ms=busy_timeout_ms, min_free_mb=min_free_mb
        )
        super().__init__(url, database)
