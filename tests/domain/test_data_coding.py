"""Inbound text by data_coding: the SMPP 3.4 table and the GSM 03.38 coding groups."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsrelay.domain.data_coding import BINARY, GSM7, UCS2, alphabet_of, decode_sm_text


@pytest.mark.parametrize(
    ("data_coding", "alphabet"),
    [
        # SMPP 3.4 section 5.2.19
        (0x00, GSM7),
        (0x01, "ascii"),
        (0x02, BINARY),
        (0x03, "latin-1"),
        (0x04, BINARY),
        (0x05, "shift_jis"),
        (0x06, "iso8859-5"),
        (0x07, "iso8859-8"),
        (0x08, UCS2),
        (0x09, BINARY),
        (0x0A, "iso2022_jp"),
        (0x0B, GSM7),  # reserved: the default alphabet (3GPP TS 23.038)
        (0x0D, "shift_jis"),
        (0x0E, "euc_kr"),
        (0x0F, GSM7),
        # GSM general data coding 00xx: bits 3..2 name the alphabet, bit 5 compression
        (0x10, GSM7),
        (0x11, GSM7),
        (0x14, BINARY),
        (0x16, BINARY),
        (0x18, UCS2),
        (0x19, UCS2),
        (0x1C, GSM7),  # alphabet 11 is reserved
        (0x20, BINARY),  # compressed
        (0x38, BINARY),
        # 01xx: marked for automatic deletion, same bits (23.038)
        (0x40, GSM7),
        (0x44, BINARY),
        (0x48, UCS2),
        (0x80, GSM7),  # reserved groups 1000..1011
        (0xBF, GSM7),
        # message waiting indication
        (0xC0, GSM7),
        (0xC8, GSM7),
        (0xD3, GSM7),
        (0xDF, GSM7),
        (0xE0, UCS2),
        (0xEB, UCS2),
        # data coding / message class: bit 2 is 8-bit data
        (0xF0, GSM7),
        (0xF1, GSM7),
        (0xF3, GSM7),
        (0xF4, BINARY),
        (0xF5, BINARY),
        (0xFF, BINARY),
    ],
)
def test_alphabet_of(data_coding: int, alphabet: str) -> None:
    assert alphabet_of(data_coding) == alphabet


GSM_HELLO = bytes([0x00, 0x11, 0x1B, 0x65]) + b"ok"  # @ _ € in GSM 03.38


@pytest.mark.parametrize(
    ("body", "data_coding", "text"),
    [
        (GSM_HELLO, 0x00, "@_€ok"),
        (b"caf\xe9", 0x01, "caf\ufffd"),  # IA5 is 7-bit
        (b"caf\xe9", 0x03, "café"),
        (b"\x00\xff", 0x02, "00ff"),
        (b"\x00\xff", 0x04, "00ff"),
        ("こんにちは".encode("shift_jis"), 0x05, "こんにちは"),
        ("Привет".encode("iso8859-5"), 0x06, "Привет"),
        ("שלום".encode("iso8859-8"), 0x07, "שלום"),
        ("Ça 😀".encode("utf-16-be"), 0x08, "Ça 😀"),
        ("こんにちは".encode("iso2022_jp"), 0x0A, "こんにちは"),
        ("漢字".encode("shift_jis"), 0x0D, "漢字"),
        ("안녕하세요".encode("euc_kr"), 0x0E, "안녕하세요"),
        (GSM_HELLO, 0x11, "@_€ok"),
        (b"\x01\x02", 0x15, "0102"),
        ("Ça".encode("utf-16-be"), 0x18, "Ça"),
        (GSM_HELLO, 0xC0, "@_€ok"),
        (GSM_HELLO, 0xD8, "@_€ok"),
        ("Ça".encode("utf-16-be"), 0xE8, "Ça"),
        (GSM_HELLO, 0xF1, "@_€ok"),
        (b"\xca\xfe", 0xF6, "cafe"),
        ("a\x00b".encode("utf-16-be"), 0x08, "a\ufffdb"),  # NUL: shown as such, storable
        (b"a\x00b", 0x03, "a\ufffdb"),
    ],
)
def test_decode_sm_text(body: bytes, data_coding: int, text: str) -> None:
    assert decode_sm_text(body, data_coding) == text


@pytest.mark.parametrize(
    ("smsc_default", "text"),
    [(0, "¡¤§"), (1, "@$_"), (3, "@$_"), (8, "¡¤§")],  # only 1 and 3 re-map the default
)
def test_data_coding_0_follows_the_smsc_default_alphabet(smsc_default: int, text: str) -> None:
    assert decode_sm_text(b"@$_", 0x00, smsc_default) == text


def test_the_smsc_default_changes_nothing_but_data_coding_0() -> None:
    assert decode_sm_text(GSM_HELLO, 0x10, smsc_default=1) == "@_€ok"
    assert decode_sm_text(b"caf\xe9", 0x03, smsc_default=1) == "café"


@given(st.binary(max_size=64), st.integers(0, 255), st.sampled_from([0, 1, 3]))
def test_decoding_never_raises(body: bytes, data_coding: int, smsc_default: int) -> None:
    assert isinstance(decode_sm_text(body, data_coding, smsc_default), str)


def test_gsm_text_labelled_ia5_is_read_as_gsm() -> None:
    # node-smpp's SMSC labels GSM 03.38 text data_coding 1: "@", "$", "_", "é", "€" came out
    # as control characters in the posted reply (the interop review)
    from smsrelay.domain.text import encode_gsm7

    text = "a@b.com coûte 5€ {ok} under_score $ é à"
    written = encode_gsm7(text.replace("û", "u"))
    assert decode_sm_text(written, 1) == text.replace("û", "u")
    assert decode_sm_text(written, 0, smsc_default=1) == text.replace("û", "u")
    assert decode_sm_text(b"a@b.com [ok] $5 under_score", 1) == "a@b.com [ok] $5 under_score"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"Order\t#12: $5 @ shop_1", "Order\t#12: $5 @ shop_1"),
        (b"Ref a_b\x0cpage 2", "Ref a_b\x0cpage 2"),
        (b"Price $5 [ok]\x00", "Price $5 [ok]\ufffd"),
    ],
    ids=["a tab", "a form feed", "a NUL at the end"],
)
def test_an_ia5_text_with_a_tab_form_feed_or_padding_stays_ia5(body: bytes, text: str) -> None:
    assert decode_sm_text(body, 1) == text
