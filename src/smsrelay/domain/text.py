"""Message text: SMS Partner's rewriting rules, GSM 03.38 / UCS-2 choice, and segmentation.

``prepare_text`` turns the ``message`` an API client sent into the exact text we deliver and
count; ``split_segments`` cuts that text into per-part payloads for SMPP (without UDH).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from smsrelay.errors import DomainError
from smsrelay.quick_init import quick_init

__all__ = [
    "MAX_PARTS",
    "Encoding",
    "PreparedText",
    "apply_replacements",
    "decode_gsm7",
    "decode_ucs2",
    "encode_gsm7",
    "is_gsm7",
    "prepare_text",
    "split_segments",
]


class Encoding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


MAX_PARTS = 10

# Capacities in units: septets for GSM7, UTF-16 code units for UCS2. A concatenated part loses
# 6 octets to its UDH: 7 septets in GSM7 (160 -> 153), 3 code units in UCS2 (70 -> 67).
_SINGLE_CAPACITY = {Encoding.GSM7: 160, Encoding.UCS2: 70}
_PART_CAPACITY = {Encoding.GSM7: 153, Encoding.UCS2: 67}

_ESCAPE = 0x1B

# GSM 03.38 default alphabet, in septet order (0x1B is the escape to the extension table and
# is not a character of its own, so it is left out of the encoding map).
_BASIC_ALPHABET = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_DECODE_BASIC: dict[int, str] = dict(enumerate(_BASIC_ALPHABET))
_DECODE_EXTENSION: dict[int, str] = dict(_EXTENSION)
_ENCODE: dict[str, bytes] = {
    char: bytes((code,)) for code, char in _DECODE_BASIC.items() if code != _ESCAPE
} | {char: bytes((_ESCAPE, code)) for code, char in _EXTENSION.items()}
_GSM_CHARS = frozenset(_ENCODE)
# The same table for str.translate: each character to its septets as latin-1 code points.
_SEPTETS = str.maketrans({char: code.decode("latin-1") for char, code in _ENCODE.items()})
_EXTENSION_CHARS = tuple(_EXTENSION.values())

# SMS Partner's "special characters" table (compatibility.md): stricter than GSM 03.38.
_REPLACEMENT_TABLE: dict[str, str | None] = {
    **dict.fromkeys("ÿ", "y"),
    **dict.fromkeys("ûü", "u"),
    **dict.fromkeys("ïî", "i"),
    **dict.fromkeys("ôöó", "o"),
    **dict.fromkeys("ëê", "e"),
    "µ": "u",
    **dict.fromkeys("äáâã", "a"),
    **dict.fromkeys("ÄÀÁÂÃ", "A"),
    **dict.fromkeys("ÈÊË", "E"),
    "Î": "I",
    **dict.fromkeys("ÜÙÚÛ", "U"),
    "Ý": "Y",
    **dict.fromkeys("ÖÔ", "O"),
    "ñ": "n",
    "Ñ": "N",
    "ç": "Ç",
    "ą": "à",
    "œ": "oe",
    "°": ".",
    **dict.fromkeys("[{", "("),
    **dict.fromkeys("]}", ")"),
    **dict.fromkeys("^~|\\¨§", ""),
    **dict.fromkeys("’‘`", "'"),
    **dict.fromkeys("“”«»", '"'),
}
_REPLACEMENTS = str.maketrans(_REPLACEMENT_TABLE)
# One C scan says whether a text needs the (per-character, much slower) translate at all.
_NEEDS_REPLACING = re.compile("[" + re.escape("".join(_REPLACEMENT_TABLE)) + "]")
_NOT_GSM = re.compile("[^" + re.escape("".join(sorted(_GSM_CHARS))) + "]")
_EXTENSION_RE = re.compile("[" + re.escape("".join(_EXTENSION_CHARS)) + "]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@quick_init
@dataclass(frozen=True)
class PreparedText:
    """The text as it will be delivered, and what it costs in units and SMS parts."""

    text: str
    encoding: Encoding
    units: int
    segments: int


def prepare_text(raw: str, *, stop_suffix: str = "", narrow: str | None = None) -> PreparedText:
    """Apply the API's text rules to ``raw``, append the STOP mention, pick an encoding, count.

    ``narrow``: the codec (``ascii``, ``latin-1``) of the sender's SMSC when its default
    alphabet is IA5 or Latin-1: GSM text with a character outside it goes as UCS-2 (it would
    otherwise reach the phone as ``?``)."""
    body = apply_replacements(_expand_markup(raw))
    if _shows_nothing(body):  # blank, or only signs the replacement table deletes ("^~|")
        raise DomainError(
            "message.required",
            "the message is required (nothing is left once the characters SMS cannot carry "
            "are removed)",
            field="message",
        )
    text = body + stop_suffix
    gsm = is_gsm7(text) and (narrow is None or _fits(text, narrow))
    encoding = Encoding.GSM7 if gsm else Encoding.UCS2
    units = _count_units(text, encoding)
    segments = count_segments(text, encoding, units)
    if segments > MAX_PARTS:
        raise DomainError(
            "message.too_many_parts",
            f"A message cannot exceed {MAX_PARTS} concatenated SMS (this one needs {segments}).",
            field="message",
        )
    return PreparedText(text, encoding, units, segments)


def count_segments(text: str, encoding: Encoding, units: int) -> int:
    """How many SMS ``text`` (``units`` long) takes: as ``split_segments`` cuts it."""
    if units <= _SINGLE_CAPACITY[encoding]:
        return 1  # most messages, without a split
    if units == len(text):  # no two-unit character (escape or surrogate pair) to keep whole
        return -(-units // _PART_CAPACITY[encoding])
    return len(split_segments(text, encoding))


def _expand_markup(raw: str) -> str:
    # NFC first: a decomposed "é" (e + combining accent, as macOS keyboards send it) is one GSM
    # character once composed, and would otherwise force the whole message into UCS-2.
    text = raw if raw.isascii() else unicodedata.normalize("NFC", _replace_lone_surrogates(raw))
    return text.replace('\\"', '"').replace(":br:", "\r\n").replace(":euro:", "€")


def _replace_lone_surrogates(text: str) -> str:
    # A lone surrogate (possible from a JSON "\ud83d" escape) is not a character: no encoding
    # can carry it, so it becomes U+FFFD rather than a crash at submit time.
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")


def apply_replacements(text: str) -> str:
    """SMS Partner's replacement table: accents, brackets, deleted signs, typographic quotes."""
    if _NEEDS_REPLACING.search(text) is None:
        return text
    return text.translate(_REPLACEMENTS)


