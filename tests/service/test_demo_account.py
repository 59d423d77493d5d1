"""The demo account serve makes on an empty database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smsrelay.service.accounts import ensure_demo
from smsrelay.service.clock import FixedClock
from smsrelay.store.sqlite_store import SqliteStore


async def test_two_nodes_starting_together_share_one_demo_account(tmp_path: Path) -> None:
    """Nodes of one PostgreSQL database may both find it empty: the second takes the first's."""
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        first, second = await asyncio.gather(
            *(ensure_demo(store, "100", FixedClock(1_000.0), quiet_hours=False) for _ in "ab")
        )
        assert first is not None and second is not None
        assert first.id == second.id and first.demo_key == second.demo_key
        assert [a.name for a in await store.list_accounts()] == ["demo"]
    finally:
        await store.close()
