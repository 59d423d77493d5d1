"""Turns at heavy reads: a waiter's turn comes in arrival order, and a request that goes away
while waiting (or just as its turn came) never keeps a turn from the others."""

from __future__ import annotations

import asyncio

import pytest

from smsrelay.errors import Busy
from smsrelay.service.heavy_reads import HeavyReadTurns
from tests.support import eventually


async def _hold(
    turns: HeavyReadTurns, account_id: int, order: list[str], name: str, release: asyncio.Event
) -> None:
    async with turns.turn(account_id):
        order.append(name)
        await release.wait()


async def test_waiters_get_their_turn_in_arrival_order() -> None:
    turns = HeavyReadTurns(per_account=1)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in "abcd"}
    tasks = [asyncio.ensure_future(_hold(turns, 7, order, n, releases[n])) for n in "abcd"]
    await eventually(lambda: turns.figures() == (1, 3))
    for name in "abcd":
        await eventually(lambda name=name: order[-1:] == [name])
        releases[name].set()
    await asyncio.gather(*tasks)
    assert order == list("abcd")
    assert turns.figures() == (0, 0) and turns.accounts() == 0


async def test_a_waiter_that_goes_away_leaves_its_place_to_the_next() -> None:
    turns = HeavyReadTurns(per_account=1)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in "abc"}
    tasks = {n: asyncio.ensure_future(_hold(turns, 7, order, n, releases[n])) for n in "abc"}
    await eventually(lambda: turns.figures() == (1, 2))
    tasks["b"].cancel()
    await eventually(lambda: turns.figures() == (1, 1))
    releases["a"].set()
    await eventually(lambda: order == ["a", "c"])
    releases["c"].set()
    await asyncio.gather(tasks["a"], tasks["c"])
    assert turns.figures() == (0, 0) and turns.accounts() == 0


async def test_a_turn_handed_to_a_waiter_cancelled_meanwhile_passes_on() -> None:
    turns = HeavyReadTurns(per_account=1)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in "bc"}
    mine = turns.turn(7)
    await mine.__aenter__()
    tasks = {n: asyncio.ensure_future(_hold(turns, 7, order, n, releases[n])) for n in "bc"}
    await eventually(lambda: turns.figures() == (1, 2))
    await mine.__aexit__(None, None, None)  # hands the turn to b, whose task has not run yet
    tasks["b"].cancel()
    await eventually(lambda: order == ["c"])
    releases["c"].set()
    await tasks["c"]
    assert tasks["b"].cancelled()
    assert turns.figures() == (0, 0) and turns.accounts() == 0


async def test_accounts_take_turns_apart() -> None:
    turns = HeavyReadTurns(per_account=1)
    order: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.ensure_future(_hold(turns, n, order, str(n), release)) for n in (1, 1, 2)]
    await eventually(lambda: sorted(order) == ["1", "2"])
    assert turns.figures() == (2, 1)
    release.set()
    await asyncio.gather(*tasks)
    assert turns.figures() == (0, 0) and turns.accounts() == 0


async def test_past_its_waiting_line_an_account_is_told_busy_and_keeps_its_turns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Requests whose clients hung up wait their turn with their bodies: the line is bounded
    # (4,000 from one key grew the process by 500 MB), the overflow refused, not queued.
    turns = HeavyReadTurns(per_account=1, waiting_at_most=2)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in "abc"}
    tasks = [asyncio.ensure_future(_hold(turns, 7, order, n, releases[n])) for n in "abc"]
    await eventually(lambda: turns.figures() == (1, 2))
    with pytest.raises(Busy, match="1 running, 2 waiting"):
        await asyncio.wait_for(_hold(turns, 7, order, "d", releases["a"]), 5)
    assert turns.refused == 1  # (/metrics: smsrelay_heavy_reads_refused_total)
    busy = [r for r in caplog.records if r.getMessage() == "api.heavy_reads.busy"]
    assert [(r.levelname, r.account_id, r.count) for r in busy] == [("WARNING", 7, 1)]
    async with turns.turn(8):  # another account's line is its own
        assert turns.figures() == (2, 2)
    assert turns.figures() == (1, 2)
    for event in releases.values():
        event.set()
    await asyncio.gather(*tasks)
    assert order == list("abc") and turns.accounts() == 0
