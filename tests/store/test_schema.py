"""Migrations: a database made by an older build is brought up to date, data kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from smsrelay.store.schema import MIGRATIONS, current_version, upgrade


def test_a_version_1_database_gains_the_later_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("BEGIN")
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip() and not all(
            line.strip().startswith("--") or not line.strip() for line in statement.splitlines()
        ):
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute(
        "INSERT INTO replies (msisdn, virtual_number, text, keyword, connector, received_at) "
        "VALUES ('+33612345678', '+33757000001', 'Oui', 'OUI', 'default', 1.0)"
    )
    conn.execute(
        "INSERT INTO stop_list (id, account_id, phone, created_at) "
        "VALUES (7, 1, '+33600000007', 1.0)"
    )
    conn.execute("COMMIT")

    assert upgrade(conn) == list(range(2, len(MIGRATIONS) + 1))
    assert current_version(conn) == len(MIGRATIONS)
    assert conn.execute("SELECT text, bind_id FROM replies").fetchall() == [("Oui", None)]
    assert conn.execute("SELECT id, phone FROM stop_list").fetchall() == [(7, "+33600000007")]
    assert upgrade(conn) == []  # nothing twice
