"""Failed callback attempts, logged as one line a minute per receiver.

A receiver that is down fails every attempt of every callback for it; a line per attempt was
~150 lines a day per callback (each attempt is also in the store, where `smsrelay webhooks`
shows it). The first failure of a receiver is logged at once, then what failed since, once per
``every`` seconds while failures go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_HOSTS = 1000  # receivers remembered; quiet ones are forgotten past this


@dataclass(slots=True)
class _Failures:
    logged_at: float  # when this receiver's last line was logged
    attempts: int = 0  # failed attempts since that line
    callbacks: set[int] | None = None  # their callbacks' ids


class RetryDigest:
    """Counts failed attempts per receiver and says when a line is due."""

    def __init__(self, every: float = 60.0) -> None:
        self._every = every
        self._hosts: dict[str, _Failures] = {}

    def add(
        self, host: str, webhook_id: int, now: float, last: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A failed attempt to ``host`` (``last``: its status and error); the fields of the
        line to log when one is due, else None."""
        failures = self._hosts.get(host)
        if failures is None:
            self._forget_quiet(now)
            self._hosts[host] = _Failures(logged_at=now)
            first = {"host": host, "failed_attempts": 1, "callbacks": 1, "seconds": 0}
            return first | last
        failures.attempts += 1
        if failures.callbacks is None:
            failures.callbacks = set()
        failures.callbacks.add(webhook_id)
        if now - failures.logged_at < self._every:
            return None
        fields = {"host": host, "failed_attempts": failures.attempts}
        fields |= {"callbacks": len(failures.callbacks), "seconds": round(now - failures.logged_at)}
        self._hosts[host] = _Failures(logged_at=now)
        return fields | last

    def _forget_quiet(self, now: float) -> None:
        if len(self._hosts) < MAX_HOSTS:
            return
        quiet = [h for h, f in self._hosts.items() if now - f.logged_at >= self._every]
        for host in quiet or list(self._hosts)[: MAX_HOSTS // 2]:
            del self._hosts[host]
