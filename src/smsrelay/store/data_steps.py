"""One-off work a migration leaves for the running gateway: a migration is SQL alone, and
some repairs need what only the gateway has (the callback builders, for a DLR). A migration
names the step in ``data_steps``; serve runs it at its start and deletes the name in the same
transaction, so it runs once, on whichever node starts first."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from smsrelay.store import message_ops
from smsrelay.store.records import CallbackBuilders
from smsrelay.store.sql import Conn

Step = Callable[[Conn, float, CallbackBuilders], int]


def run(conn: Conn, now: float, builders: CallbackBuilders) -> dict[str, int]:
    """Every pending step this build knows: its name -> how many rows it changed."""
    done = {}
    for (name,) in conn.execute("SELECT name FROM data_steps ORDER BY name").fetchall():
        step = STEPS.get(str(name))
        if step is not None:
            done[str(name)] = step(conn, now, builders)
            conn.execute("DELETE FROM data_steps WHERE name = ?", (name,))
    return done


def cancel_waiting_for_stopped(conn: Conn, now: float, builders: CallbackBuilders) -> int:
    """Builds before the STOP cancel added a person to the STOP list and left what waited for
    them (held for quiet hours): cancelled, refunded and reported now, as a STOP does."""
    people = conn.execute(
        "SELECT DISTINCT m.account_id, m.recipient FROM messages m JOIN stop_list s "
        "ON s.account_id = m.account_id AND s.phone = m.recipient "
        "WHERE m.final_at IS NULL AND m.sandbox = 0 ORDER BY m.account_id, m.recipient"
    ).fetchall()
    return sum(
        message_ops.cancel_waiting_for(conn, int(account_id), str(phone), now, builders)
        for account_id, phone in people
    )


def compose_account_names(conn: Conn, now: float, builders: CallbackBuilders) -> int:
    """Builds before the CLI read account names in Unicode's composed form (NFC) stored them
    as typed: ``café`` typed with a combining accent could not be named from the CLI any
    more. Renamed to the composed form, unless another account has that name already (both
    are left as they are: renaming one would merge what the CLI shows of two accounts)."""
    rows = conn.execute("SELECT id, name FROM accounts ORDER BY id").fetchall()
    taken = {str(name) for _, name in rows}
    renamed = 0
    for account_id, name in rows:
        composed = unicodedata.normalize("NFC", str(name))
        if composed != name and composed not in taken:
            conn.execute("UPDATE accounts SET name = ? WHERE id = ?", (composed, account_id))
            taken.add(composed)
            renamed += 1
    return renamed


STEPS: dict[str, Step] = {
    "cancel_waiting_for_stopped": cancel_waiting_for_stopped,
    "compose_account_names": compose_account_names,
}
