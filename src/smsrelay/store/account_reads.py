"""Reads behind the account's API (/v1/me, multi-status): functions run on a SQLite connection.

Each is a ``fn(conn)`` for ``Database.read``, so one call sees one consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable

from smsrelay.store.account_ops import account_by_id
from smsrelay.store.message_ops import get_message
from smsrelay.store.records import AccountSnapshot, MessageView
from smsrelay.store.sql import Conn

PHONES_PER_LOOKUP = 500  # an IN list's length: well under any engine's parameter limit

# Messages that have not left yet: held for quiet hours, or queued and not yet submitted.
# Such a message has a part still to leave (queued or being sent), and the parts' partial
# indexes find those: the count is bounded by the live work, not by the account's history
# (messages has no index on its state; the count was a scan of every message kept, 150 ms
# with a million of them).
WAITING_COUNT = (
    "SELECT COUNT(*) FROM messages WHERE id IN ("
    "SELECT message_id FROM parts WHERE state = 'queued' "
    "UNION ALL SELECT message_id FROM parts WHERE state = 'sending') "
    "AND account_id = ? AND sandbox = 0 AND state IN ('held', 'queued')"
)


def account_snapshot(conn: Conn, account_id: int) -> AccountSnapshot | None:
    """The account as stored now (not a cached copy) and how many of its messages wait."""
    account = account_by_id(conn, account_id)
    if account is None:
        return None
    row = conn.execute(WAITING_COUNT, (account_id,)).fetchone()
    return AccountSnapshot(account, int(row[0]))


def stopped_among(conn: Conn, account_id: int, phones: Iterable[str]) -> frozenset[str]:
    """Which of ``phones`` are in the account's STOP list: each looked up by the list's
    (account, phone) key, not the whole list read (a marketing account's runs to 100,000s)."""
    wanted = sorted(set(phones))
    stopped: set[str] = set()
    for start in range(0, len(wanted), PHONES_PER_LOOKUP):
        chunk = wanted[start : start + PHONES_PER_LOOKUP]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT phone FROM stop_list WHERE account_id = ? AND phone IN ({marks})"
        stopped.update(str(row[0]) for row in conn.execute(sql, (account_id, *chunk)))
    return frozenset(stopped)


def messages_and_stops(
    conn: Conn, account_id: int, message_ids: Iterable[int]
) -> tuple[dict[int, MessageView], frozenset[str]]:
    """The account's messages among ``message_ids`` (others are left out) and which of their
    recipients are in its STOP list."""
    found: dict[int, MessageView] = {}
    for message_id in message_ids:
        message = get_message(conn, message_id, account_id)
        if message is not None:
            found[message_id] = message
    return found, stopped_among(conn, account_id, (m.recipient for m in found.values()))
