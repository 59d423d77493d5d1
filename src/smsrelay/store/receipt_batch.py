"""Delivery receipts, grouped (see ``grouped``): each applied to its part, or kept for a
part whose ``submit_sm_resp`` has not come yet.

The candidate parts of every receipt in the run are read at once. Then each receipt is
matched and applied in order against the parts' states as the receipts before it left them
(two receipts for one part, or for two parts of one message, are common in a run), so the
choice, the move and the message's state are those of one receipt after another. Then the
receipts, the parts' moves and the messages' states are written with a few statements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from smsrelay.domain.states import MessageState, PartState, message_state
from smsrelay.quick_init import quick_init
from smsrelay.store import settle
from smsrelay.store.grouped import (
    Answers,
    flat,
    insert_numbered,
    insert_rows,
    marks,
    padded_chunks,
    runs_of,
    values,
)
from smsrelay.store.message_rows import PART_COLUMNS, qualified
from smsrelay.store.receipt_match import EARLY_RECEIPT_WINDOW, choose_part, receipt_move
from smsrelay.store.records import CallbackBuilders, IncomingReceipt, PartView
from smsrelay.store.sql import Conn

_RECEIPT_COLUMNS = (
    ("part_id", "BIGINT"),
    ("connector", ""),
    ("carrier_id", ""),
    ("stat", ""),
    ("err", ""),
    ("received_at", "DOUBLE PRECISION"),
    ("matched", "BIGINT"),
)


@quick_init
@dataclass(frozen=True, slots=True)
class Receipt:
    receipt: IncomingReceipt
    builders: CallbackBuilders


@dataclass
class _Run:
    """The run's view of the parts it touches, kept current as each receipt applies."""

    parts: dict[int, tuple[int, int, str, str]]  # part id -> message id, nb_sms, key, SMSC
    states: dict[int, str]  # part id -> its state now
    ended_at: dict[int, float]  # part id -> when it ended, for those that had when read
    siblings: dict[int, dict[int, str]]  # message of several parts -> its parts' states now
    stored: list[tuple[int | None, IncomingReceipt]] = field(default_factory=list)
    moves: dict[int, tuple[str, str, str | None, float | None]] = field(default_factory=dict)
    changes: list[settle.Change] = field(default_factory=list)

    def by_key(self) -> dict[str, list[int]]:
        keyed: dict[str, list[int]] = defaultdict(list)
        for part_id, (_, _, key, _) in self.parts.items():
            keyed[key].append(part_id)
        return keyed


def record_receipts(conn: Conn, items: Sequence[Receipt]) -> Answers:
    """Per receipt True when it matched a part now; False when it is kept for a part whose
    ``submit_sm_resp`` has not come yet."""
    keys = sorted({key for item in items for key in item.receipt.candidate_keys})
    # every part with one of the keys, each receipt's ranked by choose_part: a LIMIT would
    # keep the oldest when an SMSC gave an id again (a counter reset)
    run = _read(conn, "p.carrier_key", keys)
    keyed = run.by_key()
    has_had = partial(_has_had, conn, run)
    answers: Answers = [_match(run, keyed, item, has_had) for item in items]
    _write(conn, run)
    return answers


# a connector's loop turn of receipts, written as one
record_receipt_runs = runs_of(record_receipts)


def apply_to_parts(conn: Conn, matches: Sequence[tuple[int, Receipt]]) -> None:
    """Receipts whose part is known (kept early, its id come since): each applied in order."""
    run = _read(conn, "p.id", sorted({part_id for part_id, _ in matches}))
    for part_id, item in matches:
        _apply(run, part_id, item)
    _write(conn, run)


def _read(conn: Conn, column: str, keys: Sequence[object]) -> _Run:
    rows = []
    for chunk in padded_chunks(keys):
        rows += conn.execute(
            "SELECT p.id, p.message_id, m.nb_sms, p.carrier_key, p.connector, p.state, "
            "p.done_at "
            f"FROM parts p JOIN messages m ON m.id = p.message_id "
            f"WHERE {column} IN ({marks(len(chunk))})",
            chunk,
        ).fetchall()
    parts = {int(r[0]): (int(r[1]), int(r[2]), str(r[3]), str(r[4])) for r in rows}
    longer = sorted({message_id for message_id, nb_sms, _, _ in parts.values() if nb_sms != 1})
    states = {int(r[0]): str(r[5]) for r in rows}
    ended_at = {int(r[0]): float(r[6]) for r in rows if r[6] is not None}
    return _Run(parts, states, ended_at, settle.part_states(conn, longer))


def _has_had(conn: Conn, run: _Run, part_id: int, carrier_id: str) -> bool:
    """Whether the part already took a receipt whose id was written as ``carrier_id``."""
    if any(pid == part_id and r.carrier_id == carrier_id for pid, r in run.stored):
        return True
    row = conn.execute(
        "SELECT 1 FROM receipts WHERE part_id = ? AND carrier_id = ? LIMIT 1",
        (part_id, carrier_id),
    ).fetchone()
    return row is not None


