"""DueTimes remembers the calendar's answer only while it cannot change."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrelay.domain.quiet_hours import QuietHoursPolicy, Region, release_time
from smsrelay.service.due_times import DueTimes

FRIDAY_1959 = datetime(2026, 3, 6, 18, 59, tzinfo=UTC).timestamp()  # 19:59 in Paris


def asked_afresh(now: float, quiet_hours: bool, region: str) -> float:
    accepted = datetime.fromtimestamp(now, UTC)
    released = release_time(accepted, QuietHoursPolicy(quiet_hours, Region(region)))
    return now if released == accepted else released.timestamp()


def test_the_sending_window_ends_at_20h_even_in_the_middle_of_a_remembered_stretch() -> None:
    due = DueTimes()
    assert due.due_at(FRIDAY_1959, True, "metropole") == FRIDAY_1959  # sending: at once
    monday_8h = datetime(2026, 3, 9, 7, 0, tzinfo=UTC).timestamp()  # Saturday is a working day
    saturday_8h = datetime(2026, 3, 7, 7, 0, tzinfo=UTC).timestamp()
    assert due.due_at(FRIDAY_1959 + 60, True, "metropole") == saturday_8h  # 20:00: held
    assert due.due_at(FRIDAY_1959 + 86400 + 3600, True, "metropole") == monday_8h  # Sat 21:00
    assert due.due_at(FRIDAY_1959, False, "metropole") == FRIDAY_1959  # its own setting


def test_a_float_that_rounds_up_to_the_stretch_end_is_answered_as_the_end() -> None:
    # fromtimestamp rounds to the microsecond: the floats in the last half microsecond before
    # 20:00 (or before the release) are 20:00 (the release) to the calendar
    friday_20h = FRIDAY_1959 + 60
    saturday_8h = datetime(2026, 3, 7, 7, 0, tzinfo=UTC).timestamp()
    for start, end in [(FRIDAY_1959, friday_20h), (friday_20h, saturday_8h)]:
        due = DueTimes()
        due.due_at(start, True, "metropole")
        just_before = math.nextafter(end, -math.inf)
        assert due.due_at(just_before, True, "metropole") == asked_afresh(
            just_before, True, "metropole"
        )


def test_an_instant_datetime_cannot_hold_is_refused_even_inside_a_remembered_stretch() -> None:
    year_10000 = datetime.fromisoformat("9999-12-31T23:59:59-23:59").timestamp()  # UTC: 10000
    with pytest.raises(ValueError, match="out of range"):
        asked_afresh(year_10000, False, "metropole")
    due = DueTimes()
    assert due.due_at(FRIDAY_1959, False, "metropole") == FRIDAY_1959  # quiet hours off
    with pytest.raises(ValueError, match="out of range"):  # as before: the API answers 500
        due.due_at(year_10000, False, "metropole")
    first_refused = datetime.max.replace(tzinfo=UTC).timestamp()  # 10000-01-01 once rounded
    with pytest.raises(ValueError, match="out of range"):
        due.due_at(first_refused, False, "metropole")
    last = math.nextafter(first_refused, -math.inf)
    assert due.due_at(last, False, "metropole") == last == asked_afresh(last, False, "metropole")


# Any sequence of instants (the clock may step back) over a fortnight around a holiday.
MAY_2026 = datetime(2026, 4, 28, tzinfo=UTC).timestamp()
STEPS = st.lists(
    st.tuples(
        st.floats(min_value=-7200, max_value=30 * 3600),
        st.booleans(),
        st.sampled_from([r.value for r in Region]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS)
def test_any_sequence_is_answered_as_the_calendar_would(
    steps: list[tuple[float, bool, str]],
) -> None:
    due = DueTimes()
    now = MAY_2026
    for step, quiet_hours, region in steps:
        now = max(MAY_2026, now + step)
        assert due.due_at(now, quiet_hours, region) == asked_afresh(now, quiet_hours, region)


def _paris(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("now", "quiet"),
    [
        ("2026-04-03T10:00:00+02:00", {"alsace-moselle": "2026-04-04T08:00:00+02:00"}),  # Good Fri
        (
            "2026-03-06T20:00:00+01:00",
            {
                "metropole": "2026-03-07T08:00:00+01:00",
                "alsace-moselle": "2026-03-07T08:00:00+01:00",
            },
        ),
        ("2026-03-06T19:59:59+01:00", {}),
    ],
)
def test_the_regions_quiet_now_come_with_their_release(now: str, quiet: dict[str, str]) -> None:
    expected = {region: _paris(release) for region, release in quiet.items()}
    assert DueTimes().quiet_releases(_paris(now)) == expected
