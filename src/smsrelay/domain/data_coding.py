"""Inbound short message text: which alphabet an SMPP ``data_coding`` octet names, and decoding.

SMPP 3.4 section 5.2.19 assigns 0x00..0x0E; the values it leaves to GSM 03.38 / 3GPP TS 23.038
are read as a GSM data coding scheme (coding groups 00xx, 01xx, 1100..1111). 8-bit data has no
text: it is shown as hex, so nothing the sender put in is lost.
"""

from __future__ import annotations

from types import MappingProxyType

from smsrelay.domain.text import decode_gsm7, decode_ucs2

__all__ = ["BINARY", "GSM7", "UCS2", "alphabet_of", "decode_sm_text"]

GSM7 = "gsm7"  # GSM 03.38 default alphabet, one septet per octet (SMPP never packs)
UCS2 = "ucs2"  # UTF-16-BE
BINARY = "binary"  # 8-bit data, no text

# SMPP 3.4 5.2.19; any other name is a Python codec.
_SMPP_ALPHABETS = MappingProxyType(
    {
        0x00: GSM7,  # SMSC default alphabet (see decode_sm_text's smsc_default)
        0x01: "ascii",  # IA5 (CCITT T.50) / ASCII (ANSI X3.4)
        0x02: BINARY,  # octet unspecified
        0x03: "latin-1",  # ISO-8859-1
        0x04: BINARY,  # octet unspecified
        0x05: "shift_jis",  # JIS X 0208-1990
        0x06: "iso8859-5",  # Cyrillic
        0x07: "iso8859-8",  # Latin/Hebrew
        0x08: UCS2,  # ISO/IEC 10646
        0x09: BINARY,  # pictogram encoding: no codec defined, keep the octets
        0x0A: "iso2022_jp",  # ISO-2022-JP (music codes)
        0x0D: "shift_jis",  # extended kanji JIS X 0212-1990, read like JIS
        0x0E: "euc_kr",  # KS C 5601
    }
)
# GSM coding groups 00xx / 01xx: the alphabet in bits 3..2; 11 is reserved.
_GROUP_ALPHABETS = (GSM7, BINARY, UCS2, GSM7)
_COMPRESSED = 0x20  # bit 5 in groups 00xx / 01xx: GSM 03.42 compression, not readable text
# What data_coding 0 means on an SMSC whose default alphabet is not GSM 03.38 (the connector's
# gsm_data_coding, as the outbound side re-encodes GSM text).
SMSC_DEFAULT_CODECS = MappingProxyType({0x01: "ascii", 0x03: "latin-1"})


def alphabet_of(data_coding: int) -> str:
    """GSM7, UCS2, BINARY or a Python codec name; a reserved value is the GSM default
    alphabet, as 3GPP TS 23.038 tells a receiver to assume."""
    if data_coding in _SMPP_ALPHABETS:
        return _SMPP_ALPHABETS[data_coding]
    group = data_coding >> 4
    if 0x1 <= group <= 0x7:  # general data coding (00xx), marked for automatic deletion (01xx)
        if data_coding & _COMPRESSED:
            return BINARY
        return _GROUP_ALPHABETS[(data_coding >> 2) & 0b11]
    if group in (0xC, 0xD):  # message waiting indication: discard / store, GSM alphabet
        return GSM7
    if group == 0xE:  # message waiting indication, store, UCS-2
        return UCS2
    if group == 0xF:  # data coding / message class: bit 2 is 8-bit data
        return BINARY if data_coding & 0x04 else GSM7
    return GSM7


# Bytes no IA5 text holds and GSM 03.38 writes letters with: @ 0x00, $ 0x02, è é ù ì ò
# 0x04-0x08, _ 0x11, the escape 0x1B (€ { } [ ] ~ ^ \ |), à 0x7F. Some SMSCs (node-smpp's)
# label GSM text data_coding 1 (IA5). Not a tab, a form feed or line breaks (an IA5 text may
# hold them), nor NULs at the end (padding).
_NOT_IA5 = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D} | {0x7F}


def written_in_gsm(body: bytes) -> bool:
    """Text labelled IA5/ASCII whose bytes say it is GSM 03.38 (unpacked)."""
    return not _NOT_IA5.isdisjoint(body.rstrip(b"\x00"))


def decode_sm_text(body: bytes, data_coding: int, smsc_default: int = 0) -> str:
    """The text of a short message; never raises. ``smsc_default`` says how the SMSC writes
    its default alphabet (data_coding 0): 0 GSM 03.38, 1 IA5/ASCII, 3 Latin-1. A NUL
    character reads as U+FFFD: it means nothing in a text, and PostgreSQL cannot store it."""
    return _decoded(body, data_coding, smsc_default).replace("\x00", "\ufffd")


def _decoded(body: bytes, data_coding: int, smsc_default: int) -> str:
    if data_coding == 0 and smsc_default in SMSC_DEFAULT_CODECS:
        codec = SMSC_DEFAULT_CODECS[smsc_default]
        if codec == "ascii" and written_in_gsm(body):
            return decode_gsm7(body)
        return body.decode(codec, "replace")
    alphabet = alphabet_of(data_coding)
    if alphabet == "ascii" and written_in_gsm(body):
        return decode_gsm7(body)
    if alphabet == GSM7:
        return decode_gsm7(body)
    if alphabet == UCS2:
        return decode_ucs2(body)
    if alphabet == BINARY:
        return body.hex()
    return body.decode(alphabet, "replace")
