"""Recipient and sender numbers: the forms the API accepts and the region they resolve to."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsrelay.domain.numbers import Msisdn, parse_international, parse_recipient, parse_sender
from smsrelay.errors import DomainError


@pytest.mark.parametrize(
    ("raw", "e164", "region"),
    [
        # France: national, international with/without "+", with the 00 prefix, with separators
        ("0612345678", "+33612345678", "FR"),
        ("0756123456", "+33756123456", "FR"),
        ("+33612345678", "+33612345678", "FR"),
        ("33612345678", "+33612345678", "FR"),
        ("0033612345678", "+33612345678", "FR"),
        ("06 12 34 56 78", "+33612345678", "FR"),
        ("06.12.34.56.78", "+33612345678", "FR"),
        ("06-12-34-56-78", "+33612345678", "FR"),
        ("  +33 6 12 34 56 78\n", "+33612345678", "FR"),
        ("+33 (0)6 12 34 56 78", "+33612345678", "FR"),
        ("0508551234", "+33508551234", "FR"),  # a mainland landline, not Saint-Pierre
        # overseas France in national form: their own region, not FR
        ("0590201234", "+590590201234", "GP"),
        ("0590271234", "+590590271234", "BL"),  # 0590 27: Saint-Barthélemy
        ("0690001234", "+590690001234", "GP"),
        ("0596301234", "+596596301234", "MQ"),  # FR metadata would also take it: +33596…
        ("05 96 30 12 34", "+596596301234", "MQ"),
        ("0696201234", "+596696201234", "MQ"),
        ("0594101234", "+594594101234", "GF"),
        ("0694201234", "+594694201234", "GF"),
        ("0262161234", "+262262161234", "RE"),
        ("0692123456", "+262692123456", "RE"),
        ("0693123456", "+262693123456", "RE"),
        ("0269601234", "+262269601234", "YT"),  # FR metadata would also take it: +33269…
        ("0639012345", "+262639012345", "YT"),
        ("055 12 34", "+508551234", "PM"),
        ("+590690001234", "+590690001234", "GP"),
        ("262692123456", "+262692123456", "RE"),
        # other countries: international, with or without "+"
        ("+4915112345678", "+4915112345678", "DE"),
        ("4915112345678", "+4915112345678", "DE"),
        ("004915112345678", "+4915112345678", "DE"),
        ("+447400123456", "+447400123456", "GB"),
        ("447400123456", "+447400123456", "GB"),
        ("447911123456", "+447911123456", "GG"),  # libphonenumber puts 7911 12 in Guernsey
        ("+32470123456", "+32470123456", "BE"),
        ("32470123456", "+32470123456", "BE"),
        ("+12025550123", "+12025550123", "US"),
        ("12025550123", "+12025550123", "US"),
        ("+14165550123", "+14165550123", "CA"),
        ("+41781234567", "+41781234567", "CH"),
        ("+212650123456", "+212650123456", "MA"),
    ],
)
def test_valid_recipients(raw: str, e164: str, region: str) -> None:
    assert parse_recipient(raw) == Msisdn(e164, region)


@pytest.mark.parametrize(
    "raw",
    [
        "061234567",  # too short
        "0612345",  # a French mobile cut short: was read as Saint-Pierre's +508612345, charged
        "0212345",
        "06123456789",  # too long
        "0012345678",  # 00 + nonsense
        "612345678",  # French without its 0 reads as +61...: refused, not sent to Australia
        "0800FLOWERS",  # letters are not a keypad here
        "06abc12345",
        "+33 6 12 34 56 7x",
        "++33612345678",
        "33+612345678",
        "+0612345678",
        "+999123456",
        "+",
        "0",
        "٠٦١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "1" * 300,
        "0696123456 ext 12",
    ],
)
def test_invalid_recipients(raw: str) -> None:
    with pytest.raises(DomainError) as caught:
        parse_recipient(raw)
    assert (caught.value.code, caught.value.field) == ("number.invalid", "to")
    assert len(caught.value.message) < 120


@pytest.mark.parametrize("raw", ["", " ", "\t\n", " - . "])
def test_empty_recipient(raw: str) -> None:
    with pytest.raises(DomainError) as caught:
        parse_recipient(raw)
    assert (caught.value.code, caught.value.field) == ("number.required", "to")


@pytest.mark.parametrize(
    ("raw", "e164", "region"),
    [
        ("33612345678", "+33612345678", "FR"),
        ("+33612345678", "+33612345678", "FR"),
        ("+33 6 12 34 56 78", "+33612345678", "FR"),
        ("0033612345678", "+33612345678", "FR"),
        ("4915112345678", "+4915112345678", "DE"),
        ("447400123456", "+447400123456", "GB"),
    ],
)
def test_valid_senders(raw: str, e164: str, region: str) -> None:
    assert parse_sender(raw) == Msisdn(e164, region)


@pytest.mark.parametrize("raw", ["0612345678", "0590201234", "612345678", "33 6 12", "abc"])
def test_sender_must_be_international(raw: str) -> None:
    with pytest.raises(DomainError) as caught:
        parse_sender(raw)
    assert (caught.value.code, caught.value.field) == ("number.invalid", "from")


def test_empty_sender() -> None:
    with pytest.raises(DomainError) as caught:
        parse_sender("")
    assert (caught.value.code, caught.value.field) == ("number.required", "from")


def test_parse_international_names_the_field() -> None:
    with pytest.raises(DomainError) as caught:
        parse_international("0612345678", "phoneNumber")
    assert caught.value.field == "phoneNumber"
    assert parse_international("+33612345678", "phoneNumber").region == "FR"


def test_digits_drop_the_plus() -> None:
    assert parse_recipient("0612345678").digits == "33612345678"


# --- properties ---------------------------------------------------------------------------

# Mainland mobiles only: overseas ones (069x, 0639) have their own country codes.
french_mobiles = st.from_regex(r"0(6[0-24-8][0-9]|63[0-8]|7[3-9][0-9])[0-9]{6}", fullmatch=True)


@given(french_mobiles)
def test_every_accepted_form_of_a_number_agrees(national: str) -> None:
    try:
        expected = parse_recipient(national)
    except DomainError:
        return  # unallocated ranges are refused in every form alike
    international = "33" + national[1:]
    for form in (international, "+" + international, "00" + international):
        assert parse_recipient(form) == expected
        assert parse_sender(form) == expected


@given(st.text(max_size=40))
def test_any_input_gives_a_valid_number_or_a_domain_error(raw: str) -> None:
    try:
        number = parse_recipient(raw)
    except DomainError as error:
        assert error.code in {"number.invalid", "number.required"}
        return
    assert phonenumbers.is_valid_number(phonenumbers.parse(number.e164))
    assert number.e164 == "+" + number.digits


@given(st.sampled_from(["06", "07", "+336", "+337"]), st.text("0123456789", min_size=8, max_size=8))
def test_fast_french_mobile_path_agrees_with_libphonenumber(prefix: str, rest: str) -> None:
    from smsrelay.domain import numbers

    number = prefix + rest
    fast = numbers._fast_french_mobile(number)
    if fast is not None:
        regions = numbers._national_regions(number) if number[0] == "0" else (None,)
        assert numbers._lookup.__wrapped__(number, regions) == fast
