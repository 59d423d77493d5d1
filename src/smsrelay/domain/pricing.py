"""Prices: per-SMS prices by destination region, in integer micro-euros.

Money is never a float in arithmetic: EUR amounts enter as decimal strings (or numbers turned
into their shortest decimal form), are converted once to integer micros, and leave as floats
only when rendered into JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, DecimalException, InvalidOperation, localcontext
from types import MappingProxyType

import phonenumbers

from smsrelay.errors import DomainError

__all__ = [
    "DEFAULT_PRICES_EUR",
    "MAX_MICROS",
    "MICROS_PER_EUR",
    "PriceTable",
    "eur_to_micros",
    "format_eur",
    "message_cost",
    "micros_to_eur",
]

MICROS_PER_EUR = 1_000_000
_ONE_MICRO = Decimal(1).scaleb(-6)

_FR_PRICE = "0.045"
_EU_PRICE = "0.065"

# Price per SMS part, by ISO 3166 region as phonenumbers reports it. Plausible defaults for a
# fresh install; operators replace them with their carrier's tariff.
DEFAULT_PRICES_EUR: Mapping[str, str] = MappingProxyType(
    {
        "FR": _FR_PRICE,
        # Overseas departments and collectivities have their own country codes (+590, +262...).
        **dict.fromkeys(("GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF"), "0.080"),
        **dict.fromkeys(("NC", "PF", "WF"), "0.120"),
        "MC": "0.065",
        "BE": "0.070",
        "LU": "0.070",
        "CH": "0.075",
        "DE": "0.075",
        **dict.fromkeys(("ES", "IT", "PT", "NL", "AT", "IE", "DK", "SE", "FI", "GR"), _EU_PRICE),
        **dict.fromkeys(("PL", "CZ", "SK", "HU", "RO", "BG", "HR", "SI"), _EU_PRICE),
        **dict.fromkeys(("EE", "LV", "LT", "CY", "MT"), _EU_PRICE),
        # The Channel Islands and Man share +44 but phonenumbers names them apart.
        **dict.fromkeys(("GB", "GG", "JE", "IM"), "0.050"),
        "NO": "0.070",
        **dict.fromkeys(("US", "CA"), "0.030"),
        "MA": "0.110",
        "TN": "0.130",
        "DZ": "0.140",
        **dict.fromkeys(("SN", "CI"), "0.090"),
    }
)


@dataclass(frozen=True)
class PriceTable:
    """Per-SMS price in micro-euros, by region."""

    micros_by_region: Mapping[str, int]

    @classmethod
    def from_eur(cls, prices: Mapping[str, str | float | int]) -> PriceTable:
        """Build from EUR amounts; ValueError on a bad region code or a negative/garbage price."""
        micros: dict[str, int] = {}
        for region, price in prices.items():
            if not _is_region_code(region):
                raise ValueError(f"region code must be two upper-case letters, got {region!r}")
            if region not in phonenumbers.SUPPORTED_REGIONS:  # its price could never apply
                raise ValueError(
                    f"{region!r} is no region of the phone numbering plan (ISO 3166-1 codes: "
                    "GB, not UK, for the United Kingdom)"
                )
            amount = eur_to_micros(price)
            if amount < 0:
                raise ValueError(f"price for {region} must not be negative, got {price!r}")
            micros[region] = amount
        return cls(MappingProxyType(micros))

    def price_per_sms(self, region: str) -> int:
        """Micro-euros per SMS part to ``region``; DomainError ``price.missing`` when unpriced."""
        try:
            return self.micros_by_region[region]
        except KeyError:
            raise DomainError(
                "price.missing", f"No price for destination region {region!r}.", field="to"
            ) from None


def _is_region_code(region: str) -> bool:
    return len(region) == 2 and region.isascii() and region.isalpha() and region.isupper()


def message_cost(table: PriceTable, region: str, segments: int) -> int:
    """Micro-euros for a message of ``segments`` parts: each part is charged as one SMS."""
    if segments < 0:
        raise ValueError(f"segments must not be negative, got {segments}")
    return table.price_per_sms(region) * segments


# The largest amount (and credit) in micros: a trillion EUR, well inside a 64-bit integer
# column (SQLite stores past it as a float, which no code reading credit expects).
MAX_MICROS = 10**18


def eur_to_micros(value: str | float | int | Decimal) -> int:
    """EUR amount to integer micros, rounding half-up; ValueError on garbage, NaN, infinity
    or an amount beyond MAX_MICROS either way."""
    if isinstance(value, bool):  # bool is an int: True would silently be 1 EUR
        raise ValueError(f"not an amount: {value!r}")
    # str(float) is the shortest decimal that round-trips: 0.045 stays 0.045, not 0.04499...
    text = str(value).strip() if isinstance(value, str | float) else value
    try:
        amount = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"not an amount: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    with localcontext() as context:
        context.prec = 60  # room for any sane amount; a larger one fails, never rounds twice
        try:
            # Round the exact input once, to the micro; scaleb then only moves the exponent.
            rounded = amount.quantize(_ONE_MICRO, rounding=ROUND_HALF_UP)
            micros = int(rounded.scaleb(6))
        except DecimalException:  # InvalidOperation, Overflow: too many digits for micros
            raise ValueError(f"amount out of range: {value!r}") from None
    if abs(micros) > MAX_MICROS:
        raise ValueError(f"amount out of range (at most {MAX_MICROS // MICROS_PER_EUR:,} EUR)")
    return micros


def micros_to_eur(micros: int) -> float:
    """Micros as a EUR float for JSON rendering (at most 6 decimals)."""
    return round(micros / MICROS_PER_EUR, 6)


def format_eur(micros: int) -> str:
    """Decimal string with at least 3 decimals, trailing zeros beyond those dropped.

    45_000 -> "0.045", 12_000_000 -> "12.000", 1_234_567 -> "1.234567".
    """
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_EUR)
    decimals = f"{fraction:06d}".rstrip("0").ljust(3, "0")
    return f"{sign}{whole}.{decimals}"
