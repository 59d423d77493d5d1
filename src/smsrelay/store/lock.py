"""One serving process per SQLite database: an exclusive lock file beside it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from smsrelay.errors import SmsRelayError


class DatabaseInUse(SmsRelayError):
    """Another `smsrelay serve` already serves this database."""


class ServeLock:
    def __init__(self, database_path: str) -> None:
        self.path = Path(database_path + ".serve-lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise DatabaseInUse(
                f"{self.path.with_suffix('')} is already served by another smsrelay process"
            ) from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
