"""The addresses of an inbound SMS (a reply) in E.164, read by their SMPP type of number.

An SMSC may write the sender in national form (``0612345678``, TON 2, or TON 0 "unknown" with
the national trunk prefix): it is a number of the country of the other end of the message,
our virtual number, which is international.
"""

from __future__ import annotations

from smsrelay.domain.numbers import parse_national, region_of_international
from smsrelay.errors import DomainError

__all__ = ["DEFAULT_REGION", "TON_INTERNATIONAL", "TON_NATIONAL", "TON_UNKNOWN", "e164_of"]

TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
# The API is SMS Partner's, a French provider: a national number with nothing better to go on.
DEFAULT_REGION = "FR"


def e164_of(address: str, ton: int, other_party: str, other_ton: int) -> str:
    """``address`` as "+" and international digits. A national number is read in the region
    of ``other_party``; "00" is the international prefix. An address that cannot be read
    keeps the form it always had, "+" and its digits, rather than losing the message."""
    digits = address.lstrip("+")
    if _is_national(address, ton):
        region = _region_of(other_party, other_ton) or DEFAULT_REGION
        try:
            return parse_national(digits, region).e164
        except DomainError:
            pass
    elif ton in (TON_UNKNOWN, TON_INTERNATIONAL, TON_NATIONAL) and digits.startswith("00"):
        digits = digits[2:]
    return "+" + digits


def _is_national(address: str, ton: int) -> bool:
    if address.startswith(("+", "00")):
        return False
    # No country code starts with 0: one leading 0 is a trunk prefix, whatever the TON says
    # (an SMSC that marks every address international sends "0612345678" as TON 1).
    leading_zero = ton in (TON_UNKNOWN, TON_INTERNATIONAL) and address.startswith("0")
    return ton == TON_NATIONAL or leading_zero


def _region_of(address: str, ton: int) -> str | None:
    if ton not in (TON_UNKNOWN, TON_INTERNATIONAL) or _is_national(address, ton):
        return None
    return region_of_international(address)
