"""Set-based: messages take the state their parts give them, and those that end queue their
DLR callback: for one message (``refresh``), or a few statements for a whole run of submit
outcomes or receipts, whatever its length (``apply``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smsrelay.domain.states import MessageState, PartState, message_state, part_state_of
from smsrelay.quick_init import quick_init
from smsrelay.store import webhook_ops
from smsrelay.store.grouped import (
    CHUNK,
    FILLER_TYPE,
    filled_chunks,
    flat,
    marks,
    not_filler,
    padded,
    padded_chunks,
    values,
)
from smsrelay.store.message_rows import (
    FINAL_MESSAGE_STATES,
    MESSAGE_COLUMNS,
    PART_COLUMNS,
    message_from_row,
    qualified,
)
from smsrelay.store.records import CallbackBuilders, DlrFacts, PartView
from smsrelay.store.sql import Conn


@quick_init
@dataclass(frozen=True, slots=True)
class Change:
    """A message's new state, as of ``at``; its callback (if it ends) built by ``builders``."""

    message_id: int
    state: MessageState
    at: float
    builders: CallbackBuilders


def part_states(conn: Conn, message_ids: Collection[int]) -> dict[int, dict[int, str]]:
    """Every part's state (part id -> state) of these messages, as stored."""
    parts: dict[int, dict[int, str]] = {message_id: {} for message_id in message_ids}
    for chunk in padded_chunks(sorted(message_ids)):
        for message_id, part_id, state in conn.execute(
            f"SELECT message_id, id, state FROM parts WHERE message_id IN ({marks(len(chunk))})",
            chunk,
        ).fetchall():
            parts[int(message_id)][int(part_id)] = str(state)
    return parts


def derived(parts: dict[int, str]) -> MessageState:
    """A message's state from its parts' (as ``part_states`` gives them)."""
    return message_state(part_state_of(state) for state in parts.values())


def refresh(
    conn: Conn,
    message_id: int,
    now: float,
    builders: CallbackBuilders,
    *,
    only_part: PartState | None = None,
) -> MessageState:
    """One message's state from its parts (``only_part``: the state of its single part, when
    the caller knows it has one), applied as ``apply`` does; returns that state."""
    if only_part is not None:
        state = message_state((only_part,))
    else:
        state = derived(part_states(conn, (message_id,))[message_id])
    apply(conn, (Change(message_id, state, now, builders),))
    return state


def apply(
    conn: Conn,
    changes: Iterable[Change],
    known_parts: Mapping[int, tuple[PartView, ...]] | None = None,
) -> None:
    """Move each message to its state unless it is already there or has ended (an ended
    message never moves again); queue the DLR callback of each one that ends now.
    ``known_parts``: messages whose parts, as they now stand, the caller has in hand."""
    latest: dict[int, Change] = {}  # the last word per message, in the order of last words
    for change in changes:
        latest.pop(change.message_id, None)
        latest[change.message_id] = change
    ended: list[tuple[Change, tuple[Any, ...]]] = []
    ordered = list(latest.values())
    for start in range(0, len(ordered), CHUNK):
        ended += _move(conn, ordered[start : start + CHUNK])
    if ended:
        _queue_dlrs(conn, ended, known_parts or {})


# the moved message's row as the move left it: its DLR callback needs no second read of it
_MOVED_ROW = qualified(MESSAGE_COLUMNS, "messages")


def _move(conn: Conn, changes: Sequence[Change]) -> list[tuple[Change, tuple[Any, ...]]]:
    """Each change's message moved; the ones that end now with a DLR to send, with their row."""
    rows = padded(  # each message once (``apply`` keeps its last word)
        [
            (c.message_id, str(c.state), c.at if c.state in FINAL_MESSAGE_STATES else None)
            for c in changes
        ]
    )
    ending = any(final_at is not None for _, _, final_at in rows)
    sql = (
        "UPDATE messages SET state = v.column2, final_at = v.column3 "
        f"FROM {values(len(rows), ('BIGINT', '', 'DOUBLE PRECISION'))} AS v "
        "WHERE messages.id = v.column1 AND messages.state != v.column2 "
        "AND messages.final_at IS NULL"
    )
    if not ending:  # no message ends (submit outcomes, mostly): nothing to read back
        conn.execute(sql, flat(rows))
        return []
    moved = conn.execute(f"{sql} RETURNING {_MOVED_ROW}", flat(rows)).fetchall()
    with_dlr = {int(row[0]): row for row in moved if row[_URL_DLR]}
    return [
        (c, with_dlr[c.message_id])
        for c in changes
        if c.message_id in with_dlr and c.state in FINAL_MESSAGE_STATES
    ]


_URL_DLR = MESSAGE_COLUMNS.split(", ").index("url_dlr")


def _queue_dlrs(
    conn: Conn,
    ended: Sequence[tuple[Change, tuple[Any, ...]]],
    known: Mapping[int, tuple[PartView, ...]],
) -> None:
    """One DLR callback per message, its body from the message and its parts as they stand."""
    parts = _parts(conn, [c.message_id for c, _ in ended if c.message_id not in known])
    rows = []
    for change, row in ended:
        found = known.get(change.message_id)
        message = message_from_row(row, found or tuple(parts[change.message_id]))
        body = change.builders.dlr(DlrFacts(message=message))
        uuid, key = change.builders.new_id(), webhook_ops.message_key(message.id)
        rows.append((uuid, message.account_id, message.id, message.url_dlr, body, change.at, key))
    for count, parameters in filled_chunks(rows, len(_DLR_TYPES)):
        _insert_dlrs(conn, count, parameters)


_DLR_TYPES = ("", "BIGINT", "BIGINT", "", "", "DOUBLE PRECISION", "")


def _insert_dlrs(conn: Conn, count: int, parameters: tuple[object, ...]) -> None:
    """As ``message_ops.insert_callback``, a row per message, due at once: a message ends
    once (``_move`` moves no ended message), so its DLR is the only callback of its order key
    (``webhook_ops.ALONE``) and none can be ahead of it to park behind
    (``webhook_ops.due_unless_behind``'s probe, a few percent of a receipt, would answer no)."""
    table = values(count, (*_DLR_TYPES, FILLER_TYPE))
    conn.execute(
        "INSERT INTO webhooks (uuid, account_id, kind, message_id, url, body, state, "
        f"created_at, due_at, order_key) SELECT v.column1, v.column2, '{webhook_ops.ALONE}', "
        "v.column3, v.column4, v.column5, 'pending', v.column6, v.column6, v.column7 "
        f"FROM {table} AS v WHERE {not_filler(len(_DLR_TYPES))}",
        parameters,
    )


def _parts(conn: Conn, message_ids: Sequence[int]) -> dict[int, list[PartView]]:
    parts: dict[int, list[PartView]] = defaultdict(list)
    for chunk in padded_chunks(message_ids):
        for row in conn.execute(
            f"SELECT message_id, {PART_COLUMNS} FROM parts "
            f"WHERE message_id IN ({marks(len(chunk))}) ORDER BY message_id, seq",
            chunk,
        ).fetchall():
            parts[int(row[0])].append(PartView(*row[1:]))
    return parts