# Categories of characters a phone shows as nothing: separators, controls, format characters
# (zero-width space, byte order mark, word joiner) and marks with no letter to sit on; but the
# format characters that are drawn (Arabic and Syriac number signs, the end of an ayah)
_INVISIBLE = frozenset(("Zs", "Zl", "Zp", "Cc", "Cf", "Mn"))
_DRAWN_FORMAT = frozenset(
    "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u08e2\U000110bd\U000110cd"
)
_VISIBLE_ASCII = re.compile("[!-~]")


def _shows_nothing(body: str) -> bool:
    """Blank, or only invisible characters (a message of a zero-width space was sent and
    charged as UCS-2)."""
    if body.isascii():
        return _VISIBLE_ASCII.search(body) is None
    return all(
        unicodedata.category(char) in _INVISIBLE and char not in _DRAWN_FORMAT for char in body
    )


def _fits(text: str, codec: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM 03.38 default alphabet or its extension table."""
    return _NOT_GSM.search(text) is None


def encode_gsm7(text: str) -> bytes:
    """Unpacked septets, one per octet; extension characters as ESC (0x1B) + code."""
    try:
        return b"".join(_ENCODE[char] for char in text)
    except KeyError as exc:
        raise DomainError(
            "text.not_gsm", f"{exc.args[0]!r} is not in the GSM 03.38 alphabet.", field="message"
        ) from None


def decode_gsm7(data: bytes) -> str:
    """Unpacked septets to text; never raises (an invalid septet becomes "?")."""
    chars: list[str] = []
    index = 0
    while index < len(data):
        code = data[index]
        if code == _ESCAPE and index + 1 < len(data):
            index += 1
            chars.append(_decode_escaped(data[index]))
        else:
            chars.append(_DECODE_BASIC.get(code, "?") if code != _ESCAPE else "?")
        index += 1
    return "".join(chars)


def _decode_escaped(code: int) -> str:
    if code in _DECODE_EXTENSION:
        return _DECODE_EXTENSION[code]
    # 3GPP TS 23.038: an unknown extension code is shown as its default-alphabet character.
    if code == _ESCAPE:
        return "?"
    return _DECODE_BASIC.get(code, "?")


def decode_ucs2(data: bytes) -> str:
    """UTF-16-BE to text; never raises (odd trailing octet and lone surrogates become U+FFFD)."""
    return data.decode("utf-16-be", "replace")


def split_segments(text: str, encoding: Encoding) -> list[bytes]:
    """Per-part payload octets (no UDH); never splits a GSM escape pair or a surrogate pair.

    Always returns at least one part (an empty text is one empty SMS).
    """
    octets = _encode_whole(text, encoding)
    unit = 1 if encoding is Encoding.GSM7 else 2
    if len(octets) <= _SINGLE_CAPACITY[encoding] * unit:
        return [octets]
    return _cut(octets, _PART_CAPACITY[encoding] * unit, encoding)


def _encode_whole(text: str, encoding: Encoding) -> bytes:
    if encoding is Encoding.GSM7:
        if not is_gsm7(text):
            encode_gsm7(text)  # raises text.not_gsm naming the offending character
        return text.translate(_SEPTETS).encode("latin-1")
    return text.encode("utf-16-be", "surrogatepass")


def _cut(octets: bytes, capacity: int, encoding: Encoding) -> list[bytes]:
    """Full parts of ``capacity`` octets, each ending one unit early where it would otherwise
    end between the two halves of a character (ESC + code, or a surrogate pair)."""
    parts: list[bytes] = []
    start = 0
    while len(octets) - start > capacity:
        end = start + capacity
        if encoding is Encoding.GSM7 and octets[end - 1] == _ESCAPE:
            end -= 1  # 0x1B only ever starts a pair: no character is encoded as 0x1B
        elif encoding is Encoding.UCS2 and 0xD8 <= octets[end - 2] <= 0xDB:
            end -= 2  # a high surrogate: its low half is the next unit
        parts.append(octets[start:end])
        start = end
    parts.append(octets[start:])
    return parts


def _count_units(text: str, encoding: Encoding) -> int:
    if encoding is Encoding.GSM7:
        # Extension characters take two septets (ESC + code); everything else takes one.
        return len(text) + len(_EXTENSION_RE.findall(text))
    return len(text.encode("utf-16-be", "surrogatepass")) // 2
