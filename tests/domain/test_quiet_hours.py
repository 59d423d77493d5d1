"""Quiet hours: named cases, a whole-year sweep against an independent oracle, and properties.

The oracle below shares no code with the module: it computes the holidays itself (Easter by
the Meeus/Jones/Butcher algorithm, no ``holidays`` library) and finds the release instant by
walking forward one hour at a time until it reaches an instant that is not quiet.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrelay.domain.quiet_hours import (
    PARIS,
    QuietHoursPolicy,
    Region,
    is_quiet,
    release_time,
    same_answer_until,
)

METROPOLE = QuietHoursPolicy()
ALSACE = QuietHoursPolicy(region=Region.ALSACE_MOSELLE)
DISABLED = QuietHoursPolicy(enabled=False)
PARIS_TZ = ZoneInfo("Europe/Paris")  # the oracle's own zone object
HOUR = timedelta(hours=1)


# --- the oracle ---------------------------------------------------------------------------


def easter_sunday(year: int) -> date:
    """Anonymous Gregorian algorithm (Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    el = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * el) // 451
    month, day = divmod(h + el - 7 * m + 114, 31)
    return date(year, month, day + 1)


@functools.cache
def oracle_holidays(year: int, alsace: bool) -> frozenset[date]:
    easter = easter_sunday(year)
    days = {
        date(year, 1, 1),
        easter + timedelta(days=1),  # Easter Monday
        date(year, 5, 1),
        date(year, 5, 8),
        easter + timedelta(days=39),  # Ascension
        date(year, 7, 14),
        date(year, 8, 15),
        date(year, 11, 1),
        date(year, 11, 11),
        date(year, 12, 25),
    }
    if not 2005 <= year <= 2007:  # Whit Monday was the "journée de solidarité" then
        days.add(easter + timedelta(days=50))
    if alsace:
        days |= {easter - timedelta(days=2), date(year, 12, 26)}  # Good Friday, St Stephen
    return frozenset(days)


def oracle_is_quiet(at: datetime, alsace: bool) -> bool:
    local = at.astimezone(PARIS_TZ)
    day = local.date()
    if day.isoweekday() == 7 or day in oracle_holidays(day.year, alsace):
        return True
    return local.hour < 8 or local.hour >= 20


def oracle_release(at: datetime, alsace: bool) -> datetime:
    if not oracle_is_quiet(at, alsace):
        return at
    # Paris is a whole number of hours from UTC, so whole UTC hours are whole local hours.
    step = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + HOUR
    while oracle_is_quiet(step, alsace):
        step += HOUR
    return step


def policy_for(alsace: bool) -> QuietHoursPolicy:
    return ALSACE if alsace else METROPOLE


# --- the library's calendar is the one the rules name -------------------------------------


@pytest.mark.parametrize("alsace", [False, True], ids=["metropole", "alsace-moselle"])
def test_library_holidays_match_the_eleven_national_ones(alsace: bool) -> None:
    subdiv = "57" if alsace else None
    for year in range(2000, 2101):
        library = frozenset(holidays.country_holidays("FR", years=year, subdiv=subdiv))
        assert library == oracle_holidays(year, alsace), year


def test_alsace_moselle_adds_good_friday_and_st_stephen() -> None:
    extra = frozenset(holidays.country_holidays("FR", years=2026, subdiv="57")) - frozenset(
        holidays.country_holidays("FR", years=2026)
    )
    assert extra == {date(2026, 4, 3), date(2026, 12, 26)}


# --- named cases --------------------------------------------------------------------------

