"""Says when the system clock steps. Due times (retries, callbacks, leases) are wall-clock
instants, so a clock stepped back an hour (a VM restored, NTP stepping instead of slewing) holds
the work due in that hour until the clock has caught up, and a clock stepped forward past a
receipt's 49 hours expires what was still waiting. The gateway cannot tell a step from the
passing of time afterwards; it can say when one happened, so the stall has its explanation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

log = logging.getLogger("smsrelay.clock")
EVERY_S = 5.0
STEP_S = 30.0  # a smaller jump is NTP's or the scheduler's, not worth a line


def wall_minus_monotonic() -> float:
    return time.time() - time.monotonic()


class ClockWatch:
    """Compares the wall clock with the monotonic one every ``EVERY_S`` seconds."""

    def __init__(self, offset: Callable[[], float] = wall_minus_monotonic) -> None:
        self._offset = offset
        self._last = offset()
        self._task: asyncio.Task[None] | None = None

    def check(self) -> float:
        """The step since the last check, in seconds (negative: back); logged past STEP_S."""
        now = self._offset()
        step, self._last = now - self._last, now
        if abs(step) >= STEP_S:
            direction = "back" if step < 0 else "forward"
            log.warning(f"clock.stepped_{direction}", extra={"seconds": round(abs(step), 1)})
        return step

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="clock-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(EVERY_S)
            self.check()
