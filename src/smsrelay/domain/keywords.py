"""What a reply says in its first word: its keyword, and whether it asks to stop."""

from __future__ import annotations

from unicodedata import category, normalize


def is_stop_text(text: str, keywords: frozenset[str]) -> bool:
    """A reply asks to stop when its whole text (trimmed, case-folded) is a STOP keyword,
    or its first word is one ("STOP merci"); read as the person typed it, whatever the phone
    sent: compatibility forms folded (full-width ＳＴＯＰ, a decomposed Ê) and invisible
    format characters (a zero-width space) left out."""
    visible = "".join(c for c in normalize("NFKC", text) if category(c) != "Cf")
    cleaned = " ".join(visible.upper().split()).strip(" .!")
    return cleaned in keywords or keyword_of(cleaned) in keywords


def keyword_of(text: str) -> str:
    """The first word, upper-cased, without the punctuation around it ("Oui, merci" -> OUI), so
    an application can route on it; a word of punctuation alone (":-)") is kept as it is."""
    words = text.split()
    if not words:
        return ""
    word = words[0].upper()
    start, end = 0, len(word)
    while start < end and _is_punctuation(word[start]):
        start += 1
    while end > start and _is_punctuation(word[end - 1]):
        end -= 1
    return word[start:end] or word


def _is_punctuation(char: str) -> bool:
    return category(char).startswith("P")  # any script's: «», ¿, 。, ！
