"""Marketing quiet hours: when a message may leave, and when a held one is released.

French rule (see docs/reference "Marketing quiet hours"): no marketing SMS between 20:00 and
08:00 Paris time, nor at any time on Sundays and public holidays. Saturday 08:00-20:00 is
sending time. A message accepted in a quiet period is released at 08:00 on the next *working
day*: a day that is neither a Sunday nor a public holiday (Saturday counts as working).

Holidays come from the ``holidays`` library, whose French calendar is exactly the eleven
national holidays (1 Jan, Easter Monday, 1 May, 8 May, Ascension, Whit Monday, 14 Jul, 15 Aug,
1 Nov, 11 Nov, 25 Dec); subdivision "57" adds Good Friday and 26 Dec for Alsace-Moselle (the
library refuses "67" and "68", so the three départements share "57"). The library follows the
law, so Whit Monday is missing in 2005-2007 (it was then the "journée de solidarité"). Its
calendar covers the years 1803-2100 only; outside them it silently knows no holidays, so
this module refuses any date whose Paris-local year falls outside that range.

Everything here is pure: the caller passes the instant; nothing reads the clock.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

__all__ = [
    "PARIS",
    "QuietHoursPolicy",
    "Region",
    "calendar_years",
    "is_quiet",
    "release_time",
    "same_answer_until",
]

PARIS = ZoneInfo("Europe/Paris")

SENDING_STARTS = time(8, 0)
SENDING_ENDS = time(20, 0)
_SUNDAY = 6  # date.weekday()


class Region(StrEnum):
    """Which French holiday calendar an account follows."""

    METROPOLE = "metropole"
    ALSACE_MOSELLE = "alsace-moselle"


@dataclass(frozen=True)
class QuietHoursPolicy:
    """An account's quiet-hours setting: on by default, metropolitan calendar."""

    enabled: bool = True
    region: Region = Region.METROPOLE


def is_quiet(at: datetime, policy: QuietHoursPolicy) -> bool:
    """True if a marketing message may not leave at the instant ``at`` (aware, any zone)."""
    if not policy.enabled:
        _require_aware(at)
        return False
    local = _paris(at)
    if not _is_working_day(local.date(), policy.region):
        return True
    return not SENDING_STARTS <= local.time() < SENDING_ENDS


def release_time(accepted_at: datetime, policy: QuietHoursPolicy) -> datetime:
    """When a message accepted at ``accepted_at`` may leave.

    ``accepted_at`` itself (the same object) when it is not quiet or the policy is off;
    otherwise 08:00 Paris time on the next working day, as an aware UTC datetime.
    """
    if not is_quiet(accepted_at, policy):
        return accepted_at
    local = _paris(accepted_at)
    day = local.date()
    if local.time() >= SENDING_STARTS:
        day += timedelta(days=1)
    while not _is_working_day(day, policy.region):
        day += timedelta(days=1)
    # 08:00 always exists exactly once in Paris (the DST switches happen at 02:00 and 03:00).
    return datetime.combine(day, SENDING_STARTS, tzinfo=PARIS).astimezone(UTC)


def same_answer_until(at: datetime, policy: QuietHoursPolicy) -> datetime | None:
    """Up to when (excluded) ``release_time`` answers every instant from ``at`` on alike: the
    release time itself while quiet (nothing in between may send), else the end of today's
    sending window, 20:00 Paris. None when the policy is off (never quiet). Lets a caller
    remember an answer instead of asking the calendar for every message."""
    if not policy.enabled:
        _require_aware(at)
        return None
    if is_quiet(at, policy):
        return release_time(at, policy)
    today = _paris(at).date()
    return datetime.combine(today, SENDING_ENDS, tzinfo=PARIS).astimezone(UTC)


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at.isoformat()}: quiet hours need an aware instant")


def _paris(at: datetime) -> datetime:
    _require_aware(at)
    return at.astimezone(PARIS)


def _is_working_day(day: date, region: Region) -> bool:
    return day.weekday() != _SUNDAY and day not in _holidays(region, day.year)


@functools.cache
def calendar_years() -> tuple[int, int]:
    """The years the holiday calendar covers. Imported here, not at the top: ``holidays``
    loads every country's calendar (0.5-1 s), which every CLI command paid; ``serve`` calls
    this at start, so no send pays it on the event loop."""
    from holidays.countries.france import France

    return France.start_year, France.end_year


@functools.cache
def _holidays(region: Region, year: int) -> frozenset[date]:
    from holidays import country_holidays

    first, last = calendar_years()
    if not first <= year <= last:
        raise ValueError(f"year {year} is outside the holiday calendar ({first}-{last})")
    subdiv = "57" if region is Region.ALSACE_MOSELLE else None
    return frozenset(country_holidays("FR", subdiv=subdiv, years=year))  # == holidays.France
