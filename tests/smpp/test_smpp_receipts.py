"""Receipts: Appendix B format, lenient parsing, and hex/decimal id matching."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrelay.smpp.pdu import MessageState
from smsrelay.smpp.receipts import (
    LEARN_AFTER,
    RECENT_RESP_IDS,
    VOTE_AFTER_RESPS,
    ReceiptIdForm,
    ReceiptText,
    carrier_id_candidates,
    format_receipt,
    normalise_carrier_id,
    parse_receipt,
    read_receipt_fields,
)

SUBMIT = datetime(2024, 3, 9, 14, 5)
DONE = datetime(2024, 3, 9, 14, 6)


def test_format_is_appendix_b() -> None:
    text = format_receipt("0001e240", "DELIVRD", submit_date=SUBMIT, done_date=DONE, text="Hi")
    assert text == (
        "id:0001e240 sub:001 dlvrd:001 submit date:2403091405 done date:2403091406 "
        "stat:DELIVRD err:000 text:Hi"
    )


def test_format_truncates_text_and_counts_undelivered() -> None:
    text = format_receipt("7", "UNDELIV", submit_date=SUBMIT, done_date=DONE, err=1, text="x" * 30)
    assert "dlvrd:000" in text and "err:001" in text
    assert text.endswith("text:" + "x" * 20)


def test_parse_reads_what_format_writes() -> None:
    text = format_receipt("abc", "DELIVRD", submit_date=SUBMIT, done_date=DONE, text="héllo: you")
    assert parse_receipt(text) == ReceiptText(
        id="abc",
        sub=1,
        dlvrd=1,
        submit_date=SUBMIT,
        done_date=DONE,
        stat="DELIVRD",
        err="000",
        text="héllo: you",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # seconds in the dates, upper-case keys
            "ID:12345 SUB:001 DLVRD:001 SUBMIT DATE:240309140512 DONE DATE:240309140633 "
            "STAT:DELIVRD ERR:000 TEXT:hello",
            ReceiptText(
                "12345",
                1,
                1,
                datetime(2024, 3, 9, 14, 5, 12),
                datetime(2024, 3, 9, 14, 6, 33),
                "DELIVRD",
                "000",
                "hello",
            ),
        ),
        (  # fields missing, lower-case stat, no text
            "id:77 stat:undeliv err:034",
            ReceiptText("77", stat="UNDELIV", err="034"),
        ),
        (  # underscores and long words
            "id:0A1B submit_date:2403091405 done_date:2403091406 stat:DELIVERED",
            ReceiptText("0A1B", submit_date=SUBMIT, done_date=DONE, stat="DELIVRD"),
        ),
        (  # a bad date is dropped, an empty err is None
            "id:1 submit date:99999999 stat:EXPIRED err: text:",
            ReceiptText("1", stat="EXPIRED", text=""),
        ),
    ],
)
def test_parse_is_lenient(text: str, expected: ReceiptText) -> None:
    assert parse_receipt(text) == expected


@pytest.mark.parametrize("text", ["", "hello there", "stat:DELIVRD err:000", "id: stat:DELIVRD"])
def test_parse_without_an_id_is_none(text: str) -> None:
    assert parse_receipt(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stat:DELIVRD err:000", ReceiptText("", stat="DELIVRD", err="000")),
        (
            "sub:001 dlvrd:000 STAT:undeliverable ERR:034",
            ReceiptText("", 1, 0, stat="UNDELIV", err="034"),
        ),
        ("id: stat:EXPIRED", ReceiptText("", stat="EXPIRED")),
        ("hello there", ReceiptText("")),
        ("id:7 stat:DELIVRD", ReceiptText("7", stat="DELIVRD")),
    ],
)
def test_fields_are_read_without_an_id(text: str, expected: ReceiptText) -> None:
    assert read_receipt_fields(text) == expected


def test_stat_maps_to_message_state() -> None:
    assert parse_receipt("id:1 stat:DELIVRD").state is MessageState.DELIVERED  # type: ignore[union-attr]
    assert parse_receipt("id:1 stat:REJECTD").state is MessageState.REJECTED  # type: ignore[union-attr]
    assert parse_receipt("id:1 stat:WHATEVER").state is None  # type: ignore[union-attr]


@settings(deadline=None)  # no flaky deadlines on a loaded machine
@given(st.text())
def test_parse_never_raises(text: str) -> None:
    parse_receipt(text)


@pytest.mark.parametrize(
    ("raw", "key"),
    [("0001E240", "1e240"), ("  ABC ", "abc"), ("000", "0"), ("42", "42"), ("", "")],
)
def test_normalise_carrier_id(raw: str, key: str) -> None:
    assert normalise_carrier_id(raw) == key


@pytest.mark.parametrize(
    ("receipt_id", "candidates"),
    [
        ("123456", ("123456", "1e240", "1193046")),  # decimal digits: both readings
        ("0001E240", ("1e240", "123456")),  # hex: its decimal value
        ("ff", ("ff", "255")),
        ("msg-42", ("msg-42",)),  # neither: only itself
        ("0", ("0",)),
    ],
)
def test_carrier_id_candidates_own_key_first(receipt_id: str, candidates: tuple[str, ...]) -> None:
    assert carrier_id_candidates(receipt_id) == candidates


@settings(deadline=None)  # no flaky deadlines on a loaded machine
@given(st.integers(0, 2**64))
def test_hex_and_decimal_forms_of_one_id_meet(number: int) -> None:
    hex_form, dec_form = f"{number:016X}", str(number)
    assert normalise_carrier_id(hex_form) in carrier_id_candidates(dec_form)
    assert normalise_carrier_id(dec_form) in carrier_id_candidates(hex_form)


def test_huge_ids_are_not_reinterpreted() -> None:
    assert carrier_id_candidates("9" * 200) == ("9" * 200,)


def _learnt(resp_ids: list[str], receipt_ids: list[str], configured: str = "auto") -> str:
    forms = ReceiptIdForm(configured)
    for resp_id in resp_ids:
        forms.saw_resp(resp_id)
    for receipt_id in receipt_ids:
        forms.form_for(receipt_id)
    _more_resps(forms, VOTE_AFTER_RESPS)  # the receipts' votes are counted by then
    return forms.form


def _more_resps(forms: ReceiptIdForm, count: int) -> None:
    for n in range(count):
        forms.saw_resp(f"other-{n}")  # reads no way as any id of these tests


HEX_IDS = [format(n, "x") for n in range(0x1000, 0x1000 + LEARN_AFTER)]


def test_receipts_found_only_under_their_decimal_reading_teach_decimal() -> None:
    decimal = [str(int(i, 16)) for i in HEX_IDS]
    assert _learnt(HEX_IDS, decimal) == "decimal"
    assert _learnt(HEX_IDS, decimal[:-1]) == "auto"  # one vote short


def test_one_vote_the_other_way_keeps_it_at_auto() -> None:
    decimal = [str(int(i, 16)) for i in HEX_IDS]
    assert _learnt([*HEX_IDS, "2000"], [HEX_IDS[0], *decimal]) == "auto"  # "1000" as written too


@pytest.mark.parametrize(
    ("resp_ids", "receipt_ids"),
    [
        ([str(n) for n in range(1, 10)] * 3, [str(n) for n in range(1, 10)] * 3),  # same every way
        ([], [str(n) for n in range(100, 200)]),  # overtook their resp, or another node's
    ],
    ids=["ids that read the same every way", "resp ids never seen"],
)
def test_receipts_that_cannot_tell_do_not_vote(resp_ids: list[str], receipt_ids: list[str]) -> None:
    assert _learnt(resp_ids, receipt_ids) == "auto"


def test_receipts_that_overtake_their_resp_do_not_teach_their_other_reading() -> None:
    # A fast SMSC with a small counter, the same form both sides: each receipt comes before
    # its resp. At once, receipt "22" is found only as "16" (its decimal value in hex): 16
    # such receipts taught "decimal", and every later receipt was looked up wrongly. Counted
    # later, "22" reads every way (no vote) and "399" only as written.
    forms = ReceiptIdForm()
    for n in range(1, 400):
        forms.form_for(str(n))
        forms.saw_resp(str(n))
    _more_resps(forms, VOTE_AFTER_RESPS)
    assert forms.form == "same"


def test_receipts_after_their_resp_still_teach_the_form_they_read() -> None:
    resp_ids = [str(n) for n in range(3_000_000_000, 3_000_000_000 + LEARN_AFTER)]
    assert _learnt(resp_ids, resp_ids) == "same"
    forms = ReceiptIdForm()
    for resp_id in resp_ids:
        forms.saw_resp(resp_id)
        forms.form_for(resp_id)
    _more_resps(forms, VOTE_AFTER_RESPS - 1)
    assert forms.form == "auto"  # the last vote is not counted yet
    _more_resps(forms, 1)
    assert forms.form == "same"


def test_a_configured_form_is_never_changed() -> None:
    assert _learnt(HEX_IDS, HEX_IDS, configured="hex") == "hex"


def test_learning_keeps_a_bounded_number_of_resp_ids() -> None:
    forms = ReceiptIdForm()
    for n in range(RECENT_RESP_IDS * 2):
        forms.saw_resp(str(n))
    assert forms.form_for("0") == "auto"  # the oldest is forgotten: no vote
    assert len(forms._recent) == RECENT_RESP_IDS
