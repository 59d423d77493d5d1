"""Nodes that share a PostgreSQL database keep time by the database server's clock.

Every node writes leases (a claimed part, a claimed callback) with its own clock and finds
them run out with its own clock. A node whose clock ran a minute ahead took the others'
live leases for dead ones and sent their parts a second time; one running behind had its
own leases taken. So each node measures how far its clock is from the database's, at start
and every minute, and every time it uses is its own clock moved by that much: the nodes
agree with each other whatever their own clocks say. One SQLite node needs none of this.

The offset is kept against a clock that is never stepped (Linux's BOOTTIME, which counts a
suspend too), not the wall clock: NTP stepping the wall clock by a minute would otherwise
move the node's time with it until the next measure, the very fault this is here to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

log = logging.getLogger("smsrelay.clock")

MEASURE_EVERY = 60.0  # seconds; a clock drifts by milliseconds a minute, NTP steps it at once
SAMPLES = 3  # the one with the shortest round trip is kept
WORTH_SAYING = 1.0  # seconds: an offset this large (or a change this large) is logged


@runtime_checkable
class DatabaseClockSource(Protocol):
    async def database_time(self) -> float:
        """The database server's clock now, in seconds since the epoch."""
        ...


_STEADY = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def steady_time() -> float:
    """Seconds on a clock that is never stepped (its zero is the machine's start)."""
    return time.clock_gettime(_STEADY)


class DatabaseTimeClock:
    """The database's time, read locally: a steady clock moved by ``offset`` seconds (until
    the first measure, this machine's wall clock)."""

    def __init__(
        self,
        source: Callable[[], float] = steady_time,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._wall = wall
        self.offset = wall() - source()

    def now(self) -> float:
        return self._source() + self.offset

    def own_time(self) -> float:
        """The steady clock the offset is kept against."""
        return self._source()

    def ahead_of_wall_clock(self) -> float:
        """How far the database's time is ahead of this machine's wall clock (negative:
        behind): what an operator would fix with NTP."""
        return self.now() - self._wall()


async def measure_offset(database: DatabaseClockSource, clock: DatabaseTimeClock) -> float:
    """What to add to ``clock``'s steady clock to read the database's, to within half the
    shortest of a few round trips."""
    best: tuple[float, float] | None = None
    for _ in range(SAMPLES):
        before = clock.own_time()
        theirs = await database.database_time()
        after = clock.own_time()
        sample = (after - before, theirs - (before + after) / 2)
        best = sample if best is None or sample < best else best
    assert best is not None
    return best[1]


class ClockKeeper:
    """Keeps a ``DatabaseTimeClock`` set to the database's time, measured every minute."""

    def __init__(
        self,
        database: DatabaseClockSource,
        clock: DatabaseTimeClock,
        every: float = MEASURE_EVERY,
    ) -> None:
        self.clock = clock
        self._database = database
        self._every = every
        self._said = 0.0  # the offset last logged
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Measure once (a failure here stops the start), then again every minute."""
        await self.measure()
        self._task = asyncio.get_running_loop().create_task(self._keep(), name="clock-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def measure(self) -> None:
        self.clock.offset = await measure_offset(self._database, self.clock)
        ahead = self.clock.ahead_of_wall_clock()
        if abs(ahead - self._said) >= WORTH_SAYING:
            self._said = ahead
            log.warning(
                "clock.differs_from_database",
                extra={
                    "offset_seconds": round(ahead, 3),
                    "meaning": "the database server's clock minus this machine's: this node "
                    "keeps the database's time; one of the two clocks is wrong (NTP)",
                },
            )

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.measure()
            except Exception as exc:  # the database is away: the last offset still holds
                log.info("clock.not_measured", extra={"error": str(exc)})


async def measured_clock(store: object) -> DatabaseTimeClock | None:
    """A clock set to ``store``'s database time, measured once (for a CLI command); None
    when the store is one node's own (SQLite)."""
    if not isinstance(store, DatabaseClockSource):
        return None
    clock = DatabaseTimeClock()
    clock.offset = await measure_offset(store, clock)
    return clock
