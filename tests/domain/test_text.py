"""Message text rules: replacements, encoding choice, counting and segmentation."""

from __future__ import annotations

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec used as the oracle)
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from smsrelay.domain.text import (
    MAX_PARTS,
    Encoding,
    PreparedText,
    apply_replacements,
    decode_gsm7,
    decode_ucs2,
    encode_gsm7,
    is_gsm7,
    prepare_text,
    split_segments,
)
from smsrelay.errors import DomainError

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = "\f^{}\\[~]|€"
GSM_ALPHABET = GSM_BASIC + GSM_EXTENSION


def oracle_encode(text: str) -> bytes:
    return text.encode("gsm03.38")


# --- replacements -------------------------------------------------------------------------

REPLACEMENTS = [
    ("ÿ", "y"),
    ("û", "u"),
    ("ü", "u"),
    ("ï", "i"),
    ("ô", "o"),
    ("ö", "o"),
    ("ó", "o"),
    ("î", "i"),
    ("ë", "e"),
    ("ê", "e"),
    ("µ", "u"),
    ("ä", "a"),
    ("á", "a"),
    ("â", "a"),
    ("ã", "a"),
    ("Ä", "A"),
    ("À", "A"),
    ("Á", "A"),
    ("Â", "A"),
    ("Ã", "A"),
    ("È", "E"),
    ("Ê", "E"),
    ("Ë", "E"),
    ("Î", "I"),
    ("Ü", "U"),
    ("Ù", "U"),
    ("Ú", "U"),
    ("Û", "U"),
    ("Ý", "Y"),
    ("Ö", "O"),
    ("Ô", "O"),
    ("ñ", "n"),
    ("Ñ", "N"),
    ("ç", "Ç"),
    ("ą", "à"),
    ("œ", "oe"),
    ("°", "."),
    ("[", "("),
    ("]", ")"),
    ("{", "("),
    ("}", ")"),
    ("^", ""),
    ("~", ""),
    ("|", ""),
    ("\\", ""),
    ("¨", ""),
    ("§", ""),
    ("’", "'"),
    ("‘", "'"),
    ("`", "'"),
    ("“", '"'),
    ("”", '"'),
    ("«", '"'),
    ("»", '"'),
]


@pytest.mark.parametrize(("char", "replacement"), REPLACEMENTS)
def test_each_replacement(char: str, replacement: str) -> None:
    assert apply_replacements(f"a{char}b") == f"a{replacement}b"
    assert prepare_text(f"a{char}b").text == f"a{replacement}b"


@pytest.mark.parametrize(("char", "replacement"), REPLACEMENTS)
def test_replacements_leave_gsm_text(char: str, replacement: str) -> None:
    assert is_gsm7(replacement)


def test_replacements_leave_other_text_alone() -> None:
    assert apply_replacements("Bonjour é è à ù ! 😀 Œ") == "Bonjour é è à ù ! 😀 Œ"


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("a:br:b", "a\r\nb"),
        ("a:br::br:", "a\r\n\r\n"),
        ("5 :euro:", "5 €"),
        (":euro::euro:", "€€"),
        ('say \\"hi\\"', 'say "hi"'),
        ("a\\b", "ab"),  # a lone backslash is deleted by the table
        (":BR: :Euro:", ":BR: :Euro:"),  # markup is case-sensitive
        ("cafe\u0301", "café"),  # decomposed accent is composed (NFC), stays GSM
        ("\ud83d\ude00", "😀"),  # a surrogate pair from a JSON escape becomes one character
        ("a\ud83db", "a\ufffdb"),  # a lone surrogate cannot be sent
    ],
)
def test_markup_and_escapes(raw: str, text: str) -> None:
    assert prepare_text(raw).text == text


def test_line_break_counts_two() -> None:
    assert prepare_text("a:br:b").units == 4


def test_stop_suffix_is_appended_after_replacements_and_counted() -> None:
    prepared = prepare_text("x" * 150, stop_suffix="\nSTOP [36173]")
    assert prepared.text == "x" * 150 + "\nSTOP [36173]"  # the suffix is the caller's, verbatim
    assert prepared.units == 150 + 1 + 5 + 2 + 5 + 2
    assert prepared.segments == 2


