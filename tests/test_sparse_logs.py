"""Sparse log lines: a burst is one line, and its end is told too."""

from __future__ import annotations

import logging
import time

import pytest

from smsrelay.logs import Sparse, SparseLine
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


async def test_a_sparse_line_names_the_last_occurrence_and_counts_every_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="smsrelay.test")
    line = SparseLine(logging.getLogger("smsrelay.test"), "store.refused", 0.2, "refused")
    line.note({"error": "disk full", "n": 0}, count=3)  # a write of three items refused
    for n in range(1, 50):
        line.note({"error": "disk full", "n": n})

    def said() -> list[tuple[int, int]]:
        return [(r.refused, r.n) for r in caplog.records if r.getMessage() == "store.refused"]

    assert said() == [(3, 0)]
    await eventually(lambda: said() == [(3, 0), (49, 49)])  # the rest, naming the last