NAMED_CASES = [
    # (name, accepted at, policy, released at; None = not quiet, leaves at once)
    ("weekday 10:00 is sending time", "2026-01-13T10:00+01:00", METROPOLE, None),
    ("weekday 08:00 sharp is sending time", "2026-01-13T08:00+01:00", METROPOLE, None),
    ("weekday 19:59:59.999999", "2026-01-13T19:59:59.999999+01:00", METROPOLE, None),
    ("weekday 20:00 sharp is quiet", "2026-01-13T20:00+01:00", METROPOLE, "2026-01-14T07:00Z"),
    ("weekday 07:59:59.999999", "2026-01-13T07:59:59.999999+01:00", METROPOLE, "2026-01-13T07:00Z"),
    ("saturday 10:00 is sending time", "2026-01-10T10:00+01:00", METROPOLE, None),
    ("saturday 19:59 is sending time", "2026-01-10T19:59+01:00", METROPOLE, None),
    ("monday 07:00 -> monday 08:00", "2026-01-12T07:00+01:00", METROPOLE, "2026-01-12T07:00Z"),
    ("friday 21:00 -> saturday 08:00", "2026-01-09T21:00+01:00", METROPOLE, "2026-01-10T07:00Z"),
    ("saturday 07:00 -> saturday 08:00", "2026-01-10T07:00+01:00", METROPOLE, "2026-01-10T07:00Z"),
    ("saturday 21:00 -> monday 08:00", "2026-01-10T21:00+01:00", METROPOLE, "2026-01-12T07:00Z"),
    ("sunday 15:00 -> monday 08:00", "2026-01-11T15:00+01:00", METROPOLE, "2026-01-12T07:00Z"),
    ("sunday 00:00 -> monday 08:00", "2026-01-11T00:00+01:00", METROPOLE, "2026-01-12T07:00Z"),
    # DST: last Sunday of March (29 Mar 2026, 02:00 -> 03:00) and of October (25 Oct 2026).
    ("spring: saturday 21:00 CET", "2026-03-28T21:00+01:00", METROPOLE, "2026-03-30T06:00Z"),
    ("spring: sunday 01:59 CET", "2026-03-29T01:59+01:00", METROPOLE, "2026-03-30T06:00Z"),
    ("spring: sunday 03:00 CEST", "2026-03-29T03:00+02:00", METROPOLE, "2026-03-30T06:00Z"),
    ("spring: monday 07:59 CEST", "2026-03-30T07:59+02:00", METROPOLE, "2026-03-30T06:00Z"),
    ("spring: monday 08:00 CEST", "2026-03-30T08:00+02:00", METROPOLE, None),
    ("autumn: saturday 21:00 CEST", "2026-10-24T21:00+02:00", METROPOLE, "2026-10-26T07:00Z"),
    ("autumn: sunday 02:30 CEST", "2026-10-25T02:30+02:00", METROPOLE, "2026-10-26T07:00Z"),
    ("autumn: sunday 02:30 CET", "2026-10-25T02:30+01:00", METROPOLE, "2026-10-26T07:00Z"),
    ("autumn: monday 07:59 CET", "2026-10-26T07:59+01:00", METROPOLE, "2026-10-26T07:00Z"),
    ("autumn: friday 20:00 CEST", "2026-10-23T20:00+02:00", METROPOLE, "2026-10-24T06:00Z"),
    # Holidays.
    ("1 January: eve 21:00", "2025-12-31T21:00+01:00", METROPOLE, "2026-01-02T07:00Z"),
    ("1 January: noon", "2026-01-01T12:00+01:00", METROPOLE, "2026-01-02T07:00Z"),
    ("Easter Monday: saturday 21:00", "2026-04-04T21:00+02:00", METROPOLE, "2026-04-07T06:00Z"),
    ("Easter Monday: 10:00", "2026-04-06T10:00+02:00", METROPOLE, "2026-04-07T06:00Z"),
    ("14 July: monday 21:00", "2026-07-13T21:00+02:00", METROPOLE, "2026-07-15T06:00Z"),
    ("14 July: 12:00", "2026-07-14T12:00+02:00", METROPOLE, "2026-07-15T06:00Z"),
    ("Ascension: wednesday 20:00", "2026-05-13T20:00+02:00", METROPOLE, "2026-05-15T06:00Z"),
    ("Whit Monday: saturday 20:30", "2026-05-23T20:30+02:00", METROPOLE, "2026-05-26T06:00Z"),
    ("25 December: thursday 20:00", "2026-12-24T20:00+01:00", METROPOLE, "2026-12-26T07:00Z"),
    ("15 August on a saturday", "2026-08-14T21:00+02:00", METROPOLE, "2026-08-17T06:00Z"),
    ("1 May on a saturday", "2027-04-30T21:00+02:00", METROPOLE, "2027-05-03T06:00Z"),
    ("1 November on a monday", "2027-10-30T21:00+02:00", METROPOLE, "2027-11-02T07:00Z"),
    ("25 December on a saturday", "2027-12-24T21:00+01:00", METROPOLE, "2027-12-27T07:00Z"),
    ("1 January on a saturday", "2027-12-31T21:00+01:00", METROPOLE, "2028-01-03T07:00Z"),
    # Alsace-Moselle: Good Friday and 26 December.
    ("metropole: Good Friday works", "2026-04-02T21:00+02:00", METROPOLE, "2026-04-03T06:00Z"),
    ("alsace: Good Friday", "2026-04-02T21:00+02:00", ALSACE, "2026-04-04T06:00Z"),
    ("alsace: Good Friday noon", "2026-04-03T12:00+02:00", ALSACE, "2026-04-04T06:00Z"),
    ("alsace: 25 and 26 December", "2026-12-24T20:00+01:00", ALSACE, "2026-12-28T07:00Z"),
    ("alsace: 26 December noon", "2026-12-26T12:00+01:00", ALSACE, "2026-12-28T07:00Z"),
    ("metropole: 26 December works", "2026-12-26T12:00+01:00", METROPOLE, None),
    ("alsace: sunday, 25, 26 Dec", "2028-12-23T21:00+01:00", ALSACE, "2028-12-27T07:00Z"),
    ("metropole: sunday, 25 Dec", "2028-12-23T21:00+01:00", METROPOLE, "2028-12-26T07:00Z"),
    # Disabled: never quiet.
    ("disabled: sunday", "2026-01-11T15:00+01:00", DISABLED, None),
    ("disabled: 14 July night", "2026-07-14T23:00+02:00", DISABLED, None),
]