def _match(
    run: _Run, keyed: dict[str, list[int]], item: Receipt, has_had: Callable[[int, str], bool]
) -> bool:
    receipt = item.receipt
    # A part that ended longer ago than a receipt may come early is not this receipt's: its
    # id came back (an SMSC's counter reset), and the receipt is for the new part that will
    # have it, whose submit_sm_resp it overtook (given to the old part, it was lost). And a
    # part that has ended takes a receipt under another reading of its id only as a repeat of
    # one it took (the same id as written): else receipt "36" would be swallowed by part 0x24
    # as a repeat, though it is for a part whose resp it overtook (an SMSC with a small
    # counter), which then waited 49 h; and a repeat of 0x24's receipt "36" must not go to a
    # later part "36" instead.
    # Such a repeat goes to its part even when a waiting part has the id as written: the
    # part took it under its other reading, so that is how this SMSC writes its receipts.
    oldest = receipt.received_at - EARLY_RECEIPT_WINDOW
    fitting: set[int] = set()
    repeated: set[int] = set()
    for rank, key in enumerate(receipt.candidate_keys):
        for candidate in keyed.get(key, ()):
            if run.parts[candidate][3] != receipt.connector:
                continue
            if run.ended_at.get(candidate, oldest) < oldest:
                continue
            if rank == 0 or run.states[candidate] == PartState.SUBMITTED:
                fitting.add(candidate)
            elif has_had(candidate, receipt.carrier_id):
                repeated.add(candidate)
    rows = [(pid, run.states[pid], run.parts[pid][2]) for pid in repeated or fitting]
    part_id = choose_part(rows, receipt.connector, receipt.candidate_keys)
    if part_id is None:
        run.stored.append((None, receipt))
        return False
    _apply(run, part_id, item)
    return True


def _apply(run: _Run, part_id: int, item: Receipt) -> None:
    """Record the receipt against the part; move the part and its message if it says so."""
    receipt = item.receipt
    run.stored.append((part_id, receipt))
    move = receipt_move(run.states[part_id], receipt)
    if move is None:
        return  # an intermediate or repeated receipt: recorded, no move
    new_state, done_at = move
    run.states[part_id] = str(new_state)
    if done_at is not None:  # as a later receipt of the run reading it now would see it
        run.ended_at[part_id] = done_at
    run.moves[part_id] = (str(new_state), receipt.stat, receipt.err, done_at)
    message_id, nb_sms, _, _ = run.parts[part_id]
    state = _message_state(run, message_id, part_id, new_state, nb_sms)
    run.changes.append(settle.Change(message_id, state, receipt.received_at, item.builders))


def _message_state(
    run: _Run, message_id: int, part_id: int, new_state: PartState, nb_sms: int
) -> MessageState:
    """The message's state once this part moved (its other parts as stored, or as the run's
    receipts before this one left them)."""
    if nb_sms == 1:
        return message_state((new_state,))
    parts = run.siblings[message_id]
    parts[part_id] = str(new_state)
    return settle.derived(parts)


def _write(conn: Conn, run: _Run) -> None:
    _store_receipts(conn, run.stored)
    moved = _move_parts(conn, run.moves)
    # a one-part message's part, as moved, is all its DLR needs of its parts: no second read
    alone = {message_id: (part,) for message_id, part in moved if run.parts[part.id][1] == 1}
    settle.apply(conn, run.changes, known_parts=alone)


def _store_receipts(conn: Conn, stored: Sequence[tuple[int | None, IncomingReceipt]]) -> None:
    """Every receipt's row, in the run's order (matched or kept early); the ids of those kept
    early are read back (their keys point at them), the others' are not needed."""
    rows = [
        (part, r.connector, r.carrier_id, r.stat, r.err, r.received_at, int(part is not None))
        for part, r in stored
    ]
    if all(part is not None for part, _ in stored):  # the usual run: every receipt matched
        insert_rows(conn, "receipts", _RECEIPT_COLUMNS, rows)
        return
    ids = insert_numbered(conn, "receipts", _RECEIPT_COLUMNS, rows)
    _keep_early(
        conn, [(rid, r) for rid, (part, r) in zip(ids, stored, strict=True) if part is None]
    )


def _keep_early(conn: Conn, early: Sequence[tuple[int, IncomingReceipt]]) -> None:
    rows = [(key, r.connector, rid) for rid, r in early for key in r.candidate_keys]
    columns = (("carrier_key", ""), ("connector", ""), ("receipt_id", "BIGINT"))
    insert_rows(conn, "early_receipt_keys", columns, rows)


def _move_parts(
    conn: Conn, moves: dict[int, tuple[str, str, str | None, float | None]]
) -> list[tuple[int, PartView]]:
    """Each moved part's last move (a later receipt's move replaces an earlier one's); each
    moved part's message id and row as it now stands."""
    rows = [(part_id, *move) for part_id, move in moves.items()]
    moved: list[tuple[int, PartView]] = []
    for chunk in padded_chunks(rows):  # each part once: keyed by the dict
        table = values(len(chunk), ("BIGINT", "", "", "", "DOUBLE PRECISION"))
        moved += [
            (int(row[0]), PartView(*row[1:]))
            for row in conn.execute(
                "UPDATE parts SET state = v.column2, stat = v.column3, err = v.column4, "
                f"done_at = v.column5 FROM {table} AS v WHERE parts.id = v.column1 "
                f"RETURNING parts.message_id, {_MOVED_PART}",
                flat(chunk),
            ).fetchall()
        ]
    return moved


_MOVED_PART = qualified(PART_COLUMNS, "parts")
