"""Reads behind the account's API (/v1/me, multi-status): functions run on a SQLite connection.

Each is a ``fn(conn)`` for ``Database.read``, so one call sees one consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable

from smsrelay.store.account_ops import account_by_id
from smsrelay.store.message_ops import get_message
from smsrelay.store.records import AccountSnapshot, MessageView
from smsrelay.store.sql import Conn

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


def stopped_phones(conn: Conn, account_id: int) -> frozenset[str]:
    rows = conn.execute("SELECT phone FROM stop_list WHERE account_id = ?", (account_id,))
    return frozenset(str(r[0]) for r in rows)


def messages_and_stops(
    conn: Conn, account_id: int, message_ids: Iterable[int]
) -> tuple[dict[int, MessageView], frozenset[str]]:
    """The account's messages among ``message_ids`` (others are left out) and its STOP list."""
    found: dict[int, MessageView] = {}
    for message_id in message_ids:
        message = get_message(conn, message_id, account_id)
        if message is not None:
            found[message_id] = message
    return found, stopped_phones(conn, account_id)
