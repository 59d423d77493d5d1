"""serve's own purge (retention_days): what is old and finished goes, the rest stays."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from smsrelay.service import retention
from smsrelay.service.clock import FixedClock
from smsrelay.service.retention import RetentionSweeper
from smsrelay.settings import SettingsError, load_settings
from smsrelay.store.sqlite_store import SqliteStore
from tests.factories import delivered_message, new_message, open_store
from tests.support import eventually

DAY = 86400.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await open_store(tmp_path, {"+33757000001": "default"})
    yield s
    await s.close()


async def _delivered(store: SqliteStore, at: float, carrier_id: str) -> int:
    return await delivered_message(store, at, carrier_id, cost_micros=1)


async def test_the_sweeper_purges_what_is_older_than_its_days(store: SqliteStore) -> None:
    old = await _delivered(store, 10 * DAY, "old")
    recent = await _delivered(store, 95 * DAY, "recent")
    unsent = await store.accept_message(new_message(created_at=11 * DAY, due_at=11 * DAY))
    sweeper = RetentionSweeper(store, FixedClock(100 * DAY), 30, every=0.01)
    await sweeper.start()
    try:
        await eventually(lambda: sweeper.sweeps >= 2)  # the second finds nothing more to do
    finally:
        await sweeper.stop()
    assert await store.get_message(old) is None
    assert await store.get_message(recent) is not None
    assert await store.get_message(unsent) is not None  # not finished: never purged


async def test_the_sweeper_waits_its_interval_before_the_first_purge(store: SqliteStore) -> None:
    old = await _delivered(store, 10 * DAY, "old")
    sweeper = RetentionSweeper(store, FixedClock(100 * DAY), 30)  # hourly
    await sweeper.start()
    await sweeper.stop()
    assert sweeper.sweeps == 0 and await store.get_message(old) is not None


async def test_long_purges_report_their_progress(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "STEP", 1)
    for n in range(60):
        await _delivered(store, DAY + n, f"c{n}")
    await _delivered(store, 99 * DAY, "recent")  # the newest stays: ids never come back
    seen: list[tuple[str, int, int]] = []
    deleted = await retention.purge(store, 30 * DAY, lambda *step: seen.append(step))
    assert deleted["messages"] == 60
    assert seen == [("messages", 50, seen[0][2])] and seen[0][2] > 0


def test_retention_days_is_a_setting_and_cannot_be_negative(tmp_path: Path) -> None:
    env = {"SMSRELAY_DATA_DIR": str(tmp_path)}
    assert load_settings(env=env).retention_days == 0  # keep everything unless asked
    assert load_settings(env={**env, "SMSRELAY_RETENTION_DAYS": "90"}).retention_days == 90
    with pytest.raises(SettingsError, match="retention_days"):
        load_settings(env={**env, "SMSRELAY_RETENTION_DAYS": "-1"})


async def test_a_purge_that_crashes_is_logged_and_tried_again(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = await _delivered(store, 10 * DAY, "old")
    await _delivered(store, 99 * DAY, "recent")  # the newest stays: ids never come back
    real = store.purge_history
    failures: list[int] = []

    async def disk_full_once(*args: Any) -> Any:
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("database or disk is full")
        return await real(*args)

    monkeypatch.setattr(store, "purge_history", disk_full_once)
    sweeper = RetentionSweeper(store, FixedClock(100 * DAY), 30, every=0.01)
    await sweeper.start()
    try:
        await eventually(lambda: sweeper.sweeps >= 1)
    finally:
        await sweeper.stop()  # and stopping it does not raise
    assert "retention.purge.crashed" in caplog.messages
    assert await store.get_message(old) is None
