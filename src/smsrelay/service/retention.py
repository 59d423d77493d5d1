"""Finished history older than a number of days, deleted a small step at a time.

Used by ``smsrelay db purge`` and, when ``retention_days`` is set, by ``serve`` itself every
hour. Each step is one short transaction (``STEP`` rows looked at), so serving goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from smsrelay.errors import TransientError
from smsrelay.service.clock import Clock
from smsrelay.store.interface import Store
from smsrelay.store.records import PURGE_KINDS

STEP = 1000  # rows looked at per transaction: serving waits for each at most that long
DAY = 86400.0
log = logging.getLogger("smsrelay.retention")

Progress = Callable[[str, int, int], None]  # kind, deleted so far, id reached


# Between steps, a CLI command stepping through many rows beside serve (a purge, a release of
# held messages) leaves the database alone this long.
# SQLite's lock is not fair: taken again at once after each commit, serve's writes (which
# wait for it on their event loop, polling every 1-100 ms) missed it for up to 2 s at a time.
YIELD_S = 0.15


async def purge(
    store: Store, cutoff: float, progress: Progress | None = None, *, beside_serve: bool = False
) -> dict[str, int]:
    """Delete what is finished and older than ``cutoff``; how many of each kind.
    ``beside_serve``: another process serves this database (pause between steps)."""
    pause = YIELD_S if beside_serve else 0.0
    return {kind: await purge_kind(store, kind, cutoff, progress, pause) for kind in PURGE_KINDS}


async def purge_kind(
    store: Store, kind: str, cutoff: float, progress: Progress | None = None, pause: float = 0.0
) -> int:
    deleted, after_id, steps = 0, 0, 0
    while True:
        step = await store.purge_history(kind, cutoff, after_id, STEP)
        deleted, after_id, steps = deleted + step.deleted, step.last_id, steps + 1
        if step.done:
            return deleted
        if progress is not None and steps % 50 == 0:  # every 50,000 rows looked at
            progress(kind, deleted, after_id)
        if pause:
            await asyncio.sleep(pause)


class RetentionSweeper:
    """serve's own purge: history older than ``days`` goes, ``every`` seconds (an hour)."""

    def __init__(self, store: Store, clock: Clock, days: float, *, every: float = 3600.0) -> None:
        self._store = store
        self._clock = clock
        self._days = days
        self._every = every
        self._task: asyncio.Task[None] | None = None
        self.sweeps = 0  # purges done (tests wait on it)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)  # not at start: a restart loop is not a purge loop
            try:
                deleted = await purge(self._store, self._clock.now() - self._days * DAY)
            except TransientError as exc:  # locked by a CLI command: next hour
                log.warning("retention.purge.failed", extra={"error": str(exc)})
                continue
            except Exception:  # a disk full, a bug: said, and tried again next hour
                log.exception("retention.purge.crashed")
                continue
            self.sweeps += 1
            if any(deleted.values()):
                log.info("retention.purged", extra={"days": self._days, **_fields(deleted)})


def _fields(deleted: dict[str, int]) -> dict[str, int]:
    return {kind.replace(" ", "_"): count for kind, count in deleted.items()}
