"""When an accepted message may leave, remembered for as long as the answer cannot change.

Every accept asks the quiet-hours calendar (a zone conversion, a holiday lookup, ~3-5 µs);
``same_answer_until`` tells how long its answer holds (until 20:00 while sending, until the
release while quiet), so one calendar question per account setting serves every message
accepted in that stretch.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from smsrelay.domain.quiet_hours import QuietHoursPolicy, Region, release_time, same_answer_until

# Quiet hours off: the answer never changes, but datetime.fromtimestamp refuses every float
# from this one on (10000-01-01 UTC), and refused them for every setting before DueTimes.
DATETIME_ENDS = datetime.max.replace(tzinfo=UTC).timestamp()


class DueTimes:
    """``due_at(now, quiet_hours, region)``: ``now`` when the message may leave at once, else
    the release time (epoch seconds). Holds one stretch per account setting."""

    def __init__(self) -> None:
        # (quiet_hours, region) -> (from, until, release or None: "at once"), epoch seconds
        self._stretches: dict[tuple[bool, str], tuple[float, float, float | None]] = {}

    def due_at(self, now: float, quiet_hours: bool, region: str) -> float:
        key = (quiet_hours, region)
        stretch = self._stretches.get(key)
        if stretch is None or not stretch[0] <= now < stretch[1]:
            stretch = _stretch_from(now, QuietHoursPolicy(quiet_hours, Region(region)))
            self._stretches[key] = stretch
        release = stretch[2]
        return now if release is None else release

    def quiet_releases(self, now: float) -> dict[str, float]:
        """The regions whose quiet hours hold a message now, each with its release time:
        empty in sending hours (the usual case, two cached lookups)."""
        releases = {}
        for region in Region:
            due = self.due_at(now, True, region)
            if due > now:
                releases[region.value] = due
        return releases


def _stretch_from(now: float, policy: QuietHoursPolicy) -> tuple[float, float, float | None]:
    accepted = datetime.fromtimestamp(now, UTC)
    released = release_time(accepted, policy)
    until = same_answer_until(accepted, policy)
    # Not quiet: "at once" (a round trip through datetime could land a microsecond later).
    release = None if released == accepted else released.timestamp()
    return now, DATETIME_ENDS if until is None else _first_float_at(until), release


def _first_float_at(until: datetime) -> float:
    """The least epoch float that ``datetime.fromtimestamp`` reads as ``until`` or later: it
    rounds to the microsecond, so the floats in the last half microsecond before ``until``
    are ``until`` to the calendar and must not be answered from the stretch before it."""
    bound = until.timestamp()  # exact: ``until`` is a whole second
    while datetime.fromtimestamp(below := math.nextafter(bound, -math.inf), UTC) >= until:
        bound = below
    return bound
