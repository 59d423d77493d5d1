"""Replies arriving from the SMSC, stored before they are acknowledged. (Receipts:
``receipt_batch``.)"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from smsrelay.domain.data_coding import UCS2, alphabet_of, decode_sm_text
from smsrelay.domain.keywords import keyword_of
from smsrelay.store.grouped import marks, padded
from smsrelay.store.message_ops import cancel_waiting_for, insert_callback
from smsrelay.store.records import (
    CallbackBuilders,
    InboundReply,
    ReplyFacts,
    ReplyOutcome,
    ReplyView,
)
from smsrelay.store.sql import Conn

# Parts of a long reply that arrive further apart than this are not joined (8-bit refs recur).
REASSEMBLY_WINDOW = 3600.0
log = logging.getLogger("smsrelay.store")


# -- replies ------------------------------------------------------------------------------------


def record_reply(conn: Conn, reply: InboundReply, builders: CallbackBuilders) -> ReplyOutcome:
    """Store a reply (or one part of a long one), STOP it if asked, queue its callbacks."""
    duplicate = _recent_duplicate(conn, reply)
    if duplicate is not None:
        return duplicate
    # Only the connector that serves the number speaks for it: another carrier's SMSC (a
    # compromised one, or one misrouting) put replies and STOPs on another account's number.
    owner = conn.execute(
        "SELECT n.account_id, a.reply_url, a.reassemble_replies FROM numbers n "
        "JOIN accounts a ON a.id = n.account_id WHERE n.msisdn = ? AND n.connector = ?",
        (reply.virtual_number, reply.connector),
    ).fetchone()
    account_id = None if owner is None else int(owner[0])
    link = None if account_id is None else _last_sent(conn, reply, account_id)
    reply_id = _insert_reply(conn, reply, account_id, None if link is None else int(link[0]))
    reassemble = owner is not None and bool(owner[2])
    joined = _joined(conn, reply, reply_id, held_only=reassemble)
    stopped = False
    if account_id is not None and _asks_to_stop(reply, joined):
        stopped = True
        conn.execute(
            "INSERT INTO stop_list (account_id, phone, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (account_id, reply.msisdn, reply.received_at),
        )
        # what still waits for that person (held for quiet hours) must not leave now
        cancel_waiting_for(conn, account_id, reply.msisdn, reply.received_at, builders)
    url = (link[1] if link is not None and link[1] else None) or (owner[1] if owner else None)
    callbacks = 0
    if url and account_id is not None:
        callbacks = _queue_reply_callbacks(
            conn, reply, reply_id, account_id, url, reassemble, joined, builders
        )
    return ReplyOutcome(
        reply_id, account_id, None if link is None else int(link[0]), callbacks, stopped
    )


def _last_sent(conn: Conn, reply: InboundReply, account_id: int) -> Any:
    """The last message of the number's owner that reached that person: one held, cancelled
    or still queued (or a sandbox one) never did, and a reply cannot answer it; nor can the
    messages a number's earlier owner sent (its replies would go to that owner's URL)."""
    return conn.execute(
        "SELECT m.id, m.url_response FROM messages m WHERE m.sender = ? AND m.recipient = ? "
        "AND m.account_id = ? AND EXISTS (SELECT 1 FROM parts p WHERE p.message_id = m.id "
        "AND p.submitted_at IS NOT NULL) ORDER BY m.id DESC LIMIT 1",
        (reply.virtual_number, reply.msisdn, account_id),
    ).fetchone()


def _asks_to_stop(reply: InboundReply, joined: _Joined) -> bool:
    """The whole reply asks to stop; or, before its other parts come (they may never), its
    first part does, once that part holds a whole first word ("STOP" alone may go on as
    "STOPPER" in the next part)."""
    if joined.complete:
        return reply.is_stop(joined.text)
    opening = joined.opening
    return opening is not None and _first_word_whole(opening) and reply.is_stop(opening)


def _first_word_whole(text: str) -> bool:
    """Some space follows the first word (the next part cannot lengthen it)."""
    words = text.lstrip()
    return bool(words) and (len(words.split(maxsplit=1)) == 2 or words[-1].isspace())


# An SMSC re-sends a deliver_sm whose resp it did not get (we crashed after the commit, or the
# link dropped first), on a later bind. It surely got our resp once it answered a request we
# wrote after it (carrier/answer_proof, saved in `binds`): such a reply cannot come again, and
# the same text later is the person writing twice. One not proven so is looked for as long as
# an SMSC may hold it through an outage; one from a build that did not number its bind's
# deliveries, for RESEND_WINDOW.
UNPROVEN_WINDOW = 3600.0
RESEND_WINDOW = 120.0
# how long a bind's proof is kept: longer than anything looks for it
BINDS_KEPT_S = 2 * UNPROVEN_WINDOW


# A one-part reply's re-send is looked for among the same person's replies to the number on
# the same connector that open with the same text (replies_by_text), on other binds, the
# latest first, and among 64 of those at most: by the sender alone, each reply read every
# reply of that sender in the hour (a burst of 20,000: 115 s, the API unanswered meanwhile).
# Rows of the bind it comes on are skipped inside the index, so a burst on one bind costs
# each reply an index walk, not row reads, and a re-sent burst finds each original.
SAME_OPENING_LOOKED_AT = 64
OPENING = 32  # characters of the text in replies_by_text
# a part of a long reply: among that many with its reference (≤ 255 parts a reply)
SAME_REFERENCE_LOOKED_AT = 1024


def _recent_duplicate(conn: Conn, reply: InboundReply) -> ReplyOutcome | None:
    candidates, params = _same_part_ids(reply) if reply.concat else _same_opening_ids(reply)
    row = conn.execute(
        "SELECT r.id, r.account_id, r.message_id FROM replies r "
        "LEFT JOIN binds b ON b.bind_id = r.bind_id "
        f"WHERE r.id IN ({candidates}) AND r.text = ? "
        # ...and, for a one-part reply, only while the SMSC may not have had our resp
        "AND (r.concat_ref IS NOT NULL OR (r.bind_seq IS NULL AND r.received_at >= ?) "
        "OR COALESCE(b.proven_through, 0) < r.bind_seq) LIMIT 1",
        (*params, reply.text, reply.received_at - RESEND_WINDOW),
    ).fetchone()
    if row is None:
        return None
    if reply.bind_id:  # the re-send is used up: the same text again on this bind is the person
        conn.execute(
            "UPDATE replies SET bind_id = ?, bind_seq = ? WHERE id = ?",
            (reply.bind_id, reply.bind_seq or None, row[0]),
        )
    return ReplyOutcome(int(row[0]), row[1], row[2], 0, False)


def _same_opening_ids(reply: InboundReply) -> tuple[str, tuple[Any, ...]]:
    """The rows a one-part reply may be the re-send of: another bind's (the person writing
    twice on one bind is posted twice; an SMSC re-sends on a later bind), within the hour."""
    sql = (
        "SELECT id FROM replies WHERE msisdn = ? AND virtual_number = ? AND connector = ? "
        f"AND substr(text, 1, {OPENING}) = substr(CAST(? AS TEXT), 1, {OPENING}) "
        "AND received_at >= ? "
        "AND concat_ref IS NULL AND (? = '' OR COALESCE(bind_id, '') != ?) "
        f"ORDER BY received_at DESC LIMIT {SAME_OPENING_LOOKED_AT}"
    )
    since = reply.received_at - UNPROVEN_WINDOW
    params = (reply.msisdn, reply.virtual_number, reply.connector, reply.text, since)
    return sql, (*params, reply.bind_id, reply.bind_id)


def _same_part_ids(reply: InboundReply) -> tuple[str, tuple[Any, ...]]:
    """The rows a part may be the re-send of: the same reference, total and part number on
    any bind (a phone numbers each long message anew: the same within the hour is one),
    looked for as long as it could still join its reply (re-sent later than 120 s, a restart
    or a slow rebind, it completed the reply again and posted it twice)."""
    assert reply.concat is not None
    ref, total, part = reply.concat
    sql = (
        "SELECT id FROM replies WHERE msisdn = ? AND virtual_number = ? AND concat_ref = ? "
        "AND concat_total = ? AND concat_part = ? AND connector = ? AND received_at >= ? "
        f"ORDER BY received_at DESC LIMIT {SAME_REFERENCE_LOOKED_AT}"
    )
    since = reply.received_at - REASSEMBLY_WINDOW
    return sql, (reply.msisdn, reply.virtual_number, ref, total, part, reply.connector, since)


def record_answers_proven(conn: Conn, bind_id: str, through: int, now: float) -> None:
    """The SMSC read our answers to the deliveries numbered up to ``through`` on ``bind_id``."""
    conn.execute(
        "INSERT INTO binds (bind_id, proven_through, proven_at) VALUES (?, ?, ?) "
        "ON CONFLICT (bind_id) DO UPDATE SET proven_through = excluded.proven_through, "
        "proven_at = excluded.proven_at WHERE excluded.proven_through > binds.proven_through",
        (bind_id, through, now),
    )


def _insert_reply(
    conn: Conn, reply: InboundReply, account_id: int | None, message_id: int | None
) -> int:
    ref, total, part = reply.concat if reply.concat else (None, None, None)
    row = conn.execute(
        "INSERT INTO replies (account_id, msisdn, virtual_number, text, keyword, message_id, "
        "concat_ref, concat_total, concat_part, connector, received_at, bind_id, bind_seq, "
        "body, data_coding, smsc_default) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            account_id,
            reply.msisdn,
            reply.virtual_number,
            reply.text,
            reply.keyword,
            message_id,
            ref,
            total,
            part,
            reply.connector,
            reply.received_at,
            reply.bind_id or None,
            reply.bind_seq or None,
            reply.body,
            reply.data_coding,
            reply.smsc_default,
        ),
    ).fetchone()
    return int(row[0])


@dataclass(frozen=True)
class _Joined:
    """A reply as its parts so far make it."""

    text: str
    complete: bool  # every part is in
    opening: str | None  # its first part's text, once in
    part_ids: tuple[int, ...] = ()  # the parts' rows, for a long reply


def _joined(conn: Conn, reply: InboundReply, reply_id: int, *, held_only: bool) -> _Joined:
    """The whole reply as its parts so far make it. ``held_only``: of the parts held for
    reassembly (a part once posted in a joined reply is not taken again: a phone that reuses
    a reference within the hour starts a new message, which must not take the old parts)."""
    if reply.concat is None:
        return _Joined(reply.text, True, reply.text)
    ref, total, _ = reply.concat
    held = " AND (awaiting = 1 OR id = ?)" if held_only else ""
    rows = conn.execute(
        "SELECT concat_part, text, id, body, data_coding, smsc_default FROM replies "
        "WHERE msisdn = ? AND virtual_number = ? AND concat_ref = ? AND concat_total = ? "
        f"AND received_at >= ? AND connector = ?{held} ORDER BY id",
        (
            reply.msisdn,
            reply.virtual_number,
            ref,
            total,
            reply.received_at - REASSEMBLY_WINDOW,
            reply.connector,  # another carrier's parts are not this reply's
            *((reply_id,) if held_only else ()),
        ),
    ).fetchall()
    parts = {int(row[0]): row[1:] for row in rows}  # a re-sent part replaces its earlier copy
    complete = set(parts) == set(range(1, total + 1))
    in_order = [parts[i] for i in sorted(parts)]
    opening = parts[1][0] if 1 in parts else None
    row_ids = tuple(int(part[1]) for part in parts.values())
    return _Joined(_text_of(in_order), complete, opening, row_ids)


def _text_of(parts: list[tuple[Any, ...]]) -> str:
    """The parts' text: their octets joined, then read, when each kept them in one coding (a
    character cut between two parts reads whole only so); otherwise their texts joined."""
    codings = {(part[3], part[4]) for part in parts}
    if len(codings) == 1 and all(part[2] is not None for part in parts):
        ((data_coding, smsc_default),) = codings
        bodies = [bytes(part[2]) for part in parts]
        # a UCS-2 part of an odd length is broken: joined, it would shift every later part
        if alphabet_of(int(data_coding)) != UCS2 or not any(len(b) % 2 for b in bodies):
            return decode_sm_text(b"".join(bodies), int(data_coding), int(smsc_default))
    return "".join(str(part[0]) for part in parts)


def _queue_reply_callbacks(
    conn: Conn,
    reply: InboundReply,
    reply_id: int,
    account_id: int,
    url: str,
    reassemble: bool,
    joined: _Joined,
    builders: CallbackBuilders,
) -> int:
    if reassemble and reply.concat is not None:
        if not joined.complete:
            conn.execute("UPDATE replies SET awaiting = 1 WHERE id = ?", (reply_id,))
            return 0
        _stop_awaiting(conn, joined.part_ids)
        facts = ReplyFacts(
            reply_id,
            reply.msisdn,
            reply.virtual_number,
            joined.text,
            keyword_of(joined.text),
            reply.received_at,
            None,
        )
    else:
        facts = ReplyFacts(
            reply_id,
            reply.msisdn,
            reply.virtual_number,
            reply.text,
            reply.keyword,
            reply.received_at,
            reply.concat,
        )
    _queue_reply_callback(conn, builders, account_id, url, facts)
    return 1


def _queue_reply_callback(
    conn: Conn,
    builders: CallbackBuilders,
    account_id: int,
    url: str,
    facts: ReplyFacts,
    now: float | None = None,
) -> None:
    """A reply's callback row, ordered after the earlier ones of the same conversation;
    stored ``now`` (default: when the reply came), from which it counts as due."""
    insert_callback(
        conn,
        builders.new_id(),
        account_id,
        "reply",
        url,
        builders.reply(facts),
        facts.received_at if now is None else now,
        reply_id=facts.reply_id,
        order_key=conversation_key(account_id, facts.msisdn, facts.virtual_number),
    )


def _stop_awaiting(conn: Conn, part_ids: tuple[int, ...]) -> None:
    """The parts just posted joined are held no more (another message's, under a reused
    reference, stay held: posted alone if their own parts never come)."""
    ids = padded(sorted(part_ids))
    conn.execute(f"UPDATE replies SET awaiting = 0 WHERE id IN ({marks(len(ids))})", ids)


def flush_stale_reassemblies(
    conn: Conn, older_than: float, now: float, builders: CallbackBuilders
) -> int:
    """Parts of a long reply held for reassembly whose other parts never came are posted
    one by one, as SMS Partner posts them, so the application still hears the reply. Their
    callbacks are stored ``now``: due from the flush, not from the reply an hour before (which
    would count them late at once, and shorten their retry budget). And binds' proofs no
    duplicate check reads any more are dropped (here, not at each save: on PostgreSQL a
    delete that scans the table made two nodes' saves fail to serialize every time)."""
    conn.execute("DELETE FROM binds WHERE proven_at < ?", (now - BINDS_KEPT_S,))
    rows = conn.execute(
        "SELECT r.id, r.account_id, r.msisdn, r.virtual_number, r.text, r.keyword, "
        "r.concat_ref, r.concat_total, r.concat_part, r.received_at, "
        "COALESCE(m.url_response, a.reply_url) FROM replies r "
        "JOIN accounts a ON a.id = r.account_id LEFT JOIN messages m ON m.id = r.message_id "
        "WHERE r.awaiting = 1 AND r.received_at < ? ORDER BY r.id LIMIT 1000",
        (older_than,),
    ).fetchall()
    for row in rows:
        reply_id, account_id, msisdn, number, text, keyword, ref, total, part, at, url = row
        conn.execute("UPDATE replies SET awaiting = 0 WHERE id = ?", (reply_id,))
        if not url:
            continue
        facts = ReplyFacts(reply_id, msisdn, number, text, keyword, at, (ref, total, part))
        _queue_reply_callback(conn, builders, account_id, url, facts, now)
    return len(rows)


def conversation_key(account_id: int, msisdn: str, virtual_number: str) -> str:
    """One person's replies to one number are posted in the order they arrived; per account,
    so a number's new owner never waits behind its old owner's failing receiver."""
    return f"c{account_id}:{msisdn}>{virtual_number}"


def recent_replies(conn: Conn, account_id: int | None, limit: int) -> list[ReplyView]:
    where, params = ("WHERE account_id = ?", (account_id,)) if account_id is not None else ("", ())
    rows = conn.execute(
        "SELECT id, account_id, msisdn, virtual_number, text, keyword, message_id, received_at "
        f"FROM replies {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [ReplyView(*row) for row in rows]
