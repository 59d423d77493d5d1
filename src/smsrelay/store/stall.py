"""A commit that does not come back: the writes queued behind it are refused, not held.

A PostgreSQL server frozen or cut off (a paused VM, a partition) or a disk whose fsync hangs
leaves the running batch waiting, and every write after it waits in the engine's outbox for
the whole outage: a client's send hung for 100 s, timed out on its side, and was stored,
sent and charged when the server came back (a client that retries sends it twice). A write
still in the outbox was never run, so refusing it is safe (nothing of it is stored): after
``STALLED_AFTER_S`` the waiting writes are refused, and new ones at once until the commit
comes back, so sends are answered 503 (retry later) and ``/health`` says so. The running
batch's own writes wait for its outcome: they may be stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from smsrelay.errors import TransientError
from smsrelay.store.health import StoreHealth

log = logging.getLogger("smsrelay.store")
STALLED_AFTER_S = 10.0


class StallGuard:
    """Watches one batch at a time: ``began`` when its commit leaves, ``ended`` when its
    outcome is in. ``refuse_waiting`` is called once the commit has been out too long."""

    def __init__(
        self,
        health: StoreHealth,
        refuse_waiting: Callable[[TransientError], None],
        *,
        after: float = STALLED_AFTER_S,
    ) -> None:
        self._health = health
        self._refuse_waiting = refuse_waiting
        self._after = after
        self._timer: asyncio.TimerHandle | None = None
        self._began = 0.0

    @property
    def stalled(self) -> bool:
        return self._health.stalled

    def began(self, loop: asyncio.AbstractEventLoop) -> None:
        self._began = time.monotonic()
        self._timer = loop.call_later(self._after, self._stall)

    def ended(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._health.stalled:
            self._health.stalled = False
            log.warning("store.stall.ended", extra={"seconds": self._seconds()})

    def cancel(self) -> None:
        """The batch watched was given up (a stop): no stall is said of it, now or later."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def refusal(self) -> TransientError:
        return TransientError(
            f"database stalled: a commit has not come back for {self._seconds():.0f} s "
            "(nothing of this write was stored)"
        )

    def _stall(self) -> None:
        self._timer = None
        self._health.stalled = True
        log.error("store.stalled", extra={"seconds": self._seconds()})
        self._refuse_waiting(self.refusal())

    def _seconds(self) -> float:
        return round(time.monotonic() - self._began, 1)
