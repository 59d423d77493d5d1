"""Long messages: one part's esm_class, short_message and TLVs, and reading inbound parts.

Outbound, :func:`build_part` frames one part's payload (text octets without UDH) by the
connector's :class:`ConcatMethod`. Inbound, :func:`split_concat` finds the concatenation
reference by UDH (8- or 16-bit) or SAR TLVs and returns the part's text octets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from smsrelay.quick_init import quick_init
from smsrelay.smpp.pdu import ESM_CLASS_UDHI, Tag, Tlvs

_IEI_CONCAT_8 = 0x00
_IEI_CONCAT_16 = 0x08


class ConcatMethod(Enum):
    UDH8 = "udh8"
    UDH16 = "udh16"
    SAR = "sar"
    PAYLOAD = "payload"


@quick_init
@dataclass(frozen=True, slots=True)
class ConcatInfo:
    ref: int
    total: int
    seq: int


def _check(ref: int, total: int, seq: int) -> None:
    if not 0 <= ref <= 0xFFFF:
        raise ValueError(f"concatenation reference {ref} outside 0..65535")
    if not 1 <= seq <= total <= 255:
        raise ValueError(f"part {seq} of {total} outside 1..255")


def build_part(
    payload: bytes, ref: int, total: int, seq: int, method: ConcatMethod
) -> tuple[int, bytes, Tlvs]:
    """``(esm_class, short_message, tlvs)`` for part ``seq`` of ``total``.

    A single part (``total == 1``) carries no UDH and no SAR TLVs. With UDH8 only the low
    8 bits of ``ref`` are sent. ``PAYLOAD`` puts the octets in message_payload (0x0424), with
    SAR TLVs when there is more than one part.
    """
    _check(ref, total, seq)
    if method is ConcatMethod.PAYLOAD:
        tlvs: Tlvs = ((Tag.MESSAGE_PAYLOAD, payload),)
        return 0, b"", tlvs + (_sar_tlvs(ref, total, seq) if total > 1 else ())
    if total == 1:
        return 0, payload, ()
    if method is ConcatMethod.UDH8:
        udh = bytes((5, _IEI_CONCAT_8, 3, ref & 0xFF, total, seq))
        return ESM_CLASS_UDHI, udh + payload, ()
    if method is ConcatMethod.UDH16:
        udh = bytes((6, _IEI_CONCAT_16, 4, ref >> 8, ref & 0xFF, total, seq))
        return ESM_CLASS_UDHI, udh + payload, ()
    return 0, payload, _sar_tlvs(ref, total, seq)


def _sar_tlvs(ref: int, total: int, seq: int) -> Tlvs:
    return (
        (Tag.SAR_MSG_REF_NUM, ref.to_bytes(2, "big")),
        (Tag.SAR_TOTAL_SEGMENTS, bytes((total,))),
        (Tag.SAR_SEGMENT_SEQNUM, bytes((seq,))),
    )


def _valid(ref: int, total: int, seq: int) -> ConcatInfo | None:
    return ConcatInfo(ref, total, seq) if 1 <= seq <= total else None


def _from_udh(udh: bytes) -> ConcatInfo | None:
    pos = 0
    while pos + 2 <= len(udh):
        iei, length = udh[pos], udh[pos + 1]
        value = udh[pos + 2 : pos + 2 + length]
        if len(value) < length:
            return None
        if iei == _IEI_CONCAT_8 and length == 3:
            return _valid(value[0], value[1], value[2])
        if iei == _IEI_CONCAT_16 and length == 4:
            return _valid((value[0] << 8) | value[1], value[2], value[3])
        pos += 2 + length
    return None


def _from_sar(tlvs: Mapping[int, bytes]) -> ConcatInfo | None:
    ref = tlvs.get(Tag.SAR_MSG_REF_NUM)
    total = tlvs.get(Tag.SAR_TOTAL_SEGMENTS)
    seq = tlvs.get(Tag.SAR_SEGMENT_SEQNUM)
    if ref is None or total is None or seq is None or not total or not seq:
        return None
    return _valid(int.from_bytes(ref, "big"), total[0], seq[0])


def split_concat(
    esm_class: int, short_message: bytes, tlvs: Mapping[int, bytes] | Tlvs = ()
) -> tuple[ConcatInfo | None, bytes]:
    """The concatenation info of an inbound part (None for a whole message) and its octets.

    A UDH is stripped from the returned octets whatever it holds; a malformed UDH leaves the
    short_message untouched. When short_message is empty the message_payload TLV is the body.
    """
    table = tlvs if isinstance(tlvs, Mapping) else dict(tlvs)
    body = short_message or table.get(Tag.MESSAGE_PAYLOAD, b"")
    if esm_class & ESM_CLASS_UDHI and body:
        udh_length = body[0]
        if 1 + udh_length <= len(body):
            return _from_udh(body[1 : 1 + udh_length]), body[1 + udh_length :]
        return None, body
    return _from_sar(table), body
