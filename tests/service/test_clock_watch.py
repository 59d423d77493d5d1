"""A step of the system clock is said in the log (an hour back held an hour's work)."""

from __future__ import annotations

import pytest

from smsrelay.service.clock_watch import ClockWatch


def test_a_step_of_the_wall_clock_is_logged_and_a_drift_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    offset = [1_000.0]
    watch = ClockWatch(lambda: offset[0])
    offset[0] += 0.2  # NTP slewing, the scheduler: nothing to say
    assert watch.check() == pytest.approx(0.2)
    offset[0] -= 3_600  # an hour back: the work due in it waits until the clock catches up
    assert watch.check() == -3_600
    offset[0] += 180_000  # fifty hours forward
    assert watch.check() == 180_000
    said = [(r.getMessage(), r.__dict__["seconds"]) for r in caplog.records]
    assert said == [("clock.stepped_back", 3_600), ("clock.stepped_forward", 180_000)]
