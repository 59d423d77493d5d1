"""Dates as SMS Partner shows them: Paris wall-clock time, to the second."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smsrelay.service.dates import paris_text


@pytest.mark.parametrize(
    ("utc", "shown"),
    [
        ("2026-03-29T00:59:59.75", "2026-03-29 01:59:59"),  # last second of winter time
        ("2026-03-29T01:00:00", "2026-03-29 03:00:00"),  # clocks jump forward
        ("2026-10-25T00:30:00", "2026-10-25 02:30:00"),  # first 02:30 (summer time)
        ("2026-10-25T01:30:00", "2026-10-25 02:30:00"),  # second 02:30 (winter time)
        ("2026-11-25T09:00:00.999", "2026-11-25 10:00:00"),  # fractions are cut, not rounded
    ],
)
def test_paris_text_shows_paris_wall_clock_seconds(utc: str, shown: str) -> None:
    epoch = datetime.fromisoformat(utc).replace(tzinfo=UTC).timestamp()
    assert paris_text(epoch) == shown
    assert paris_text(epoch) == shown  # the second call comes from the per-second cache


def test_no_date_stays_none() -> None:
    assert paris_text(None) is None
