"""Whether the store can take new work now, and why not.

Two things stop it: the last batch failed to commit (a full disk, a locked or unreachable
database), until one commits again; and the disk that holds a SQLite database has less free
space than its reserve. New sends are refused below the reserve (503, retried by clients)
while what has already happened is still stored in it: the SMSC's answers to parts it took,
receipts, replies and callback attempts. Without the reserve a full disk refused those too,
and a stop during it left parts to be sent again and callbacks to be posted again.

Changes are logged once each way (``store.failing`` / ``store.recovered``,
``store.disk.low`` / ``store.disk.ok``), not once per refused write.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("smsrelay.store")
DISK_CHECK_EVERY_S = 0.5  # a statvfs per accept would cost more than the check is worth
MIB = 1024 * 1024


def free_bytes(folder: str) -> int:
    """Bytes an unprivileged process may still write on ``folder``'s filesystem."""
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


class StoreHealth:
    """What the engine knows of its own state; ``folder`` None: no disk of ours to watch."""

    def __init__(
        self,
        folder: str | None,
        min_free_bytes: int = 0,
        *,
        measure: Callable[[str], int] = free_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._folder = folder
        self.min_free_bytes = min_free_bytes  # 0: no reserve (tests raise it while running)
        self._measure = measure
        self._clock = clock
        self._checked_at: float | None = None
        self._low: str | None = None
        self._failing: str | None = None

    def batch_failed(self, error: str) -> None:
        if self._failing is None:
            log.error("store.failing", extra={"error": error})
        self._failing = error

    def batch_stored(self) -> None:
        if self._failing is not None:
            log.warning("store.recovered", extra={"was": self._failing})
            self._failing = None

    def new_work_refusal(self) -> str | None:
        """Why a new send must be refused now (None: it may be taken)."""
        if self._folder is None or self.min_free_bytes <= 0:
            return None
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= DISK_CHECK_EVERY_S:
            self._checked_at = now
            self._low = self._disk_low(self._folder)
        return self._low

    def trouble(self) -> str | None:
        """What is wrong now, for /health and status: a failing commit or a low disk."""
        return self._failing or self.new_work_refusal()

    def _disk_low(self, folder: str) -> str | None:
        try:
            free = self._measure(folder)
        except OSError as exc:  # the folder went away: the commits will say more
            return f"cannot measure the free space of {folder}: {exc}"
        if free >= self.min_free_bytes:
            if self._low is not None:
                log.warning("store.disk.ok", extra={"free_mb": free // MIB})
            return None
        reason = (
            f"the disk holding the database has {free // MIB} MB free, under its reserve of "
            f"{self.min_free_bytes // MIB} MB (min_free_mb): new sends wait until there is room"
        )
        if self._low is None:
            log.error("store.disk.low", extra={"free_mb": free // MIB, "folder": folder})
        return reason
