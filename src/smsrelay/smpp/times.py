"""SMPP 3.4 time strings (§7.1.1): the relative form used for a submit's validity period.

Relative times read ``YYMMDDhhmmss000R``: years, months, days, hours, minutes and seconds from
now, at the SMSC. Written here from seconds with years and months left at zero (a month has no
fixed length), so the longest is 99 days, 23:59:59.
"""

from __future__ import annotations

MAX_RELATIVE_SECONDS = 100 * 86400 - 1


def relative_time(seconds: int) -> str:
    """``seconds`` from now as an SMPP relative time (48 h: ``000002000000000R``)."""
    if not 0 < seconds <= MAX_RELATIVE_SECONDS:
        raise ValueError(f"a relative SMPP time is 1 s to 99 days, not {seconds} s")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"0000{days:02d}{hours:02d}{minutes:02d}{secs:02d}000R"


def relative_seconds(text: str) -> int | None:
    """The seconds a relative time stands for (months as 30 days, years as 365), or None when
    ``text`` is empty (the SMSC's default) or not in the relative form."""
    if len(text) != 16 or text[15] != "R" or not text[:15].isdigit():
        return None
    years, months, days, hours, minutes, secs = (int(text[i : i + 2]) for i in range(0, 12, 2))
    return ((years * 365 + months * 30 + days) * 24 + hours) * 3600 + minutes * 60 + secs
