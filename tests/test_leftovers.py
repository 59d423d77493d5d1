"""The test harness itself: a process a test left running is killed after it."""

from __future__ import annotations

import asyncio

from tests.support import kill_leftovers, start_smsc


async def test_a_simulator_left_running_is_killed_by_the_harness() -> None:
    smsc = await start_smsc()
    assert smsc.process.returncode is None
    assert kill_leftovers() == 1
    await asyncio.wait_for(smsc.process.wait(), 10)
    assert smsc.process.returncode == -9
    assert kill_leftovers() == 0
