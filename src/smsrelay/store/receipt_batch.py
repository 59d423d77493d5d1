"""Delivery receipts, grouped (see ``grouped``): each applied to its part, or kept for a
part whose ``submit_sm_resp`` has not come yet.

The candidate parts of every receipt in the run are read at once. Then each receipt is
matched and applied in order against the parts' states as the receipts before it left them
(two receipts for one part, or for two parts of one message, are common in a run), so the
choice, the move and the message's state are those of one receipt after another. Then the
receipts, the parts' moves and the messages' states are written with a few statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from smsrelay.domain.states import MessageState, PartState, message_state
from smsrelay.store import inbound_ops, settle
from smsrelay.store.grouped import Answers, flat, marks, values
from smsrelay.store.records import CallbackBuilders, IncomingReceipt
from smsrelay.store.sql import Conn

CHUNK = 256


@dataclass(frozen=True, slots=True)
class Receipt:
    receipt: IncomingReceipt
    builders: CallbackBuilders


@dataclass
class _Run:
    """The run's view of the parts it touches, kept current as each receipt applies."""

    candidates: list[tuple[int, int, str, int, str, str]]  # id, message, state, nb, key, smsc
    states: dict[int, str]  # part id -> its state now
    siblings: dict[int, dict[int, str]]  # message of several parts -> its parts' states now
    stored: list[tuple[int | None, IncomingReceipt]] = field(default_factory=list)
    moves: dict[int, tuple[str, str, str | None, float | None]] = field(default_factory=dict)
    changes: list[settle.Change] = field(default_factory=list)


def record_receipts(conn: Conn, items: Sequence[Receipt]) -> Answers:
    """Per receipt True when it matched a part now; False when it is kept for a part whose
    ``submit_sm_resp`` has not come yet."""
    run = _read(conn, items)
    answers: Answers = [_match(run, item) for item in items]
    ids = _store_receipts(conn, run.stored)
    _keep_early(
        conn, [(rid, r) for rid, (part, r) in zip(ids, run.stored, strict=True) if not part]
    )
    _move_parts(conn, run.moves)
    settle.apply(conn, run.changes)
    return answers


def _read(conn: Conn, items: Sequence[Receipt]) -> _Run:
    keys = sorted({key for item in items for key in item.receipt.candidate_keys})
    rows = []
    for start in range(0, len(keys), CHUNK):
        chunk = tuple(keys[start : start + CHUNK])
        rows += conn.execute(
            "SELECT p.id, p.message_id, p.state, m.nb_sms, p.carrier_key, p.connector "
            "FROM parts p JOIN messages m ON m.id = p.message_id "
            # every match, each receipt's ranked by choose_part: a LIMIT would keep the
            # oldest when an SMSC gave an id again (a counter reset)
            f"WHERE p.carrier_key IN ({marks(len(chunk))})",
            chunk,
        ).fetchall()
    candidates = [(int(r[0]), int(r[1]), str(r[2]), int(r[3]), str(r[4]), str(r[5])) for r in rows]
    longer = sorted({c[1] for c in candidates if c[3] != 1})
    return _Run(candidates, {c[0]: c[2] for c in candidates}, _parts_of(conn, longer))


def _parts_of(conn: Conn, message_ids: Sequence[int]) -> dict[int, dict[int, str]]:
    """Every part's state of these messages (of more than one part), as stored."""
    parts: dict[int, dict[int, str]] = {message_id: {} for message_id in message_ids}
    for start in range(0, len(message_ids), CHUNK):
        chunk = tuple(message_ids[start : start + CHUNK])
        for message_id, part_id, state in conn.execute(
            f"SELECT message_id, id, state FROM parts WHERE message_id IN ({marks(len(chunk))})",
            chunk,
        ).fetchall():
            parts[int(message_id)][int(part_id)] = str(state)
    return parts


def _match(run: _Run, item: Receipt) -> bool:
    receipt = item.receipt
    keys = set(receipt.candidate_keys)
    rows = [
        (c[0], c[1], run.states[c[0]], c[3], c[4])
        for c in run.candidates
        if c[5] == receipt.connector and c[4] in keys
    ]
    part = inbound_ops.choose_part(rows, receipt.connector, receipt.candidate_keys)
    if part is None:
        run.stored.append((None, receipt))
        return False
    part_id, message_id, current, nb_sms = part
    run.stored.append((part_id, receipt))
    move = inbound_ops.receipt_move(current, receipt)
    if move is not None:
        new_state, done_at = move
        run.states[part_id] = str(new_state)
        run.moves[part_id] = (str(new_state), receipt.stat, receipt.err, done_at)
        state = _message_state(run, message_id, part_id, new_state, nb_sms)
        run.changes.append(settle.Change(message_id, state, receipt.received_at, item.builders))
    return True


def _message_state(
    run: _Run, message_id: int, part_id: int, new_state: PartState, nb_sms: int
) -> MessageState:
    """The message's state once this part moved: as ``refresh_message_state`` would read it
    (its other parts as stored, or as the run's receipts before this one left them)."""
    if nb_sms == 1:
        return message_state((new_state,))
    parts = run.siblings[message_id]
    parts[part_id] = str(new_state)
    return message_state(PartState(state) for state in parts.values())


def _store_receipts(conn: Conn, stored: Sequence[tuple[int | None, IncomingReceipt]]) -> list[int]:
    """Every receipt's row, in the run's order (matched or kept early); their ids."""
    ids: list[int] = []
    for start in range(0, len(stored), CHUNK):
        chunk = stored[start : start + CHUNK]
        rows = [
            (part, r.connector, r.carrier_id, r.stat, r.err, r.received_at, int(part is not None))
            for part, r in chunk
        ]
        table = values(len(rows), ("BIGINT", "", "", "", "", "DOUBLE PRECISION", "BIGINT"))
        inserted = conn.execute(
            "INSERT INTO receipts (part_id, connector, carrier_id, stat, err, received_at, "
            "matched) SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, "
            f"v.column7 FROM {table} AS v RETURNING id",
            flat(rows),
        ).fetchall()
        ids += sorted(int(row[0]) for row in inserted)  # numbered in the order inserted
    return ids


def _keep_early(conn: Conn, early: Sequence[tuple[int, IncomingReceipt]]) -> None:
    rows = [(key, r.connector, rid) for rid, r in early for key in r.candidate_keys]
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        conn.execute(
            "INSERT INTO early_receipt_keys (carrier_key, connector, receipt_id) "
            "SELECT v.column1, v.column2, v.column3 FROM "
            f"{values(len(chunk), ('', '', 'BIGINT'))} AS v",
            flat(chunk),
        )


def _move_parts(conn: Conn, moves: dict[int, tuple[str, str, str | None, float | None]]) -> None:
    """Each moved part's last move (a later receipt's move replaces an earlier one's)."""
    rows = [(part_id, *move) for part_id, move in moves.items()]
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        table = values(len(chunk), ("BIGINT", "", "", "", "DOUBLE PRECISION"))
        conn.execute(
            "UPDATE parts SET state = v.column2, stat = v.column3, err = v.column4, "
            f"done_at = v.column5 FROM {table} AS v WHERE parts.id = v.column1",
            flat(chunk),
        )
