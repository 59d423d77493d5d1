"""Messages and their parts: claiming, retries and failures, cancelling, reading. (Accepting
and submit outcomes run grouped: ``accept_batch``, ``submit_outcomes``.)"""

from __future__ import annotations

from collections.abc import Mapping

from smsrelay.domain.backoff import SUBMIT_RETRY_CAP
from smsrelay.domain.states import MessageState, PartState
from smsrelay.errors import DomainError
from smsrelay.store import quiet_gate, retention_ops, settle, webhook_ops
from smsrelay.store.grouped import marks, padded, padded_chunks
from smsrelay.store.message_rows import MESSAGE_COLUMNS, PART_COLUMNS, message_from_row
from smsrelay.store.records import (
    CallbackBuilders,
    ClaimedPart,
    MessageView,
    PartView,
    ReceiptView,
)
from smsrelay.store.sql import Conn

# -- reading --------------------------------------------------------------------------------


def get_message(
    conn: Conn,
    message_id: int,
    account_id: int | None = None,
    *,
    with_receipts: bool = True,
) -> MessageView | None:
    row = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None or (account_id is not None and row[1] != account_id):
        return None
    receipts = _receipts_of(conn, message_id) if with_receipts else ()
    return message_from_row(row, _parts_of(conn, message_id), receipts)


def _parts_of(conn: Conn, message_id: int) -> tuple[PartView, ...]:
    rows = conn.execute(
        f"SELECT {PART_COLUMNS} FROM parts WHERE message_id = ? ORDER BY seq", (message_id,)
    ).fetchall()
    return tuple(PartView(*r) for r in rows)


def _receipts_of(conn: Conn, message_id: int) -> tuple[ReceiptView, ...]:
    rows = conn.execute(
        "SELECT r.part_id, r.carrier_id, r.stat, r.err, r.received_at FROM receipts r "
        "JOIN parts p ON p.id = r.part_id WHERE p.message_id = ? ORDER BY r.id",
        (message_id,),
    ).fetchall()
    return tuple(ReceiptView(*r) for r in rows)


def messages_by_tag(
    conn: Conn, account_id: int, tag: str, limit: int, offset: int
) -> tuple[list[MessageView], int]:
    total = conn.execute(
        "SELECT COUNT(*) FROM messages WHERE account_id = ? AND tag = ?", (account_id, tag)
    ).fetchone()[0]
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = ? AND tag = ? "
        "ORDER BY id LIMIT ? OFFSET ?",
        (account_id, tag, limit, offset),
    ).fetchall()
    return [message_from_row(r) for r in rows], int(total)


def recent_messages(conn: Conn, account_id: int | None, limit: int) -> list[MessageView]:
    where, params = ("WHERE account_id = ?", (account_id,)) if account_id is not None else ("", ())
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [message_from_row(r) for r in rows]


