"""Logging: stable event names with their fields; JSON lines when stderr is not a terminal."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in fields_of(record).items())
        line = f"{stamp} {record.levelname:<7} {record.getMessage()} {extra}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if sys.stderr.isatty() else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Sparse:
    """A log line at most once per ``every`` seconds for a kind of event that can come by the
    thousand a second (a hung receiver's lapsed hand, an SMSC refusing everything): counts
    the events, and says when a line is due and how many it stands for."""

    def __init__(self, every: float, say: Callable[[int], None] | None = None) -> None:
        self._every = every
        self._said_at = float("-inf")
        self.unsaid = 0  # events since the last line
        self._say = say  # for note(): writes the line for a count
        self._flush_armed = False

    def due(self, now: float) -> int | None:
        """One more event at ``now`` (a monotonic clock): the count for a line, or None."""
        self.unsaid += 1
        if now - self._said_at < self._every:
            return None
        count, self.unsaid, self._said_at = self.unsaid, 0, now
        return count

    def note(self, now: float) -> None:
        """One more event (``say`` given): its line now if due, else the count is said when
        the period ends, so the end of a burst is not left untold until the next event."""
        count = self.due(now)
        assert self._say is not None
        if count is not None:
            self._say(count)
        elif not self._flush_armed:
            self._flush_armed = True
            wait = self._every - (now - self._said_at)
            asyncio.get_running_loop().call_later(max(wait, 0.0), self._flush)

    def _flush(self) -> None:
        self._flush_armed = False
        if self.unsaid and self._say is not None:
            count, self.unsaid, self._said_at = self.unsaid, 0, time.monotonic()
            self._say(count)


class SparseLine:
    """One event's line at most every ``every`` seconds (a warning unless ``level`` says
    otherwise): the fields of the last occurrence and, under ``count_key``, how many the line
    stands for; a burst's end is told when its period ends (``Sparse.note``)."""

    def __init__(
        self,
        log: logging.Logger,
        event: str,
        every: float,
        count_key: str = "since_last_line",
        level: int = logging.WARNING,
    ) -> None:
        self._log, self._event, self._count_key, self._level = log, event, count_key, level
        self._fields: dict[str, Any] = {}
        self._sparse = Sparse(every, self._say)

    @property
    def unsaid(self) -> int:
        """Occurrences not in a line yet (they will be when the period ends)."""
        return self._sparse.unsaid

    def note(self, fields: dict[str, Any], count: int = 1) -> None:
        self._fields = fields
        self._sparse.unsaid += count - 1
        self._sparse.note(time.monotonic())

    def _say(self, count: int) -> None:
        self._log.log(self._level, self._event, extra=self._fields | {self._count_key: count})
