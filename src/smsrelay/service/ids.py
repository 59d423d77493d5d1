"""Ids given in a request (messageId, a STOP entry's id, a page): plain decimal digits only."""

from __future__ import annotations

MAX_ID = 2**63 - 1  # SQLite's and PostgreSQL's bigint


def decimal_id(raw: str) -> int | None:
    """The positive number ``raw`` writes in ASCII digits (spaces around allowed), else None.

    ``int()`` alone also reads ``1_0`` as 10 and other scripts' digits (``١`` as 1): an id a
    client did not mean would then be read, or cancelled."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None