def queue_depth(conn: Conn) -> dict[str, int]:
    rows = conn.execute(
        "SELECT state, COUNT(*) FROM parts WHERE state IN ('queued', 'sending', 'submitted') "
        "GROUP BY state"
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def overdue_parts(conn: Conn, now: float) -> dict[str, tuple[int, float]]:
    """Per connector: parts whose message is due and that the SMSC has not taken yet (queued,
    waiting for a retry, or sending), and since when the oldest message has been due: a link
    down, an SMSC that throttles, fails or does not answer, a connector slower than its
    traffic; held parts are not due yet. Counted from the message's due time, not the part's
    own nor its claim, which each retry moves: a throttling or mute SMSC looked a few seconds
    or a minute late for ever. Bounded by the live work: the queued parts due before the
    longest retry delay from now (never the held backlog further ahead), and the sending."""
    queued = conn.execute(
        "SELECT p.connector, COUNT(*), MIN(m.due_at) FROM parts p "
        "JOIN messages m ON m.id = p.message_id WHERE p.state = 'queued' "
        "AND p.due_at <= ? AND m.due_at <= ? GROUP BY p.connector",
        (now + SUBMIT_RETRY_CAP * 1.25 + 60.0, now),  # the cap, its jitter, a margin
    ).fetchall()
    sending = conn.execute(
        "SELECT p.connector, COUNT(*), MIN(m.due_at) FROM parts p "
        "JOIN messages m ON m.id = p.message_id WHERE p.state = 'sending' GROUP BY p.connector"
    ).fetchall()
    overdue: dict[str, tuple[int, float]] = {}
    for connector, count, since in (*queued, *sending):
        had, oldest = overdue.get(str(connector), (0, float(since)))
        overdue[str(connector)] = (had + int(count), min(oldest, float(since)))
    return overdue


def sending_parts(conn: Conn) -> dict[str, tuple[int, float | None]]:
    """Per connector: parts claimed and not yet settled (waiting for a window slot, or sent
    and waiting for the SMSC's answer), and when the oldest was claimed (None: claimed
    before claimed_at existed). Scans only the sending parts (the parts_leased index)."""
    rows = conn.execute(
        "SELECT connector, COUNT(*), MIN(claimed_at) FROM parts WHERE state = 'sending' "
        "GROUP BY connector"
    ).fetchall()
    return {str(r[0]): (int(r[1]), None if r[2] is None else float(r[2])) for r in rows}


# -- the dispatcher's side -------------------------------------------------------------------


# Claims in one transaction while each finds only parts quiet hours hold (a backlog at 20:00):
# an empty answer makes the dispatcher wait a poll, and the parts due behind them with it.
QUIET_ROUNDS = 8


def claim_due(
    conn: Conn,
    connector: str,
    now: float,
    limit: int,
    lease_until: float,
    quiet_releases: Mapping[str, float] | None = None,
) -> list[ClaimedPart]:
    """Move due parts of one connector to 'sending' under a lease, oldest first.
    ``quiet_releases``: the regions under quiet hours now, each with its release time; the
    parts of messages they hold go back (``quiet_gate``)."""
    for _ in range(QUIET_ROUNDS):
        claimed = conn.execute(
            "UPDATE parts SET state = 'sending', lease_until = ?, claimed_at = ?, "
            "attempts = attempts + 1 WHERE id IN (SELECT id FROM parts WHERE state = 'queued' "
            "AND connector = ? AND due_at <= ? ORDER BY due_at LIMIT ?) "
            "RETURNING id, message_id, seq, attempts",
            (lease_until, now, connector, now, limit),
        ).fetchall()
        if not (claimed and quiet_releases):
            break
        quiet = quiet_gate.quiet_now(conn, claimed, quiet_releases)
        full = len(claimed) == limit
        if quiet:
            quiet_gate.hold_again(conn, claimed, quiet)
            claimed = [row for row in claimed if row[1] not in quiet]
        if claimed or not full:
            break  # (all of a full claim held again: more may be due behind them)
    if not claimed:
        return []
    messages = _claim_messages(conn, {row[1] for row in claimed})
    _mark_messages_queued(conn, messages)
    result = []
    for part_id, message_id, seq, attempts in sorted(claimed):
        sender, recipient, text, encoding, nb_sms, _ = messages[message_id]
        result.append(
            ClaimedPart(
                part_id, message_id, seq, nb_sms, attempts, sender, recipient, text, encoding
            )
        )
    return result


def _claim_messages(conn: Conn, ids: set[int]) -> dict[int, tuple[str, str, str, str, int, str]]:
    keys = padded(sorted(ids))
    rows = conn.execute(
        "SELECT id, sender, recipient, text, encoding, nb_sms, state FROM messages "
        f"WHERE id IN ({marks(len(keys))})",
        keys,
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows}


def _mark_messages_queued(
    conn: Conn, messages: dict[int, tuple[str, str, str, str, int, str]]
) -> None:
    held = [(mid,) for mid, info in messages.items() if info[5] == MessageState.HELD]
    if held:
        conn.executemany("UPDATE messages SET state = 'queued' WHERE id = ?", held)


def release_expired_leases(conn: Conn, now: float) -> int:
    """Parts claimed by a dispatcher that died go back to the queue with the claim's attempt
    given back: most of them never left (a process holds up to 1,000 claimed parts for a
    window of 100), and a part is failed only when the SMSC answers it with an error while
    its attempts are used up, so a counted crash would have spent the retries the part needs
    for the carrier's own transient errors. (The few that had left are not counted either:
    which they were cannot be known; after a lost link such a part is counted.) Each may
    have left, so none can be cancelled any more."""
    cursor = conn.execute(
        "UPDATE parts SET state = 'queued', lease_until = NULL, claimed_at = NULL, "
        "attempts = attempts - 1, last_error = 'lease expired: no submit outcome recorded', "
        "may_have_left = 1 "
        "WHERE state = 'sending' AND lease_until < ?",
        (now,),
    )
    return cursor.rowcount


def expire_unanswered(
    conn: Conn,
    submitted_before: float,
    now: float,
    builders: CallbackBuilders,
    limit: int = 1000,
) -> int:
    """Parts the SMSC accepted but never reported on within the validity period are expired,
    so no message waits for ever on a receipt that will not come."""
    rows = conn.execute(
        "UPDATE parts SET state = 'expired', stat = 'EXPIRED', done_at = ?, "
        "last_error = 'no delivery receipt within the validity period' WHERE id IN ("
        "SELECT id FROM parts WHERE state = 'submitted' AND submitted_at < ? LIMIT ?) "
        "RETURNING message_id",
        (now, submitted_before, limit),
    ).fetchall()
    for message_id in sorted({int(r[0]) for r in rows}):
        settle.refresh(conn, message_id, now, builders)
    return len(rows)


def renew_leases(conn: Conn, part_ids: list[int], lease_until: float) -> int:
    """Keep parts that are still being worked on from being handed out again."""
    renewed = 0
    for chunk in padded_chunks(part_ids):
        renewed += conn.execute(
            "UPDATE parts SET lease_until = ? WHERE state = 'sending' "
            f"AND id IN ({marks(len(chunk))})",
            (lease_until, *chunk),
        ).rowcount
    return renewed


def mark_retry(
    conn: Conn,
    part_id: int,
    due_at: float,
    error: str,
    *,
    counted: bool = True,
    may_have_left: bool = False,
) -> bool:
    """Back to the queue. ``counted=False`` (throttled, link lost): the claim's attempt is
    given back, so slowing down never uses up the part's attempts. ``may_have_left``: its
    ``submit_sm`` was out when the link was lost, unanswered; it can no longer be cancelled."""
    cursor = conn.execute(
        "UPDATE parts SET state = 'queued', due_at = ?, lease_until = NULL, claimed_at = NULL, "
        "last_error = ?, attempts = attempts - ?, "
        "may_have_left = CASE WHEN ? = 1 THEN 1 ELSE may_have_left END "
        "WHERE id = ? AND state = 'sending'",
        (due_at, error, 0 if counted else 1, int(may_have_left), part_id),
    )
    return cursor.rowcount == 1


def mark_part_final(
    conn: Conn,
    part_id: int,
    state: PartState,
    error: str,
    now: float,
    builders: CallbackBuilders,
    nb_sms: int | None = None,
) -> None:
    """A part the SMSC refused for good (rejected) or that ran out of attempts (failed)."""
    row = conn.execute(
        "UPDATE parts SET state = ?, last_error = ?, done_at = ?, lease_until = NULL, "
        "claimed_at = NULL WHERE id = ? AND state = 'sending' RETURNING message_id",
        (str(state), error, now, part_id),
    ).fetchone()
    single = state if nb_sms == 1 else None
    if row is not None:
        settle.refresh(conn, int(row[0]), now, builders, only_part=single)


def insert_callback(
    conn: Conn,
    uuid: str,
    account_id: int,
    kind: str,
    url: str,
    body: bytes,
    now: float,
    *,
    message_id: int | None = None,
    reply_id: int | None = None,
    order_key: str | None = None,
) -> int:
    """A callback row. Rows with the same ``order_key`` are posted one after the other: one
    stored behind an open one of its key is parked until that one is done (see webhook_ops)."""
    key = order_key or (webhook_ops.message_key(message_id) if message_id is not None else None)
    values = (uuid, account_id, kind, message_id, reply_id, url, body, now)
    row = conn.execute(
        "INSERT INTO webhooks (uuid, account_id, kind, message_id, reply_id, url, body, state, "
        "created_at, due_at, order_key) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, "
        f"{webhook_ops.due_unless_behind('?', '?')}, ?) RETURNING id",
        (*values, key, webhook_ops.PARKED, now, key),
    ).fetchone()
    return int(row[0])


# a part the SMSC may have taken (a crash or a lost link while it was out): it goes again
_MAY_HAVE_LEFT = "SELECT 1 FROM parts WHERE message_id = ? AND may_have_left = 1 LIMIT 1"


def cancel(conn: Conn, account_id: int, message_id: int, now: float) -> int:
    """Cancel a message none of whose parts has left; refund it. Returns the refund."""
    row = conn.execute(
        "SELECT account_id, cost_micros, sandbox FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None or row[0] != account_id:
        raise DomainError("message.unknown", "message not found", "messageId")
    states = {
        r[0] for r in conn.execute("SELECT state FROM parts WHERE message_id = ?", (message_id,))
    }
    if row[2] or states != {"queued"}:
        raise DomainError("message.not_cancellable", "the message has already left", "messageId")
    if conn.execute(_MAY_HAVE_LEFT, (message_id,)).fetchone():
        raise DomainError(
            "message.not_cancellable",
            "the message may already have left (it was with the SMSC when a connection was "
            "lost or the gateway stopped): it will be sent",
            "messageId",
        )
    _cancel_parts(conn, account_id, message_id, int(row[1]), now, "cancelled through the API")
    conn.execute(
        "UPDATE messages SET state = 'cancelled', final_at = ? WHERE id = ?", (now, message_id)
    )
    return int(row[1])


def _cancel_parts(
    conn: Conn, account_id: int, message_id: int, cost_micros: int, now: float, why: str
) -> None:
    """A message's parts cancelled and its cost refunded (the caller ends the message)."""
    conn.execute(
        "UPDATE parts SET state = 'cancelled', done_at = ?, last_error = ? WHERE message_id = ?",
        (now, why, message_id),
    )
    conn.execute(
        "UPDATE accounts SET credit_micros = credit_micros + ? WHERE id = ?",
        (cost_micros, account_id),
    )


def release_held(conn: Conn, account_id: int, limit: int) -> int:
    """Up to ``limit`` of the account's parts held for quiet hours made due at once (from
    when their message was accepted): its quiet hours are off. How many; 0 when none is left.
    Found through the queued parts' partial index, so the history is not read."""
    moved = conn.execute(
        "UPDATE parts SET due_at = (SELECT m.created_at FROM messages m "
        "WHERE m.id = parts.message_id) WHERE id IN (SELECT p.id FROM parts p "
        "JOIN messages m ON m.id = p.message_id WHERE p.state = 'queued' "
        "AND m.account_id = ? AND m.state = 'held' AND p.due_at > m.created_at LIMIT ?) "
        "RETURNING message_id",
        (account_id, limit),
    ).fetchall()
    ids = padded(sorted({int(row[0]) for row in moved}))
    for chunk in padded_chunks(ids):
        conn.execute(
            f"UPDATE messages SET due_at = created_at WHERE id IN ({marks(len(chunk))})", chunk
        )
    return len(moved)


STOPPED_BEFORE_LEAVING = "cancelled: the recipient asked to stop (STOP) before it left"


def cancel_waiting_for(
    conn: Conn, account_id: int, phone: str, now: float, builders: CallbackBuilders
) -> int:
    """Cancel (and refund) the account's messages to ``phone`` that have not left: held for
    quiet hours or still queued when the person asked to stop. How many. Unlike a cancel the
    client asked for (its answer is the report), each gets its DLR callback: the client
    would otherwise wait for ever on a message it did not cancel."""
    rows = conn.execute(
        # by the account's numbers: the conversation index (sender, recipient) finds them
        "SELECT m.id, m.cost_micros FROM messages m WHERE m.sender IN "
        "(SELECT msisdn FROM numbers WHERE account_id = ?) AND m.recipient = ? "
        "AND m.account_id = ? AND m.final_at IS NULL AND m.sandbox = 0 "
        "AND NOT EXISTS (SELECT 1 FROM parts p WHERE p.message_id = m.id "
        "AND (p.state != 'queued' OR p.may_have_left = 1))",
        (account_id, phone, account_id),
    ).fetchall()
    for message_id, cost_micros in rows:
        _cancel_parts(
            conn, account_id, int(message_id), int(cost_micros), now, STOPPED_BEFORE_LEAVING
        )
        settle.refresh(conn, int(message_id), now, builders)  # cancelled, its DLR queued
    return len(rows)


def purge_sandbox(conn: Conn, older_than: float, limit: int) -> int:
    """Delete up to ``limit`` sandbox messages created before ``older_than`` (oldest first)."""
    cursor = conn.execute(
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
        f"WHERE sandbox = 1 AND created_at < ? AND {retention_ops.below_newest('messages')} "
        "ORDER BY created_at LIMIT ?)",
        (older_than, limit),
    )
    return cursor.rowcount