@pytest.mark.parametrize(
    "raw",
    [
        *("", " ", "\n\t  ", "\r\n", "^~|", ":br:", " ^ :br: "),
        # shown as nothing, and each was sent and charged as UCS-2 (the text review)
        *("\u200b", "\ufeff", "\u2060", "\u0301", "\u00a0\u200b\u202f"),
        *("\x07", "\x07\u200b"),  # a bell alone was taken, with a zero-width space refused
    ],
)
def test_empty_message_is_refused(raw: str) -> None:
    with pytest.raises(DomainError) as caught:
        prepare_text(raw, stop_suffix=" STOP 36173")
    assert (caught.value.code, caught.value.field) == ("message.required", "message")


# --- encoding choice and counting ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoding", "units"),
    [
        ("Hello", Encoding.GSM7, 5),
        ("é è à ù ì ò Ç", Encoding.GSM7, 13),
        (":euro:", Encoding.GSM7, 2),
        ("a\f", Encoding.GSM7, 3),
        ("ΔΦΓΛΩΠΨΣΘΞ", Encoding.GSM7, 10),
        ("a😀", Encoding.UCS2, 3),  # an emoji is two UTF-16 units
        ("Привет", Encoding.UCS2, 6),
        ("Œuvre", Encoding.UCS2, 5),  # not in the table, not GSM: nothing is dropped
        ("😀 :euro:", Encoding.UCS2, 4),  # € is one unit in UCS-2
        ("x\x1b", Encoding.UCS2, 2),  # the escape septet is not a character
    ],
)
def test_encoding_and_units(raw: str, encoding: Encoding, units: int) -> None:
    prepared = prepare_text(raw)
    assert (prepared.encoding, prepared.units) == (encoding, units)


def test_extension_characters_count_two_when_gsm_allows_them() -> None:
    # The table deletes or replaces ^ { } \ [ ~ ] |, so only € and form feed reach the count.
    for char in GSM_EXTENSION:
        assert len(encode_gsm7(char)) == 2


# --- boundaries ---------------------------------------------------------------------------

GSM_BOUNDARIES = [(160, 1), (161, 2), (306, 2), (307, 3), (1530, 10)]
UCS2_BOUNDARIES = [(70, 1), (71, 2), (134, 2), (135, 3), (670, 10)]


@pytest.mark.parametrize(("length", "segments"), GSM_BOUNDARIES)
def test_gsm_boundaries(length: int, segments: int) -> None:
    prepared = prepare_text("a" * length)
    assert (prepared.encoding, prepared.units, prepared.segments) == (
        Encoding.GSM7,
        length,
        segments,
    )


@pytest.mark.parametrize(("length", "segments"), UCS2_BOUNDARIES)
def test_ucs2_boundaries(length: int, segments: int) -> None:
    prepared = prepare_text("ж" * length)
    assert (prepared.encoding, prepared.units, prepared.segments) == (
        Encoding.UCS2,
        length,
        segments,
    )


def test_euro_signs_at_the_single_sms_boundary() -> None:
    assert prepare_text(":euro:" * 80).segments == 1  # 160 septets
    assert prepare_text("a" + ":euro:" * 80).segments == 2  # 161 septets


@pytest.mark.parametrize(("raw", "parts"), [("a" * 1531, 11), ("ж" * 671, 11)])
def test_too_many_parts_is_refused(raw: str, parts: int) -> None:
    with pytest.raises(DomainError) as caught:
        prepare_text(raw)
    assert (caught.value.code, caught.value.field) == ("message.too_many_parts", "message")
    assert str(parts) in caught.value.message


def test_stop_suffix_can_push_over_the_part_limit() -> None:
    assert prepare_text("a" * 1520).segments == MAX_PARTS
    with pytest.raises(DomainError):
        prepare_text("a" * 1520, stop_suffix=" STOP 36173")


# --- split_segments -----------------------------------------------------------------------


def test_single_gsm_part_is_the_unpacked_septets() -> None:
    assert split_segments("Hi €", Encoding.GSM7) == [b"\x48\x69\x20\x1b\x65"]


def test_single_ucs2_part_is_utf16_be() -> None:
    assert split_segments("Hé😀", Encoding.UCS2) == ["Hé😀".encode("utf-16-be")]


def test_empty_text_is_one_empty_part() -> None:
    assert split_segments("", Encoding.GSM7) == [b""]
    assert split_segments("", Encoding.UCS2) == [b""]


def test_gsm_parts_are_153_septets() -> None:
    parts = split_segments("a" * 307, Encoding.GSM7)
    assert [len(part) for part in parts] == [153, 153, 1]


