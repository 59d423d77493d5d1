"""The store's own health: the disk reserve that keeps room for what already happened, and
a failing commit, each logged once when it starts and once when it ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from smsrelay.store.health import DISK_CHECK_EVERY_S, MIB, StoreHealth


class Disk:
    """Free space and a clock the test moves."""

    def __init__(self, free_mb: int) -> None:
        self.free = free_mb * MIB
        self.now = 0.0
        self.measures = 0

    def measure(self, folder: str) -> int:
        self.measures += 1
        if self.free < 0:
            raise FileNotFoundError(2, "No such file or directory", folder)
        return self.free

    def later(self) -> None:
        self.now += DISK_CHECK_EVERY_S


def _health(disk: Disk, reserve_mb: int) -> StoreHealth:
    return StoreHealth("/data", reserve_mb * MIB, measure=disk.measure, clock=lambda: disk.now)


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_sends_are_refused_under_the_reserve_and_taken_again_above_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = Disk(free_mb=500)
    health = _health(disk, reserve_mb=100)
    assert health.new_work_refusal() is None and health.trouble() is None
    disk.free, _ = 99 * MIB, disk.later()
    refusal = health.new_work_refusal()
    assert refusal is not None and "99 MB free" in refusal and "min_free_mb" in refusal
    assert health.trouble() == "disk under its reserve"  # no path for an open /health
    disk.later()
    assert health.new_work_refusal() == refusal  # still low: logged once, not per check
    disk.free, _ = 100 * MIB, disk.later()
    assert health.new_work_refusal() is None
    assert _events(caplog) == ["store.disk.low", "store.disk.ok"]


def test_the_disk_is_measured_at_most_twice_a_second(caplog: pytest.LogCaptureFixture) -> None:
    disk = Disk(free_mb=500)
    health = _health(disk, reserve_mb=100)
    for _ in range(1_000):
        health.new_work_refusal()
    assert disk.measures == 1
    disk.free = 0
    assert health.new_work_refusal() is None  # the last measure stands until it is due
    disk.later()
    assert health.new_work_refusal() is not None and disk.measures == 2


def test_no_reserve_or_no_folder_measures_nothing() -> None:
    disk = Disk(free_mb=0)
    assert _health(disk, reserve_mb=0).new_work_refusal() is None
    assert StoreHealth(None, 100 * MIB, measure=disk.measure).new_work_refusal() is None
    assert disk.measures == 0


def test_a_folder_that_cannot_be_measured_lets_sends_through_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = Disk(free_mb=-1)  # gone, or unreadable: not a full disk (the commits will tell)
    health = _health(disk, reserve_mb=100)
    for _ in range(3):
        assert health.new_work_refusal() is None
        disk.later()
    assert disk.measures == 3 and _events(caplog) == ["store.disk.unmeasured"]


def test_a_reserve_changed_while_running_applies_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = Disk(free_mb=500)
    health = _health(disk, reserve_mb=100)
    assert health.new_work_refusal() is None
    health.min_free_bytes = 1_000 * MIB  # no wait for the next measure
    assert health.new_work_refusal() is not None
    health.min_free_bytes = 0
    assert health.new_work_refusal() is None and health.trouble() is None
    assert _events(caplog) == ["store.disk.low", "store.disk.ok"]


def test_a_failing_commit_is_trouble_until_a_batch_is_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = _health(Disk(free_mb=500), reserve_mb=100)
    health.batch_failed("connection to server at 10.0.0.5 failed")
    health.batch_failed("connection to server at 10.0.0.5 failed")
    assert health.trouble() == "commits failing"  # the server's address stays in the logs
    assert health.new_work_refusal() is None  # sends still try: the next batch may commit
    health.batch_stored()
    health.batch_stored()
    assert health.trouble() is None
    assert _events(caplog) == ["store.failing", "store.recovered"]


def test_a_database_file_removed_or_replaced_under_serve_is_seen_at_once_and_for_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `rm smsrelay.db*` mid-load: 12,000 sends answered stored into a file that vanished at
    # the stop (the operations review); the engine asks before each batch
    for replace in (False, True):
        database = tmp_path / f"sms-{replace}.db"
        database.write_text("")
        health = StoreHealth(str(tmp_path), 0)
        health.watch_file(str(database))
        assert not health.file_gone() and health.trouble() is None
        database.unlink()
        if replace:  # a copy put in its place is not the file this process writes
            database.write_text("")
        assert health.file_gone()  # no delay: a write after it would be answered stored
        assert health.trouble() == "database file gone"
        database.write_text("")
        assert health.file_gone()  # for good: only a restart looks again
        health.close()
    assert _events(caplog) == ["store.file.gone", "store.file.gone"]


def test_a_batch_that_wrote_nothing_does_not_end_the_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A full disk takes polls that change nothing: each counted as recovered, the log had
    # 159 failing/recovered pairs in 100 s and /health flapped (the storage review).
    health = _health(Disk(free_mb=500), reserve_mb=100)
    health.batch_failed("database or disk is full")
    health.batch_stored(wrote=False)
    assert health.failing and health.trouble() == "commits failing"
    health.batch_stored(wrote=True)
    assert not health.failing and health.trouble() is None
    assert _events(caplog) == ["store.failing", "store.recovered"]


def test_only_a_store_that_stores_nothing_refuses_writes_a_low_disk_still_takes_them(
    tmp_path: Path,
) -> None:
    # What a connector waits on before binding again after its link stalled: a low disk
    # still stores receipts and replies, so it is no reason to keep the SMSC away.
    disk = Disk(free_mb=50)
    health = _health(disk, reserve_mb=100)
    assert health.trouble() == "disk under its reserve" and health.write_refusal() is None
    health.batch_failed("database or disk is full")
    assert health.write_refusal() == "commits failing"
    health.batch_stored()
    health.stalled = True  # set and cleared by the engine's StallGuard
    assert health.write_refusal() == "commits stalled"
    health.stalled = False
    assert health.write_refusal() is None
    database = tmp_path / "sms.db"
    database.write_text("")
    watched = StoreHealth(str(tmp_path), 0)
    watched.watch_file(str(database))
    assert watched.write_refusal() is None
    database.unlink()
    assert watched.write_refusal() == "database file gone"
    watched.close()
