"""The real SMSC a database's default connector last sent to. A database a real SMSC has
served must not be started on the built-in simulator by mistake (its settings not found:
serve started from another directory, a flag forgotten): the simulator would take its queued
messages and report them delivered, though none left."""

from __future__ import annotations

from smsrelay.store.sql import Conn

FACT = "default_connector_smsc"


def last_real_smsc(conn: Conn) -> str | None:
    row = conn.execute("SELECT value FROM gateway_facts WHERE name = ?", (FACT,)).fetchone()
    return None if row is None else str(row[0])


def note_real_smsc(conn: Conn, where: str) -> int:
    conn.execute(
        "INSERT INTO gateway_facts (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (FACT, where),
    )
    return 1
