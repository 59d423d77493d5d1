"""Dates as SMS Partner shows them: Paris local time, "YYYY-MM-DD HH:MM:SS"."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")


def paris_text(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return _paris_second(int(epoch // 1))


@lru_cache(maxsize=4096)
def _paris_second(second: int) -> str:
    # Callbacks and status answers under load mostly show the same few seconds: the time-zone
    # conversion is done once per second shown, not once per message.
    return datetime.fromtimestamp(second, PARIS).strftime("%Y-%m-%d %H:%M:%S")


def iso_text(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, PARIS).isoformat(timespec="seconds")
