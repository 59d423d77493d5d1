"""Retry delays as a pure formula; the caller stores the result as a due time."""

from __future__ import annotations

from dataclasses import dataclass

SUBMIT_RETRY_CAP = 300.0  # the longest wait before a part's submit is tried again, in seconds


@dataclass(frozen=True)
class BackoffPolicy:
    first: float = 1.0
    factor: float = 2.0
    cap: float = 600.0


def next_attempt_at(attempt: int, now: float, policy: BackoffPolicy, jitter: float) -> float:
    """When to try again after ``attempt`` failures (1-based); ``jitter`` in [0, 1) spreads
    a burst of retries over up to a quarter of the delay."""
    delay = min(policy.cap, policy.first * policy.factor ** max(0, attempt - 1))
    return now + delay * (1.0 + 0.25 * jitter)
