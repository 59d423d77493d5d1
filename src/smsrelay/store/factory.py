"""The Store for a database URL: ``sqlite:///PATH`` or ``postgresql://…``."""

from __future__ import annotations

from smsrelay.settings import POSTGRES_SCHEMES
from smsrelay.store.engine import DEFAULT_BUSY_TIMEOUT_MS
from smsrelay.store.sql_store import SqlStore
from smsrelay.store.sqlite_store import SqliteStore


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def holds_smsrelay(url: str) -> bool:
    """Whether the PostgreSQL database at ``url`` has smsrelay's tables (connection errors
    raise, as opening the store would)."""
    from smsrelay.store.pg_schema import has_schema

    return has_schema(url)


def store_for(
    url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, min_free_mb: int = 0
) -> SqlStore:
    """SQLite only: ``busy_timeout_ms``, how long to wait for another process's write lock;
    ``min_free_mb``, the free space below which new sends are refused (0: none kept)."""
    if is_postgres(url):
        from smsrelay.store.pg_store import PgStore  # psycopg only when used (~10 MB RSS)

        return PgStore(url)
    return SqliteStore(url, busy_timeout_ms=busy_timeout_ms, min_free_mb=min_free_mb)
