"""Quiet hours at the moment a part leaves, not only when its message was accepted.

A message is held at its accept when quiet hours forbid it then. One accepted at 19:59 that
could not leave at once (the SMSC down, a backlog, a retry's backoff, a paced queue) would
otherwise go out at 23:00 or on a Sunday: the law restricts when marketing is *sent*. So a
claim made while a region is quiet hands back the parts of its messages whose account is
under quiet hours in that region now (its setting as it is now, not as it was at the accept),
due at the region's release, their attempt given back and their message held again.

A message of which a part has already left, is with the SMSC now, or may have left (its link
was lost while it was out) is finished: its last parts held until the morning would split one
text across the night on the handset.
"""

from __future__ import annotations

from collections.abc import Mapping

from smsrelay.store.grouped import marks, padded
from smsrelay.store.sql import Conn

ClaimedRow = tuple[int, int, int, int]  # part id, message id, seq, attempts


def quiet_now(
    conn: Conn, claimed: list[ClaimedRow], releases: Mapping[str, float]
) -> dict[int, float]:
    """Of the claimed parts' messages, those that may not leave now: message id -> the
    release time of its account's region. ``releases``: the regions quiet now."""
    message_ids = padded(sorted({row[1] for row in claimed}))
    regions = padded(sorted(releases))
    rows = conn.execute(
        "SELECT m.id, a.region FROM messages m JOIN accounts a ON a.id = m.account_id "
        f"WHERE m.id IN ({marks(len(message_ids))}) AND a.quiet_hours = 1 "
        f"AND a.region IN ({marks(len(regions))})",
        (*message_ids, *regions),
    ).fetchall()
    quiet = {int(r[0]): releases[str(r[1])] for r in rows}
    if quiet:
        for message_id in _begun(conn, claimed, quiet):
            del quiet[message_id]
    return quiet


def _begun(conn: Conn, claimed: list[ClaimedRow], candidates: Mapping[int, float]) -> set[int]:
    """Messages with a part that has left or may have (its link was lost while it was out:
    the handset may have it): one outside this claim that is no longer waiting in the queue,
    or any, this claim's too, marked as may have left."""
    this_claim = {row[0] for row in claimed}
    keys = padded(sorted(candidates))
    rows = conn.execute(
        "SELECT id, message_id, may_have_left FROM parts "
        f"WHERE message_id IN ({marks(len(keys))}) AND (state <> 'queued' OR may_have_left = 1)",
        keys,
    ).fetchall()
    return {int(r[1]) for r in rows if r[2] or r[0] not in this_claim}


def hold_again(conn: Conn, claimed: list[ClaimedRow], quiet: Mapping[int, float]) -> None:
    """Hand the quiet messages' claimed parts back, due at their release, attempt given back."""
    parts = [(quiet[row[1]], row[0]) for row in claimed if row[1] in quiet]
    conn.executemany(
        "UPDATE parts SET state = 'queued', due_at = ?, lease_until = NULL, "
        "claimed_at = NULL, attempts = attempts - 1 WHERE id = ?",
        parts,
    )
    conn.executemany(
        "UPDATE messages SET state = 'held', due_at = ? WHERE id = ?",
        [(release, message_id) for message_id, release in quiet.items()],
    )