@pytest.mark.parametrize(
    ("accepted", "policy", "released"),
    [case[1:] for case in NAMED_CASES],
    ids=[case[0] for case in NAMED_CASES],
)
def test_named_case(accepted: str, policy: QuietHoursPolicy, released: str | None) -> None:
    at = datetime.fromisoformat(accepted)
    result = release_time(at, policy)
    if released is None:
        assert not is_quiet(at, policy)
        assert result is at
    else:
        assert is_quiet(at, policy)
        assert result == datetime.fromisoformat(released)
        assert result.tzinfo is UTC
        assert result.astimezone(PARIS).time() == time(8, 0)


@pytest.mark.parametrize(
    "zone",
    [UTC, PARIS, ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo"), timezone(-HOUR * 11)],
    ids=str,
)
def test_the_instant_matters_not_its_zone(zone: timezone | ZoneInfo) -> None:
    friday_night = datetime(2026, 1, 9, 21, 0, tzinfo=PARIS).astimezone(zone)
    assert release_time(friday_night, METROPOLE) == datetime(2026, 1, 10, 7, 0, tzinfo=UTC)
    saturday_noon = datetime(2026, 1, 10, 12, 0, tzinfo=PARIS).astimezone(zone)
    assert not is_quiet(saturday_noon, METROPOLE)


@pytest.mark.parametrize("policy", [METROPOLE, ALSACE, DISABLED], ids=repr)
def test_naive_datetimes_are_refused(policy: QuietHoursPolicy) -> None:
    naive = datetime(2026, 1, 11, 15, 0)
    with pytest.raises(ValueError, match="naive"):
        is_quiet(naive, policy)
    with pytest.raises(ValueError, match="naive"):
        release_time(naive, policy)


@pytest.mark.parametrize(
    "at",
    [datetime(2101, 1, 3, 12, tzinfo=PARIS), datetime(1802, 1, 5, 12, tzinfo=PARIS)],
    ids=["2101", "1802"],
)
def test_years_outside_the_holiday_calendar_are_refused(at: datetime) -> None:
    with pytest.raises(ValueError, match="outside the holiday calendar"):
        is_quiet(at, METROPOLE)


def test_policy_defaults_and_immutability() -> None:
    policy = QuietHoursPolicy()
    assert policy.enabled is True
    assert policy.region is Region.METROPOLE
    assert Region("alsace-moselle") is Region.ALSACE_MOSELLE
    with pytest.raises(AttributeError):
        policy.enabled = False  # type: ignore[misc]


# --- every hour of whole years against the oracle -----------------------------------------


def instants_of(year: int) -> Iterator[datetime]:
    """Every UTC hour of the Paris-local year, plus the edges around 08:00 and 20:00."""
    at = datetime(year, 1, 1, tzinfo=PARIS).astimezone(UTC)
    end = datetime(year + 1, 1, 1, tzinfo=PARIS).astimezone(UTC)
    while at < end:
        yield at
        at += HOUR
    day = date(year, 1, 1)
    while day.year == year:
        for hour in (8, 20):
            edge = datetime.combine(day, time(hour), tzinfo=PARIS)
            yield edge - timedelta(minutes=1)
            yield edge - timedelta(microseconds=1)
            yield edge
            yield edge + timedelta(minutes=59)
        day += timedelta(days=1)


# 2026: 15 Aug on a Saturday. 2027: 1 & 8 May and 25 Dec on a Saturday, 1 Nov on a Monday.
# 2028: 1 Jan and 11 Nov on a Saturday, 1 & 8 May and 25 Dec on a Monday.
@pytest.mark.parametrize("alsace", [False, True], ids=["metropole", "alsace-moselle"])
@pytest.mark.parametrize("year", [2026, 2027, 2028])
def test_whole_year_matches_the_oracle(year: int, alsace: bool) -> None:
    policy = policy_for(alsace)
    mismatches = []
    count = 0
    for at in instants_of(year):
        count += 1
        expected = oracle_release(at, alsace)
        quiet = is_quiet(at, policy)
        released = release_time(at, policy)
        if quiet != oracle_is_quiet(at, alsace) or released != expected:
            mismatches.append((at.astimezone(PARIS).isoformat(), quiet, released, expected))
    assert count > 8760
    assert mismatches[:10] == []


# --- properties ---------------------------------------------------------------------------

ZONES = st.one_of(
    st.sampled_from(
        [
            UTC,
            PARIS,
            ZoneInfo("America/New_York"),
            ZoneInfo("Pacific/Kiritimati"),
            ZoneInfo("Pacific/Pago_Pago"),
            ZoneInfo("Asia/Kolkata"),
        ]
    ),
    st.integers(min_value=-12 * 4, max_value=14 * 4).map(
        lambda quarters: timezone(timedelta(minutes=15 * quarters))
    ),
)
# Local bounds; the end leaves room for a release on the next working day inside 2100.
INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 28), timezones=ZONES
)
POLICIES = st.builds(QuietHoursPolicy, enabled=st.booleans(), region=st.sampled_from(Region))