def test_ucs2_parts_are_134_octets() -> None:
    parts = split_segments("ж" * 135, Encoding.UCS2)
    assert [len(part) for part in parts] == [134, 134, 2]


def test_escape_pair_is_never_split() -> None:
    # 152 septets then "€" (2 septets): the pair moves whole to the second part.
    parts = split_segments("a" * 152 + "€" + "b" * 10, Encoding.GSM7)
    assert parts == [b"a" * 152, b"\x1b\x65" + b"b" * 10]


def test_surrogate_pair_is_never_split() -> None:
    # 66 units then an emoji (2 units): the pair moves whole to the second part.
    parts = split_segments("ж" * 66 + "😀" + "b" * 5, Encoding.UCS2)
    assert parts == [("ж" * 66).encode("utf-16-be"), "😀bbbbb".encode("utf-16-be")]


def _one_character_at_a_time(text: str, encoding: Encoding) -> list[bytes]:
    """The reference split: whole characters added to a part while they fit."""
    unit = 1 if encoding is Encoding.GSM7 else 2
    single, capacity = (160, 153) if encoding is Encoding.GSM7 else (70, 67)
    chunks = [
        oracle_encode(char) if encoding is Encoding.GSM7 else char.encode("utf-16-be")
        for char in text
    ]
    if sum(map(len, chunks)) <= single * unit:
        return [b"".join(chunks)]
    parts, current = [], b""
    for chunk in chunks:
        if len(current) + len(chunk) > capacity * unit:
            parts.append(current)
            current = b""
        current += chunk
    return [*parts, current]


@given(st.text(alphabet=st.sampled_from("ab €[]|^{}~\\"), max_size=700))
@example("a" * 152 + "€" * 3)
def test_gsm_split_matches_the_character_by_character_reference(text: str) -> None:
    assert split_segments(text, Encoding.GSM7) == _one_character_at_a_time(text, Encoding.GSM7)


@given(st.text(alphabet=st.sampled_from("aж😀🇫"), max_size=300))
@example("ж" * 66 + "😀" * 3)
def test_ucs2_split_matches_the_character_by_character_reference(text: str) -> None:
    assert split_segments(text, Encoding.UCS2) == _one_character_at_a_time(text, Encoding.UCS2)


def test_split_refuses_non_gsm_text_as_gsm7() -> None:
    with pytest.raises(DomainError) as caught:
        split_segments("😀", Encoding.GSM7)
    assert caught.value.code == "text.not_gsm"


# --- codecs -------------------------------------------------------------------------------


def test_gsm_table_matches_the_oracle() -> None:
    assert encode_gsm7(GSM_ALPHABET) == oracle_encode(GSM_ALPHABET)
    assert len(set(GSM_ALPHABET)) == 128 - 1 + 10  # 0x1B is the escape, not a character


@pytest.mark.parametrize("char", ["😀", "Œ", "\x1b", "é\u0301", "ç"])
def test_encode_refuses_non_gsm(char: str) -> None:
    with pytest.raises(DomainError) as caught:
        encode_gsm7(char)
    assert caught.value.code == "text.not_gsm"
    assert not is_gsm7(char)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\x80\xff", "??"),  # not septets
        (b"a\x1b", "a?"),  # escape at the end
        (b"\x1b\x1b", "?"),  # escape of the escape is reserved
        (b"\x1b\x41", "A"),  # unknown extension code: the default character (TS 23.038)
        (b"\x1b\x65", "€"),
    ],
)
def test_decode_gsm7_is_lenient(data: bytes, text: str) -> None:
    assert decode_gsm7(data) == text


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\x00a\x00", "a\ufffd"),  # odd length
        (b"\xd8\x3d\x00a", "\ufffda"),  # lone high surrogate
        (b"\xde\x00", "\ufffd"),  # lone low surrogate
        ("😀".encode("utf-16-be"), "😀"),
    ],
)
def test_decode_ucs2_is_lenient(data: bytes, text: str) -> None:
    assert decode_ucs2(data) == text


# --- properties ---------------------------------------------------------------------------

gsm_text = st.text(alphabet=GSM_ALPHABET, max_size=2000)
any_text = st.text(max_size=1200)


