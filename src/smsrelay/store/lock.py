"""One serving process per SQLite database: an exclusive lock file beside it."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from smsrelay.errors import SmsRelayError
from smsrelay.store.private_files import PRIVATE_FILE, make_private_folder


class DatabaseInUse(SmsRelayError):
    """Another `smsrelay serve` already serves this database."""


# A command asking whether serve runs holds the lock (shared) for an instant: a serve
# starting then tries again for this long before it says the database is in use.
ACQUIRE_FOR_S = 1.0


class ServeLock:
    def __init__(self, database_path: str) -> None:
        self.path = Path(database_path + ".serve-lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        make_private_folder(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        deadline = time.monotonic() + ACQUIRE_FOR_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                raise DatabaseInUse(
                    f"{self.path.with_suffix('')} is already served by another smsrelay process"
                ) from exc
        self._fd = fd

    def is_held(self) -> bool:
        """Whether a serve process holds it now (a command's question: it takes nothing)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # drops the shared lock taken, if any
        return False

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
