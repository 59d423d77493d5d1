"""Migrations: a database made by an older build is brought up to date, data kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from smsrelay.store import message_ops
from smsrelay.store.schema import MIGRATIONS, current_version, upgrade


def _database_at(path: Path, version: int) -> sqlite3.Connection:
    """A database as the build whose last migration was ``version`` left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("BEGIN")
    for script in MIGRATIONS[:version]:
        for statement in script.split(";"):
            if statement.strip() and not all(
                line.strip().startswith("--") or not line.strip() for line in statement.splitlines()
            ):
                conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.execute("COMMIT")
    return conn


def test_a_version_1_database_gains_the_later_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    conn = _database_at(tmp_path / "old.db", 1)
    conn.execute(
        "INSERT INTO replies (msisdn, virtual_number, text, keyword, connector, received_at) "
        "VALUES ('+33612345678', '+33757000001', 'Oui', 'OUI', 'default', 1.0)"
    )
    conn.execute(
        "INSERT INTO stop_list (id, account_id, phone, created_at) "
        "VALUES (7, 1, '+33600000007', 1.0)"
    )

    assert upgrade(conn) == list(range(2, len(MIGRATIONS) + 1))
    assert current_version(conn) == len(MIGRATIONS)
    assert conn.execute("SELECT text, bind_id FROM replies").fetchall() == [("Oui", None)]
    assert conn.execute("SELECT id, phone FROM stop_list").fetchall() == [(7, "+33600000007")]
    assert upgrade(conn) == []  # nothing twice


def test_parts_in_flight_when_claim_times_came_keep_going_without_one(tmp_path: Path) -> None:
    conn = _database_at(tmp_path / "old.db", 4)
    conn.execute(
        "INSERT INTO parts (message_id, seq, connector, state, due_at, lease_until) "
        "VALUES (1, 1, 'default', 'sending', 100.0, 160.0), "
        "(2, 1, 'default', 'queued', 100.0, NULL)"
    )

    assert upgrade(conn) == [5]
    assert conn.execute("SELECT id, claimed_at FROM parts").fetchall() == [(1, None), (2, None)]
    assert message_ops.sending_parts(conn) == {"default": (1, None)}  # claimed, time unknown
