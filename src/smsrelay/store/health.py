"""Whether the store can take new work now, and why not.

Two things stop it: the last batch failed to commit (a full disk, a locked or unreachable
database), until one commits again; and the disk that holds a SQLite database has less free
space than its reserve. New sends are refused below the reserve (503, retried by clients)
while what has already happened is still stored in it: the SMSC's answers to parts it took,
receipts, replies and callback attempts. Without the reserve a full disk refused those too,
and a stop during it left parts to be sent again and callbacks to be posted again.

A third is the database file itself, removed or replaced under a serving process (an
operator's ``rm``, a data folder moved): the process goes on writing to the file it opened,
which vanishes when it stops, so what it answered as stored would be lost. Every write is
refused from then on (``store.file.gone``, logged once).

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
        self._min_free = min_free_bytes
        self._measure = measure
        self._clock = clock
        self._checked_at: float | None = None
        self._low: str | None = None
        self._unmeasured = False
        self._failing: str | None = None
        self._file: str | None = None
        self._identity: tuple[int, int] | None = None  # the watched file's (device, inode)
        self._fd: int | None = None
        self._gone = False
        self.stalled = False  # a commit out too long: set and cleared by the engine's StallGuard

    @property
    def min_free_bytes(self) -> int:
        """The reserve; 0 keeps none. Changed while running (tests), it applies at once."""
        return self._min_free

    @min_free_bytes.setter
    def min_free_bytes(self, value: int) -> None:
        self._min_free = value
        self._checked_at = None
        if value <= 0 and self._low is not None:
            log.warning("store.disk.ok", extra={"reserve_mb": 0})
            self._low = None

    def batch_failed(self, error: str) -> None:
        if self._failing is None:
            log.error("store.failing", extra={"error": error})
        self._failing = error

    @property
    def failing(self) -> bool:
        return self._failing is not None

    def batch_stored(self, *, wrote: bool = True) -> None:
        """A batch committed. One that wrote nothing (polls that found no work) proves
        nothing of a disk that refused writes: only one that wrote ends the failing."""
        if self._failing is not None and wrote:
            log.warning("store.recovered", extra={"was": self._failing})
            self._failing = None

    def watch_file(self, path: str) -> None:
        """The database file as opened now: from then on, one removed or replaced under it
        takes no more writes. Held open, so a file made in its place cannot take its inode.
        Once: closing this descriptor drops the process's locks on the file (POSIX), so it
        is closed only after the connections (``close``)."""
        if self._fd is not None:
            raise RuntimeError("a database file is watched already")
        self._fd = os.open(path, os.O_RDONLY)
        stat = os.fstat(self._fd)
        self._file, self._identity = path, (stat.st_dev, stat.st_ino)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def file_gone(self) -> bool:
        """Whether the watched file was removed or replaced, looked at now (two stats), and
        for good once it was: only a restart looks again. The engine asks before each batch,
        so no write is answered stored into a file already gone."""
        if not self._gone and self._file_gone():
            self._gone = True
            log.error(
                "store.file.gone",
                extra={
                    "path": self._file,
                    "pid": os.getpid(),
                    "then": "every write is refused: recover the file (and its -wal) from "
                    "/proc/PID/fd/ before stopping serve, then start serve again",
                },
            )
        return self._gone

    def new_work_refusal(self) -> str | None:
        """Why a new send must be refused now (None: it may be taken)."""
        if self._folder is None or self._min_free <= 0:
            return None
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= DISK_CHECK_EVERY_S:
            self._checked_at = now
            self._low = self._disk_low(self._folder)
        return self._low

    def trouble(self) -> str | None:
        """What is wrong now, in words fit for an unauthenticated /health (the details, a
        server's address or a path, are in the logs): a failing or stalled commit, a
        database file gone, or a low disk."""
        refusal = self.write_refusal()
        if refusal is not None:
            return refusal
        return None if self.new_work_refusal() is None else "disk under its reserve"

    def write_refusal(self) -> str | None:
        """Why no write is stored now, not even a receipt or a reply (None: writes are): a
        failing or stalled commit, or the database file gone. A disk under its reserve is
        not one: it refuses new sends only, and still takes what already happened."""
        if self._failing is not None:
            return "commits failing"
        if self.stalled:
            return "commits stalled"
        if self.file_gone():
            return "database file gone"
        return None

    def _file_gone(self) -> bool:
        if self._file is None or self._fd is None:
            return False
        try:
            stat = os.stat(self._file)
        except FileNotFoundError:
            return True
        except OSError:  # unreadable just now: not proof it is gone
            return False
        return (stat.st_dev, stat.st_ino) != self._identity or not os.fstat(self._fd).st_nlink

    def _disk_low(self, folder: str) -> str | None:
        try:
            free = self._measure(folder)
        except OSError as exc:  # not a full disk: the sends go on, the commits will tell
            if not self._unmeasured:
                log.warning("store.disk.unmeasured", extra={"folder": folder, "error": str(exc)})
            self._unmeasured = True
            return None
        self._unmeasured = False
        if free >= self._min_free:
            if self._low is not None:
                log.warning("store.disk.ok", extra={"free_mb": free // MIB})
            return None
        reason = (
            f"the disk holding the database has {free // MIB} MB free, under its reserve of "
            f"{self._min_free // MIB} MB (min_free_mb): new sends wait until there is room"
        )
        if self._low is None:
            log.error("store.disk.low", extra={"free_mb": free // MIB, "folder": folder})
        return reason
