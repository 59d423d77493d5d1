"""Sparse log lines: a burst is one line, and its end is told too."""

from __future__ import annotations

import time

from smsrelay.logs import Sparse
from tests.support import eventually


async def test_a_burst_is_said_at_once_then_its_rest_when_the_period_ends() -> None:
    # The diff review: 49,000 wrong keys in 10 s, then silence, left one line saying 1.
    said: list[int] = []
    sparse = Sparse(0.2, said.append)
    for _ in range(1000):
        sparse.note(time.monotonic())
    assert said == [1]  # the first at once
    await eventually(lambda: said == [1, 999])  # the rest when the period ends, unasked
    sparse.note(time.monotonic())  # a later event after a quiet period: at once again
    await eventually(lambda: said == [1, 999, 1])
