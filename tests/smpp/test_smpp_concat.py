"""Concatenation: UDH 8/16-bit, SAR and message_payload, built then split back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrelay.smpp.concat import ConcatInfo, ConcatMethod, build_part, split_concat
from smsrelay.smpp.pdu import Tag


def test_udh8_layout() -> None:
    esm, sm, tlvs = build_part(b"abc", ref=0x1234, total=3, seq=2, method=ConcatMethod.UDH8)
    assert (esm, sm, tlvs) == (0x40, bytes.fromhex("050003340302") + b"abc", ())


def test_udh16_layout() -> None:
    esm, sm, tlvs = build_part(b"abc", ref=0x1234, total=3, seq=2, method=ConcatMethod.UDH16)
    assert (esm, sm, tlvs) == (0x40, bytes.fromhex("06080412340302") + b"abc", ())


def test_sar_layout() -> None:
    esm, sm, tlvs = build_part(b"abc", ref=0x1234, total=3, seq=2, method=ConcatMethod.SAR)
    assert (esm, sm) == (0, b"abc")
    assert tlvs == ((0x020C, b"\x12\x34"), (0x020E, b"\x03"), (0x020F, b"\x02"))


def test_payload_puts_the_octets_in_message_payload() -> None:
    esm, sm, tlvs = build_part(b"x" * 400, ref=1, total=1, seq=1, method=ConcatMethod.PAYLOAD)
    assert (esm, sm, tlvs) == (0, b"", ((Tag.MESSAGE_PAYLOAD, b"x" * 400),))
    assert split_concat(esm, sm, tlvs) == (None, b"x" * 400)


@pytest.mark.parametrize("method", [ConcatMethod.UDH8, ConcatMethod.UDH16, ConcatMethod.SAR])
def test_a_single_part_has_no_concatenation(method: ConcatMethod) -> None:
    assert build_part(b"hello", ref=7, total=1, seq=1, method=method) == (0, b"hello", ())


@pytest.mark.parametrize(("ref", "total", "seq"), [(-1, 2, 1), (65536, 2, 1), (1, 2, 3), (1, 0, 0)])
def test_invalid_numbers_are_refused(ref: int, total: int, seq: int) -> None:
    with pytest.raises(ValueError):
        build_part(b"", ref, total, seq, ConcatMethod.UDH8)


@settings(deadline=None)  # no flaky deadlines on a loaded machine
@given(
    payload=st.binary(max_size=140),
    ref=st.integers(0, 0xFFFF),
    total=st.integers(2, 255),
    data=st.data(),
    method=st.sampled_from(list(ConcatMethod)),
)
def test_build_then_split_round_trips(
    payload: bytes, ref: int, total: int, data: st.DataObject, method: ConcatMethod
) -> None:
    seq = data.draw(st.integers(1, total))
    esm, sm, tlvs = build_part(payload, ref, total, seq, method)
    info, body = split_concat(esm, sm, dict(tlvs))
    expected_ref = ref & 0xFF if method is ConcatMethod.UDH8 else ref
    assert info == ConcatInfo(expected_ref, total, seq)
    assert body == payload


def test_split_skips_other_information_elements() -> None:
    # UDHL 8: IE 0x24 (national language) of 1 octet, then 8-bit concatenation ref 0x2A, 2 parts
    sm = bytes.fromhex("0824010100032a0201") + b"hi"
    assert split_concat(0x40, sm) == (ConcatInfo(0x2A, 2, 1), b"hi")


def test_split_of_a_plain_message() -> None:
    assert split_concat(0, b"hello") == (None, b"hello")


def test_malformed_udh_leaves_the_message_alone() -> None:
    assert split_concat(0x40, b"\x09\x00\x03") == (None, b"\x09\x00\x03")
    assert split_concat(0x40, b"\x05\x00\x03\x01\x02\x05hi") == (None, b"hi")  # seq > total


@settings(deadline=None)  # no flaky deadlines on a loaded machine
@given(
    st.integers(0, 255),
    st.binary(max_size=200),
    st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=3)),
)
def test_split_never_raises(esm: int, sm: bytes, tlvs: dict[int, bytes]) -> None:
    split_concat(esm, sm, tlvs)