def assert_parts_fit_and_rejoin(prepared: PreparedText) -> None:
    parts = split_segments(prepared.text, prepared.encoding)
    assert len(parts) == prepared.segments
    gsm = prepared.encoding is Encoding.GSM7
    single, per_part = (160, 153) if gsm else (70, 67)
    capacity = single if prepared.segments == 1 else per_part
    assert prepared.segments * capacity >= prepared.units
    octets = capacity if gsm else capacity * 2
    assert all(len(part) <= octets for part in parts)
    decode = decode_gsm7 if gsm else decode_ucs2
    assert "".join(decode(part) for part in parts) == prepared.text


@given(any_text)
@example("a" * 152 + "€" * 200)
@example("ж" * 66 + "😀" * 100)
def test_segments_fit_and_rejoin(raw: str) -> None:
    try:
        prepared = prepare_text(raw)
    except DomainError as error:
        assert error.code in {"message.required", "message.too_many_parts"}
        return
    assert_parts_fit_and_rejoin(prepared)


@given(gsm_text)
def test_gsm_text_segments_fit_and_rejoin(raw: str) -> None:
    try:
        prepared = prepare_text(raw)
    except DomainError as error:
        assert error.code in {"message.required", "message.too_many_parts"}
        return
    assert prepared.encoding is Encoding.GSM7
    assert_parts_fit_and_rejoin(prepared)


@given(gsm_text)
def test_gsm_codec_round_trip_matches_the_oracle(text: str) -> None:
    encoded = encode_gsm7(text)
    assert encoded == oracle_encode(text)
    assert decode_gsm7(encoded) == text == encoded.decode("gsm03.38")


@given(st.binary(max_size=400))
def test_decoders_never_raise(data: bytes) -> None:
    assert isinstance(decode_gsm7(data), str)
    assert isinstance(decode_ucs2(data), str)


@given(any_text)
def test_prepared_text_has_no_replaceable_characters(raw: str) -> None:
    try:
        text = prepare_text(raw).text
    except DomainError:
        return
    assert not set(text) & {char for char, _ in REPLACEMENTS}


GSM_TEXTS = st.text(alphabet=st.sampled_from("ab €[]{}\\\n"), max_size=700)
UCS2_TEXTS = st.text(alphabet=st.sampled_from("aж😀🇫"), max_size=300)


@given(st.one_of(GSM_TEXTS, UCS2_TEXTS))
@example("a" * 153 * 3)
@example("a" * 161)
@example("a" * 152 + "€" + "a" * 200)
@example("ж" * 67 * 3)
@example("ж" * 71)
@example("ж" * 66 + "😀" + "ж" * 80)
def test_segments_answered_are_the_parts_the_split_sends(raw: str) -> None:
    try:
        prepared = prepare_text(raw)
    except DomainError:  # blank once replaced, or over the part limit
        assume(False)
        return
    assert prepared.segments == len(split_segments(prepared.text, prepared.encoding))


@pytest.mark.parametrize(
    ("raw", "narrow", "encoding"),
    [
        ("Prix: 5:euro: TTC", "latin-1", Encoding.UCS2),  # € is GSM, not Latin-1
        ("Δ=Ω", "latin-1", Encoding.UCS2),
        ("café à 2£, ¿ok? Ça va: ÉÀ ß æ ø", "latin-1", Encoding.GSM7),
        ("café", "ascii", Encoding.UCS2),  # IA5 has no accented letter
        ("plain [text] {with} ~^|\\ signs @$_", "ascii", Encoding.GSM7),
        ("café 5:euro:", None, Encoding.GSM7),  # the SMSC's alphabet is GSM: as before
    ],
)
def test_text_outside_a_narrow_smsc_alphabet_goes_as_ucs2_never_question_marks(
    raw: str, narrow: str | None, encoding: Encoding
) -> None:
    prepared = prepare_text(raw, narrow=narrow)
    assert prepared.encoding == encoding
    if encoding == Encoding.GSM7 and narrow is not None:
        assert prepared.text.encode(narrow)  # each character has its octet there


@pytest.mark.parametrize(
    "raw",
    ["\u06dd", "\u0600", "\u20dd", "\u20e3", "\U000110bd", "\u3164", "\u2800", "👍🏽", "🇫🇷"],
)
def test_signs_a_phone_draws_are_a_message_even_alone(raw: str) -> None:
    # Format characters and enclosing marks that are drawn were refused as invisible.
    assert prepare_text(raw).segments == 1
