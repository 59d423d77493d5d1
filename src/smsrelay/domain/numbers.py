"""Phone numbers: the recipient (``to``) and sender (``from``) forms the API accepts.

Validation is libphonenumber's (``phonenumbers``); this module only decides which forms are
tried and in which region.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import phonenumbers

from smsrelay.errors import DomainError
from smsrelay.quick_init import quick_init

__all__ = [
    "Msisdn",
    "parse_international",
    "parse_national",
    "parse_recipient",
    "parse_sender",
    "region_of_international",
]

# Separators people type inside numbers, besides whitespace. Anything else but digits and a
# leading "+" is refused: phonenumbers would read letters as a keypad ("0800FLOWERS").
_SEPARATORS = str.maketrans("", "", ".-()/")
_DIGITS = frozenset("0123456789")

# A leading-0 number is French national form, but the overseas departments dial their own
# country codes behind French national prefixes (ARCEP plan). Route those prefixes to their
# region *before* FR: libphonenumber's FR metadata also accepts 0596… and 0269… as mainland
# numbers, which would yield an unroutable +33596… instead of Martinique's +596596….
# GP stands for +590 (region_code_for_number then tells BL and MF apart), RE for +262 (YT).
_OVERSEAS_PREFIXES = {
    **dict.fromkeys(("0590", "0690", "0691"), "GP"),
    **dict.fromkeys(("0596", "0696", "0697"), "MQ"),
    **dict.fromkeys(("0594", "0694"), "GF"),
    **dict.fromkeys(("0262", "0263", "0692", "0693"), "RE"),
    **dict.fromkeys(("0269", "0639"), "YT"),
}
# Elsewhere FR; Saint-Pierre-et-Miquelon's short national form (055 12 34) is not in the
# French plan at all, and is read only where its numbers are (4x xx xx, 5x xx xx): any seven
# digits would take a French number cut short ("0612345") abroad, charged at its price.
_SAINT_PIERRE = ("FR", "PM")
_SAINT_PIERRE_PREFIXES = ("04", "05")


@quick_init
@dataclass(frozen=True)
class Msisdn:
    """A valid phone number in E.164 form and the region it belongs to."""

    e164: str
    region: str

    @property
    def digits(self) -> str:
        """E.164 without the "+", as SMPP addresses carry it."""
        return self.e164.removeprefix("+")


def parse_recipient(raw: str) -> Msisdn:
    """``to``: French national form (06…, overseas 0590…) or any international form."""
    compact = _compact(raw, "to")
    if compact.startswith("0") and not compact.startswith("00"):
        return _first_valid(compact, _national_regions(compact), raw, "to")
    return _parse_international_compact(compact, raw, "to")


@functools.lru_cache(maxsize=1024)  # an account sends from its few numbers, again and again
def parse_sender(raw: str) -> Msisdn:
    """``from``: a virtual number, international form only (with or without "+")."""
    return parse_international(raw, "from")


def parse_international(raw: str, field: str) -> Msisdn:
    """``+336…``, ``336…`` or ``00336…``; a national (single leading 0) form is refused."""
    return _parse_international_compact(_compact(raw, field), raw, field)


def parse_national(raw: str, region: str) -> Msisdn:
    """A number in ``region``'s national form, with or without its trunk prefix (``0612345678``
    or ``612345678`` in FR); a French overseas prefix goes to its region, as for ``to``."""
    compact = _compact(raw, "number")
    if compact.startswith(("+", "00")):
        return _parse_international_compact(compact, raw, "number")
    if region == "FR":
        regions = _national_regions(compact if compact.startswith("0") else "0" + compact)
        found = _fast_french_mobile(compact) or _lookup(compact, regions)
    else:
        found = _lookup(compact, (region,))
    if found is None:
        raise _invalid(raw, "number", "not a valid phone number")
    return found


@functools.lru_cache(maxsize=1024)
def region_of_international(number: str) -> str | None:
    """The region of an international number (``+336…``, ``336…``, ``00336…``) by its country
    code alone, so a number outside the known ranges has one too; None for no country."""
    digits = number.removeprefix("+").removeprefix("00")
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_country_code(parsed.country_code or 0)  # 0: "ZZ"
    return region if region and region.isalpha() and region != "ZZ" else None


def _parse_international_compact(compact: str, raw: str, field: str) -> Msisdn:
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    elif compact.startswith("0"):
        raise _invalid(raw, field, "use the international form, e.g. 33612345678")
    # Bare digits are international without the "+": parsed in region FR, 447911123456 would
    # be read as a French national number and found invalid.
    return _first_valid(compact if compact.startswith("+") else "+" + compact, (None,), raw, field)


def _national_regions(compact: str) -> tuple[str, ...]:
    overseas = _OVERSEAS_PREFIXES.get(compact[:4])
    if overseas:
        return (overseas,)
    if len(compact) == 7 and compact.startswith(_SAINT_PIERRE_PREFIXES):
        return _SAINT_PIERRE
    return ("FR",)


def _compact(raw: str, field: str) -> str:
    if raw.isascii() and raw.removeprefix("+").isdigit():
        return raw  # already compact: the usual case, without the per-character translate
    compact = "".join(raw.split()).translate(_SEPARATORS)
    if not compact:
        what = "The sender (from)" if field == "from" else "The phone number"
        raise DomainError("number.required", f"{what} is required.", field=field)
    body = compact.removeprefix("+")
    if not body or not _DIGITS.issuperset(body):
        raise _invalid(raw, field, "only digits, an optional leading +, spaces, dots and dashes")
    return compact


def _first_valid(number: str, regions: tuple[str | None, ...], raw: str, field: str) -> Msisdn:
    found = _fast_french_mobile(number) or _lookup(number, regions)
    if found is None:
        raise _invalid(raw, field, "not a valid phone number")
    return found


# Parsing with libphonenumber costs ~15 us; the same senders and customers come back all day.
# An entry costs ~390 B: 65,536 of them held 25 MB after 11 minutes of varied recipients.
@functools.lru_cache(maxsize=16384)
def _lookup(number: str, regions: tuple[str | None, ...]) -> Msisdn | None:
    for region in regions:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            # "ZZ" is libphonenumber's "unknown region"; a valid number always has a region.
            return Msisdn(e164, phonenumbers.region_code_for_number(parsed) or "ZZ")
    return None


# The common case, metropolitan mobiles, checked against libphonenumber's own FR mobile
# pattern (so the verdict is the library's), without a full parse. 0639 and 069x are
# overseas (YT, GP, MQ, GF, RE) and take the slow path.
def _fr_mobile_pattern() -> re.Pattern[str]:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("FR")
    pattern = metadata.mobile.national_number_pattern if metadata and metadata.mobile else None
    return re.compile(pattern or r"(?!)")  # no metadata: never match, always the slow path


_FR_MOBILE = _fr_mobile_pattern()


def _fast_french_mobile(number: str) -> Msisdn | None:
    if len(number) == 10 and number[0] == "0":
        national = number[1:]
    elif len(number) == 12 and number.startswith("+33"):
        national = number[3:]
    else:
        return None
    if national[0] not in "67" or national.startswith(("639", "69")) or not national.isdigit():
        return None
    return Msisdn("+33" + national, "FR") if _FR_MOBILE.fullmatch(national) else None


def _invalid(raw: str, field: str, why: str) -> DomainError:
    shown = raw if len(raw) <= 40 else raw[:40] + "…"  # the input is the client's: keep it short
    return DomainError("number.invalid", f"Invalid phone number {shown!r}: {why}.", field=field)
