"""Turns for the account endpoints whose cost grows with the request (multi-status, status by
tag, the STOP list): at most ``per_account`` of one account's run at a time, the rest wait
in arrival order, up to ``waiting_at_most``; past that, refused as busy (a 503: retry later).

Everything runs on one event loop, and their reads share one reader thread: while one account
ran 16 concurrent 500-item multi-status requests, another account's message-status waited
behind their reads (460 ms at the median, from 0.6 ms), and a send whose key lookup missed the
cache 0.2 s. Waiting their turn, an account's extra requests slow that account only; another
account's requests never wait here behind them. Nothing an honest client sends is refused
(SMS Partner's contract has no "too many requests" answer), but the line is bounded: a request
whose client hung up still waits its turn with its body (the server cannot tell a hang-up from
a half-close), and 4,000 of them, from one key, grew the process by 500 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from smsrelay.errors import Busy
from smsrelay.logs import SparseLine

# Two: one request's read on the reader thread while the other's answer is built on the loop,
# so a lone heavy client keeps most of its throughput (55 answers a second where 16 at once
# had 68), and at most two of its reads are in the reader's queue ahead of anyone else's.
HEAVY_READS_PER_ACCOUNT = 2
# 64 waiting: far more than a client's pool sends at once (an answer every ~20 ms keeps a
# 64-deep line moving in about a second), and a bound of 64 bodies of 64 KiB per account.
HEAVY_READS_WAITING_PER_ACCOUNT = 64
BUSY_SAID_EVERY_S = 60.0  # refusals: a line a minute at most, with the count
log = logging.getLogger("smsrelay.service")


@dataclass
class _Lane:
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class HeavyReadTurns:
    """Per account, at most ``per_account`` holders of a turn; the others queue (FIFO)."""

    def __init__(
        self,
        per_account: int = HEAVY_READS_PER_ACCOUNT,
        waiting_at_most: int = HEAVY_READS_WAITING_PER_ACCOUNT,
    ) -> None:
        self._per_account = per_account
        self._waiting_at_most = waiting_at_most
        self._busy_said = SparseLine(log, "api.heavy_reads.busy", BUSY_SAID_EVERY_S, "count")
        self.refused = 0  # requests refused as busy since the start (/metrics)
        self._lanes: dict[int, _Lane] = {}  # only accounts with a turn held: no growth

    @contextlib.asynccontextmanager
    async def turn(self, account_id: int) -> AsyncIterator[None]:
        await self._take(account_id)
        try:
            yield
        finally:
            self._give_back(account_id)

    def accounts(self) -> int:
        """How many accounts have a lane kept (one with a turn held or awaited)."""
        return len(self._lanes)

    def figures(self) -> tuple[int, int]:
        """(requests running, requests waiting), over every account."""
        lanes = self._lanes.values()
        return sum(lane.running for lane in lanes), sum(len(lane.waiting) for lane in lanes)

    async def _take(self, account_id: int) -> None:
        lane = self._lanes.setdefault(account_id, _Lane())
        if lane.running < self._per_account and not lane.waiting:
            lane.running += 1  # a free turn is taken without yielding to the loop
            return
        if len(lane.waiting) >= self._waiting_at_most:  # (a lane with a turn held: kept)
            self.refused += 1
            self._busy_said.note({"account_id": account_id, "waiting": len(lane.waiting)})
            raise Busy(
                f"too many of this account's status and STOP-list requests at once "
                f"({self._per_account} running, {len(lane.waiting)} waiting)"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a turn, then cancelled
                self._give_back(account_id)
            else:  # still queued, unless a give-back already dropped it
                with contextlib.suppress(ValueError):
                    lane.waiting.remove(waiter)
            raise

    def _give_back(self, account_id: int) -> None:
        """Hand the turn to the next waiter (``running`` unchanged), or free it."""
        lane = self._lanes[account_id]
        while lane.waiting:
            waiter = lane.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        lane.running -= 1
        if lane.running == 0:
            del self._lanes[account_id]
