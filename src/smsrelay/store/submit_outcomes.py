"""The SMSC took a part (``submit_sm_resp`` OK): its id recorded, grouped (see ``grouped``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smsrelay.domain.states import MessageState
from smsrelay.store import inbound_ops, settle
from smsrelay.store.grouped import Answers, flat, marks, values
from smsrelay.store.records import CallbackBuilders
from smsrelay.store.sql import Conn


@dataclass(frozen=True, slots=True)
class Submitted:
    part_id: int
    carrier_id: str
    carrier_key: str
    now: float
    builders: CallbackBuilders
    nb_sms: int | None  # 1: the message has this part only, no need to read its others


def mark_submitted_many(conn: Conn, items: Sequence[Submitted]) -> Answers:
    """Per item True, or False if its part had moved on (no longer 'sending'). Then each
    message's state, and receipts that raced ahead of their ``submit_sm_resp``."""
    if len({item.part_id for item in items}) < len(items):  # the same part twice: in turn
        return [answer for item in items for answer in mark_submitted_many(conn, [item])]
    moved: dict[int, int] = {}
    for start in range(0, len(items), settle.CHUNK):
        moved |= _record_ids(conn, items[start : start + settle.CHUNK])
    taken = [item for item in items if item.part_id in moved]
    _refresh_messages(conn, taken, moved)
    _match_early_receipts(conn, taken)
    return [item.part_id in moved for item in items]


def _record_ids(conn: Conn, items: Sequence[Submitted]) -> dict[int, int]:
    """part id -> message id, for the parts still 'sending' (now submitted)."""
    rows = [(i.part_id, i.carrier_id, i.carrier_key, i.now) for i in items]
    table = values(len(rows), ("BIGINT", "", "", "DOUBLE PRECISION"))
    moved = conn.execute(
        "UPDATE parts SET state = 'submitted', carrier_id = v.column2, carrier_key = v.column3, "
        "submitted_at = v.column4, lease_until = NULL, claimed_at = NULL "
        f"FROM {table} AS v WHERE parts.id = v.column1 AND parts.state = 'sending' "
        "RETURNING parts.id, parts.message_id",
        flat(rows),
    ).fetchall()
    return {int(row[0]): int(row[1]) for row in moved}


def _refresh_messages(conn: Conn, taken: Sequence[Submitted], moved: dict[int, int]) -> None:
    several = {moved[item.part_id] for item in taken if item.nb_sms != 1}
    states = settle.part_states(conn, several) if several else {}
    settle.apply(
        conn,
        (
            settle.Change(
                moved[item.part_id],
                MessageState.SUBMITTED
                if item.nb_sms == 1
                else settle.derived(states, moved[item.part_id]),
                item.now,
                item.builders,
            )
            for item in taken
        ),
    )


def _match_early_receipts(conn: Conn, taken: Sequence[Submitted]) -> None:
    """One probe for the whole run (a receipt is rarely early); the rare hits one by one."""
    keys = sorted({item.carrier_key for item in taken})
    waiting: set[str] = set()
    for start in range(0, len(keys), settle.CHUNK):
        chunk = keys[start : start + settle.CHUNK]
        waiting |= {
            str(row[0])
            for row in conn.execute(
                "SELECT DISTINCT carrier_key FROM early_receipt_keys "
                f"WHERE carrier_key IN ({marks(len(chunk))})",
                tuple(chunk),
            ).fetchall()
        }
    for item in taken:
        if item.carrier_key in waiting:
            inbound_ops.match_early_receipts(
                conn, item.part_id, item.carrier_key, item.builders, item.now
            )
