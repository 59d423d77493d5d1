"""Clocks: the system one, and a fixed one that tests move by hand."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FixedClock:
    """Stands still until ``set`` moves it (SMSRELAY_FIXED_CLOCK, tests only)."""

    def __init__(self, start: float) -> None:
        self._now = start

    @classmethod
    def from_iso(cls, text: str) -> FixedClock:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError("the fixed clock needs a UTC offset, e.g. 2026-03-01T15:00:00+01:00")
        return cls(moment.timestamp())

    def now(self) -> float:
        return self._now

    def set(self, when: float) -> None:
        self._now = when
