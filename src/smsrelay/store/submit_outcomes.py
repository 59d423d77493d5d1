"""The SMSC took a part (``submit_sm_resp`` OK): its id recorded, grouped (see ``grouped``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from smsrelay.domain.states import MessageState
from smsrelay.quick_init import quick_init
from smsrelay.store import receipt_batch, settle
from smsrelay.store.grouped import (
    CHUNK,
    Answers,
    flat,
    go_first,
    marks,
    padded,
    padded_chunks,
    runs_of,
    values,
)
from smsrelay.store.receipt_match import EARLY_RECEIPT_WINDOW
from smsrelay.store.records import CallbackBuilders, IncomingReceipt
from smsrelay.store.sql import Conn


@quick_init
@dataclass(frozen=True, slots=True)
class Submitted:
    part_id: int
    carrier_id: str
    carrier_key: str
    now: float
    builders: CallbackBuilders
    nb_sms: int | None  # 1: the message has this part only, no need to read its others


@go_first
def mark_submitted_many(conn: Conn, items: Sequence[Submitted]) -> Answers:
    """Per item True, or False if its part had moved on (no longer 'sending'). Then each
    message's state, and receipts that raced ahead of their ``submit_sm_resp``."""
    if len({item.part_id for item in items}) < len(items):  # the same part twice: in turn
        return [answer for item in items for answer in mark_submitted_many(conn, [item])]
    moved: dict[int, tuple[int, str]] = {}  # part id -> its message id and SMSC
    for start in range(0, len(items), CHUNK):
        moved |= _record_ids(conn, items[start : start + CHUNK])
    taken = [item for item in items if item.part_id in moved]
    _refresh_messages(conn, taken, moved)
    _match_early_receipts(conn, taken, moved)
    return [item.part_id in moved for item in items]


# a dispatcher's loop turn of outcomes, written as one
mark_submitted_runs = runs_of(mark_submitted_many)


def _record_ids(conn: Conn, items: Sequence[Submitted]) -> dict[int, tuple[int, str]]:
    """part id -> (message id, connector), for the parts still 'sending' (now submitted)."""
    rows = padded([(i.part_id, i.carrier_id, i.carrier_key, i.now) for i in items])  # each once
    table = values(len(rows), ("BIGINT", "", "", "DOUBLE PRECISION"))
    moved = conn.execute(
        "UPDATE parts SET state = 'submitted', carrier_id = v.column2, carrier_key = v.column3, "
        "submitted_at = v.column4, lease_until = NULL, claimed_at = NULL "
        f"FROM {table} AS v WHERE parts.id = v.column1 AND parts.state = 'sending' "
        "RETURNING parts.id, parts.message_id, parts.connector",
        flat(rows),
    ).fetchall()
    return {int(row[0]): (int(row[1]), str(row[2])) for row in moved}


def _refresh_messages(
    conn: Conn, taken: Sequence[Submitted], moved: dict[int, tuple[int, str]]
) -> None:
    several = {moved[item.part_id][0] for item in taken if item.nb_sms != 1}
    states = settle.part_states(conn, several) if several else {}
    settle.apply(conn, (_change(item, moved[item.part_id][0], states) for item in taken))


def _change(item: Submitted, message_id: int, states: dict[int, dict[int, str]]) -> settle.Change:
    single = item.nb_sms == 1  # its only part is submitted: no need to read it back
    state = MessageState.SUBMITTED if single else settle.derived(states[message_id])
    return settle.Change(message_id, state, item.now, item.builders)


def _match_early_receipts(
    conn: Conn, taken: Sequence[Submitted], moved: dict[int, tuple[int, str]]
) -> None:
    """Receipts kept because they came before their part's id: each taken by the first part
    of the run given its id (from the same SMSC, kept less than EARLY_RECEIPT_WINDOW: an
    older one is another message's), then applied to it."""
    keys = sorted({item.carrier_key for item in taken})
    kept: dict[str, list[tuple[int, str, IncomingReceipt]]] = defaultdict(list)
    for chunk in padded_chunks(keys):
        for row in conn.execute(
            "SELECT e.carrier_key, e.connector, r.id, r.connector, r.carrier_id, r.stat, "
            "r.err, r.received_at FROM early_receipt_keys e JOIN receipts r "
            f"ON r.id = e.receipt_id WHERE e.carrier_key IN ({marks(len(chunk))})",
            chunk,
        ).fetchall():
            receipt = IncomingReceipt(row[3], row[4], (row[0],), row[5], row[6], row[7])
            kept[str(row[0])].append((int(row[2]), str(row[1]), receipt))
    if not kept:
        return  # the usual case, on every submit
    matches, taken_ids = _early_matches(taken, moved, kept)
    if not matches:
        return
    ids = padded(sorted(taken_ids))
    conn.execute(f"DELETE FROM early_receipt_keys WHERE receipt_id IN ({marks(len(ids))})", ids)
    conn.execute(f"DELETE FROM receipts WHERE id IN ({marks(len(ids))})", ids)
    receipt_batch.apply_to_parts(conn, matches)


def _early_matches(
    taken: Sequence[Submitted],
    moved: dict[int, tuple[int, str]],
    kept: dict[str, list[tuple[int, str, IncomingReceipt]]],
) -> tuple[list[tuple[int, receipt_batch.Receipt]], set[int]]:
    """Which kept receipt goes to which part, in the run's order, each taken once."""
    matches: list[tuple[int, receipt_batch.Receipt]] = []
    taken_ids: set[int] = set()
    for item in taken:
        oldest = item.now - EARLY_RECEIPT_WINDOW
        for receipt_id, connector, receipt in sorted(kept.get(item.carrier_key, ())):
            fits = connector == moved[item.part_id][1] and receipt.received_at >= oldest
            if fits and receipt_id not in taken_ids:
                taken_ids.add(receipt_id)
                matches.append((item.part_id, receipt_batch.Receipt(receipt, item.builders)))
    return matches, taken_ids
