"""Failed callback attempts, logged as one line a minute per receiver.

A receiver that is down fails every attempt of every callback for it; a line per attempt was
~150 lines a day per callback (each attempt is also in the store, where `smsrelay webhooks`
shows it). The first failure of a receiver is logged at once, then what failed since, once per
``every`` seconds while failures go on. The failures after a burst's last line are said when
that receiver fails again (as their own line, with their own last error, if a quiet ``every``
came between).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_HOSTS = 1000  # receivers remembered; quiet ones are forgotten past this
MAX_IDS = 10_000  # distinct callbacks counted per line (past it: "at least")


@dataclass(slots=True)
class _Failures:
    logged_at: float  # when this receiver's last line was logged
    failed_at: float  # its last failure
    last: dict[str, Any]  # that failure's status and error
    attempts: int = 0  # failed attempts since the last line
    callbacks: set[int] = field(default_factory=set)  # their callbacks' ids


class RetryDigest:
    """Counts failed attempts per receiver and says which lines are due."""

    def __init__(self, every: float = 60.0) -> None:
        self._every = every
        self._hosts: dict[str, _Failures] = {}

    def add(
        self, host: str, webhook_id: int, now: float, last: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """A failed attempt to ``host`` (``last``: its status and error); the fields of each
        line to log now (none, most of the time)."""
        failures = self._hosts.get(host)
        if failures is None or now - failures.failed_at >= self._every:
            lines = [] if failures is None else self._unsaid(host, failures)
            self._forget_quiet(now)
            self._hosts[host] = _Failures(logged_at=now, failed_at=now, last=last)
            first = {"host": host, "failed_attempts": 1, "callbacks": 1, "seconds": 0}
            return [*lines, first | last]
        failures.attempts += 1
        failures.failed_at, failures.last = now, last
        if len(failures.callbacks) < MAX_IDS:
            failures.callbacks.add(webhook_id)
        if now - failures.logged_at < self._every:
            return []
        lines = self._unsaid(host, failures)
        self._hosts[host] = _Failures(logged_at=now, failed_at=now, last=last)
        return lines

    def _unsaid(self, host: str, failures: _Failures) -> list[dict[str, Any]]:
        """The line for the failures since ``failures``' last line (none if there were none)."""
        if not failures.attempts:
            return []
        seconds = round(failures.failed_at - failures.logged_at)
        fields = {"host": host, "failed_attempts": failures.attempts, "seconds": seconds}
        return [fields | {"callbacks": len(failures.callbacks)} | failures.last]

    def _forget_quiet(self, now: float) -> None:
        if len(self._hosts) < MAX_HOSTS:
            return
        quiet = [h for h, f in self._hosts.items() if now - f.failed_at >= self._every]
        for host in quiet or list(self._hosts)[: MAX_HOSTS // 2]:
            del self._hosts[host]