@settings(max_examples=500, deadline=None)
@given(at=INSTANTS, policy=POLICIES)
def test_release_is_never_early_and_never_quiet(at: datetime, policy: QuietHoursPolicy) -> None:
    released = release_time(at, policy)
    assert released >= at
    assert not is_quiet(released, policy)
    if not policy.enabled:
        assert released is at
        assert not is_quiet(at, policy)
    elif is_quiet(at, policy):
        assert released.tzinfo is UTC
        assert released.astimezone(PARIS).time() == time(8, 0)
        assert released - at < timedelta(days=5)
    else:
        assert released is at


@settings(max_examples=500, deadline=None)
@given(at=INSTANTS, alsace=st.booleans())
def test_any_instant_matches_the_oracle(at: datetime, alsace: bool) -> None:
    policy = policy_for(alsace)
    assert is_quiet(at, policy) == oracle_is_quiet(at, alsace)
    assert release_time(at, policy) == oracle_release(at, alsace)


@settings(max_examples=500, deadline=None)
@given(at=INSTANTS, policy=POLICIES, fraction=st.floats(min_value=0, max_value=1))
def test_every_instant_before_same_answer_until_is_answered_alike(
    at: datetime, policy: QuietHoursPolicy, fraction: float
) -> None:
    until = same_answer_until(at, policy)
    if until is None:
        assert not policy.enabled
        return
    assert until > at
    later = at + (until - at) * fraction
    if later >= until:  # fraction 1 (or rounding): the window's own end is not covered
        later = until - timedelta(microseconds=1)
    if is_quiet(at, policy):
        assert until == release_time(at, policy) == release_time(later, policy)
    else:
        assert release_time(later, policy) is later  # still sending time
        assert is_quiet(until, policy)  # and it ends when quiet starts


def test_same_answer_until_on_the_named_edges() -> None:
    friday_1959 = datetime(2026, 3, 6, 19, 59, tzinfo=PARIS_TZ)
    assert same_answer_until(friday_1959, METROPOLE) == datetime(2026, 3, 6, 20, 0, tzinfo=PARIS_TZ)
    saturday_2100 = datetime(2026, 3, 7, 21, 0, tzinfo=PARIS_TZ)  # quiet until Monday 08:00
    assert same_answer_until(saturday_2100, METROPOLE) == datetime(
        2026, 3, 9, 8, 0, tzinfo=PARIS_TZ
    )
    assert same_answer_until(saturday_2100, DISABLED) is None
