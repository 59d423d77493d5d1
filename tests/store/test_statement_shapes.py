"""Statement texts of the grouped writes: a run of any length uses the texts of the lengths in
``grouped.ROUNDED`` only, so a few texts per statement stay prepared instead of each batch's
count being parsed again (``grouped.filled_chunks`` and ``grouped.padded_chunks``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from smsrelay.store.accept_batch import accept_many
from smsrelay.store.grouped import CHUNK, ROUNDED, filled_chunks, padded, padded_chunks
from smsrelay.store.receipt_batch import Receipt, record_receipts
from smsrelay.store.records import IncomingReceipt, NewMessage
from smsrelay.store.sql import Conn, Cursor
from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS
from tests.factories import new_message, open_store

CONNECTOR = "carrier-a"
NUMBERS = {"+33757000001": CONNECTOR}
LENGTHS = tuple(length for length in ROUNDED if length <= 40)


@given(st.lists(st.tuples(st.integers(), st.text()), max_size=3 * CHUNK + 5))
def test_filled_chunks_keep_every_row_once_in_order_and_fill_to_a_rounded_length(
    rows: list[tuple[int, str]],
) -> None:
    chunks = list(filled_chunks(rows, 2))
    assert all(count in ROUNDED for count, _ in chunks)
    kept = []
    for count, parameters in chunks:
        assert len(parameters) == count * 3
        chunk_rows = [parameters[at : at + 3] for at in range(0, len(parameters), 3)]
        kept += [(a, b) for a, b, mark in chunk_rows if mark is not None]
        assert all(row == (None, None, None) for row in chunk_rows if row[2] is None)
    assert kept == rows


@given(st.lists(st.integers(), max_size=3 * CHUNK + 5))
def test_padded_chunks_hold_every_item_and_repeat_only_the_last(items: list[int]) -> None:
    chunks = list(padded_chunks(items))
    assert all(len(chunk) in ROUNDED for chunk in chunks)
    originals = [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]
    for chunk, original in zip(chunks, originals, strict=True):
        assert list(chunk[: len(original)]) == original
        assert set(chunk[len(original) :]) <= {original[-1]}


def test_padded_leaves_a_rounded_length_as_it_is_and_nothing_as_nothing() -> None:
    assert padded([1, 2, 3, 4]) == (1, 2, 3, 4)
    assert padded([1, 2, 3]) == (1, 2, 3, 3)
    assert padded(list(range(9))) == (*range(9), *[8] * 7)
    assert padded([]) == ()


@given(st.integers(min_value=1, max_value=4 * CHUNK))
def test_padded_takes_any_length_a_claim_can_have(count: int) -> None:
    rounded = padded(list(range(count)))
    assert len(rounded) in ROUNDED or len(rounded) % CHUNK == 0
    assert rounded[:count] == tuple(range(count)) and len(rounded) - count < CHUNK


def test_the_rounded_lengths_step_by_at_most_32_up_to_a_chunk() -> None:
    assert ROUNDED[0] == 1 and ROUNDED[-1] == CHUNK
    assert all(0 < b - a <= 32 for a, b in itertools.pairwise(ROUNDED))


class _Recording:
    """A connection that notes the text of every statement it is given."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.texts: set[str] = set()

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        self.texts.add(sql)
        return self.conn.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        self.texts.add(sql)
        return self.conn.executemany(sql, parameters)


async def _texts(
    store: SqlStore, many: Callable[[Conn, Sequence[Any]], Any], items: Any
) -> set[str]:
    def run(conn: Conn) -> set[str]:
        recording = _Recording(conn)
        many(recording, items)
        return recording.texts

    return await store.db.write(run)


def _messages(count: int) -> list[NewMessage]:
    return [
        new_message(recipient=f"+336123{n:05d}", cost_micros=0, url_dlr="https://example.com/dlr")
        for n in range(count)
    ]


async def test_accepting_a_run_of_any_length_uses_the_texts_of_rounded_runs(
    store_url: str,
) -> None:
    store = await open_store(store_url, NUMBERS)
    try:
        seen_at_rounded: set[str] = set()
        for count in LENGTHS:
            seen_at_rounded |= await _texts(store, accept_many, _messages(count))
        seen = set()
        for count in range(1, 41):
            seen |= await _texts(store, accept_many, _messages(count))
        assert seen == seen_at_rounded
    finally:
        await store.close()


async def _submitted(store: SqlStore, count: int, first_id: int) -> list[Receipt]:
    """``count`` messages accepted, claimed and submitted; a DELIVRD receipt for each (which
    ends its message: a DLR callback is queued)."""
    for message in _messages(count):
        await store.accept_message(message)
    parts = await store.claim_due_parts(CONNECTOR, 100.0, 1000, 160.0)
    assert len(parts) == count
    receipts = []
    for n, part in enumerate(parts, start=first_id):
        carrier_id = f"id{n}"
        await store.mark_submitted(part.part_id, carrier_id, carrier_id, 100.0, BUILDERS, 1)
        receipt = IncomingReceipt(CONNECTOR, carrier_id, (carrier_id,), "DELIVRD", None, 101.0)
        receipts.append(Receipt(receipt, BUILDERS))
    return receipts


async def test_receipts_of_a_run_of_any_length_use_the_texts_of_rounded_runs(
    store_url: str,
) -> None:
    store = await open_store(store_url, NUMBERS)
    try:
        first = 0
        seen_at_rounded: set[str] = set()
        seen: set[str] = set()
        for counts, texts in ((LENGTHS, seen_at_rounded), (range(1, 41), seen)):
            for count in counts:
                receipts = await _submitted(store, count, first)
                first += count
                texts.update(await _texts(store, record_receipts, receipts))
        assert seen == seen_at_rounded
    finally:
        await store.close()
