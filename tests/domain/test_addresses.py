"""Inbound SMPP addresses to E.164 by their type of number, national forms included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsrelay.domain.addresses import e164_of
from smsrelay.domain.numbers import parse_national, region_of_international

OURS = "33757000001"  # a French virtual number, international (TON 1)


@pytest.mark.parametrize(
    ("address", "ton", "other", "other_ton", "e164"),
    [
        ("33612345678", 1, OURS, 1, "+33612345678"),  # international, as always
        ("+33612345678", 1, OURS, 1, "+33612345678"),
        ("0612345678", 2, OURS, 1, "+33612345678"),  # national
        ("612345678", 2, OURS, 1, "+33612345678"),  # national without the trunk prefix
        ("0612345678", 0, OURS, 1, "+33612345678"),  # unknown with one leading 0: national
        ("33612345678", 0, OURS, 1, "+33612345678"),  # unknown without: international
        ("0033612345678", 0, OURS, 1, "+33612345678"),  # 00: the international prefix
        ("0033612345678", 2, OURS, 1, "+33612345678"),
        ("0033612345678", 1, OURS, 1, "+33612345678"),
        ("0690001122", 2, OURS, 1, "+590690001122"),  # overseas prefix, as for `to`
        ("015112345678", 2, "4915123456789", 1, "+4915112345678"),  # the other party's country
        ("07911123456", 0, "447700900123", 1, "+447911123456"),
        ("0612345678", 2, "0757000001", 2, "+33612345678"),  # both national: FR
        ("0757000001", 2, "0612345678", 2, "+33757000001"),
        ("0612345678", 2, "999", 1, "+33612345678"),  # no country in the other: FR
        ("0999", 2, OURS, 1, "+0999"),  # unreadable: kept as it always was
        ("0612", 0, OURS, 1, "+0612"),
        ("INFO", 5, OURS, 1, "+INFO"),  # alphanumeric: untouched
        ("0612345678", 1, OURS, 1, "+33612345678"),  # TON 1, yet no country code starts with 0
        ("0999", 1, OURS, 1, "+0999"),  # ... unreadable nationally: kept as it always was
    ],
)
def test_e164_of(address: str, ton: int, other: str, other_ton: int, e164: str) -> None:
    assert e164_of(address, ton, other, other_ton) == e164


def test_a_french_mobile_shape_is_not_french_in_another_country() -> None:
    assert parse_national("0612345678", "DE").e164 != "+33612345678"


@pytest.mark.parametrize(
    ("number", "region"),
    [("33757000001", "FR"), ("+4915123456789", "DE"), ("0044123", "GB"), ("999", None)],
)
def test_region_of_international(number: str, region: str | None) -> None:
    assert region_of_international(number) == region


@given(st.text(max_size=20), st.integers(0, 7), st.text(max_size=20), st.integers(0, 7))
def test_never_raises_and_always_international(
    address: str, ton: int, other: str, other_ton: int
) -> None:
    assert e164_of(address, ton, other, other_ton).startswith("+")
