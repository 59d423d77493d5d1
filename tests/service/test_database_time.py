"""Nodes on one PostgreSQL database keep its time: measured against a fake database here, and
against a real server (the node ahead of it end to end: tests/e2e/test_postgres_nodes.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from smsrelay import runtime
from smsrelay.service.database_time import ClockKeeper, DatabaseTimeClock, measure_offset
from smsrelay.store.pg_store import PgStore
from tests.support import eventually, gateway_settings, start_gateway

pytestmark = pytest.mark.asyncio


class FakeDatabase:
    """A database whose clock is ``ahead`` seconds ahead of the node's own; each read moves
    the node's clock by the round trips given (one per read), answering at its middle."""

    def __init__(self, node: list[float], ahead: float, trips: list[float]) -> None:
        self.node, self.ahead, self.trips = node, ahead, trips
        self.failing = False
        self.failures = 0

    async def database_time(self) -> float:
        if self.failing:
            self.failures += 1
            raise OSError("connection refused")
        trip = self.trips.pop(0) if self.trips else 0.002
        self.node[0] += trip / 2
        theirs = self.node[0] + self.ahead
        self.node[0] += trip / 2
        return theirs


def _node_clock(start: float = 1_800_000_000.0) -> tuple[list[float], DatabaseTimeClock]:
    node = [start]
    return node, DatabaseTimeClock(source=lambda: node[0], wall=lambda: node[0])


async def test_the_offset_is_the_database_clock_minus_the_node_s() -> None:
    node, clock = _node_clock()
    offset = await measure_offset(FakeDatabase(node, -120.0, [0.004, 0.002, 0.008]), clock)
    assert offset == pytest.approx(-120.0, abs=1e-9)
    clock.offset = offset
    assert clock.now() == pytest.approx(node[0] - 120.0)
    assert clock.own_time() == node[0]


async def test_the_sample_with_the_shortest_round_trip_is_kept() -> None:
    # a read that waited (a busy loop, a slow answer) is lopsided; the quickest is nearest
    class Lopsided(FakeDatabase):
        async def database_time(self) -> float:
            trip = self.trips.pop(0)
            theirs = self.node[0] + self.ahead  # answered at once, then the wait
            self.node[0] += trip
            return theirs

    node, clock = _node_clock()
    offset = await measure_offset(Lopsided(node, 30.0, [0.5, 0.004, 0.2]), clock)
    assert offset == pytest.approx(30.0 - 0.002)


async def test_the_keeper_logs_a_large_offset_once_and_follows_its_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node, clock = _node_clock()
    database = FakeDatabase(node, 90.0, [])
    keeper = ClockKeeper(database, clock, every=3600)
    with caplog.at_level(logging.WARNING, "smsrelay.clock"):
        await keeper.start()
        await keeper.measure()  # the same offset: said once
        database.ahead = 90.4
        await keeper.measure()  # moved less than a second: followed, not said
        assert clock.offset == pytest.approx(90.4)
        database.ahead = 0.1  # the node's clock was put right
        await keeper.measure()
        await keeper.stop()
    said = [r for r in caplog.records if r.getMessage() == "clock.differs_from_database"]
    assert [round(r.offset_seconds) for r in said] == [90, 0]


async def test_a_failed_measure_keeps_the_last_offset() -> None:
    node, clock = _node_clock()
    database = FakeDatabase(node, -45.0, [])
    keeper = ClockKeeper(database, clock, every=0.01)
    await keeper.start()
    database.failing = True
    await eventually(lambda: database.failures >= 3)  # the database away for a while
    assert keeper._task is not None and not keeper._task.done()  # still keeping time
    assert clock.offset == pytest.approx(-45.0)
    database.failing, database.ahead = False, -44.0
    await eventually(lambda: clock.offset == pytest.approx(-44.0))  # and back
    await keeper.stop()


async def test_a_real_server_s_time_is_read(postgres: Any) -> None:
    store = PgStore(postgres.new_database("clock"))
    await store.open()
    try:
        clock = DatabaseTimeClock()
        clock.offset = await measure_offset(store, clock)
        assert abs(clock.ahead_of_wall_clock()) < 1.0  # the server runs on this machine
    finally:
        await store.close()


async def test_a_gateway_on_postgresql_keeps_its_time_and_stops_keeping_it(
    postgres: Any, tmp_path: Path
) -> None:
    # the keeper was left running after stop, reading a closed database every minute
    settings = gateway_settings(tmp_path, database_url=postgres.new_database("keeper"))
    gw = await start_gateway(settings)
    keeper = gw.running.clock_keeper
    assert keeper is not None and gw.running.gateway.clock is keeper.clock
    assert abs(keeper.clock.now() - time.time()) < 1.0  # the server's clock is this machine's
    await runtime.stop(gw.running)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "clock-keeper"]


async def test_a_step_of_the_wall_clock_does_not_move_the_database_s_time() -> None:
    # NTP stepping the node's wall clock by two minutes moved its time with it until the next
    # measure: long enough for its lease sweep to take the other nodes' live leases
    steady, wall, true_time = [500.0], [1_800_000_000.0], [1_800_000_000.0]
    clock = DatabaseTimeClock(source=lambda: steady[0], wall=lambda: wall[0])

    class ServerClock:
        async def database_time(self) -> float:
            return true_time[0]

    clock.offset = await measure_offset(ServerClock(), clock)
    steady[0] += 10.0
    true_time[0] += 10.0
    wall[0] += 10.0 + 120.0  # ten seconds pass, and the wall clock is stepped two minutes
    assert clock.now() == pytest.approx(true_time[0])
    assert clock.ahead_of_wall_clock() == pytest.approx(-120.0)
