"""Migrations: a database made by an older build is brought up to date, data kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from smsrelay.store import message_ops, pg_schema
from smsrelay.store.account_ops import ACCOUNT_COLUMNS, account_from_row
from smsrelay.store.schema import (
    MIGRATIONS,
    SchemaTooNew,
    SchemaTooOld,
    current_version,
    upgrade,
)
from smsrelay.store.webhook_ops import PARKED, claim_due, record_attempt
from tests.factories import database_at_version


def test_a_version_1_database_gains_the_later_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    conn = database_at_version(tmp_path / "old.db", 1)
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


def test_accounts_made_before_allowed_ips_are_served_from_anywhere(tmp_path: Path) -> None:
    conn = database_at_version(tmp_path / "old.db", 13)
    conn.execute(
        "INSERT INTO accounts (name, key_hash, credit_micros, created_at) "
        "VALUES ('shop', 'h', 0, 1.0)"
    )
    upgrade(conn)
    row = conn.execute(f"SELECT {ACCOUNT_COLUMNS} FROM accounts").fetchone()
    assert account_from_row(row).allowed_ips == ()


def test_parts_in_flight_when_claim_times_came_keep_going_without_one(tmp_path: Path) -> None:
    conn = database_at_version(tmp_path / "old.db", 4)
    conn.execute(
        "INSERT INTO parts (message_id, seq, connector, state, due_at, lease_until) "
        "VALUES (1, 1, 'default', 'sending', 100.0, 160.0), "
        "(2, 1, 'default', 'queued', 100.0, NULL)"
    )

    assert upgrade(conn) == list(range(5, len(MIGRATIONS) + 1))
    assert conn.execute("SELECT id, claimed_at FROM parts").fetchall() == [(1, None), (2, None)]
    assert message_ops.sending_parts(conn) == {"default": (1, None)}  # claimed, time unknown


def test_callbacks_an_older_build_queued_behind_an_open_one_are_parked(tmp_path: Path) -> None:
    conn = database_at_version(tmp_path / "v5.db", 5)
    rows = [  # id, key, state, due_at: a head in backoff, two behind it, one on its own
        (1, "k", "pending", 600.0),
        (2, "k", "pending", 11.0),
        (3, "k", "pending", 12.0),
        (4, "other", "pending", 13.0),
        (5, "done", "delivered", 14.0),
    ]
    conn.executemany(
        "INSERT INTO webhooks (id, uuid, account_id, kind, url, body, state, created_at, "
        "due_at, order_key) VALUES (?, ?, 1, 'reply', 'https://e.com/', x'7b7d', ?, 10.0, ?, ?)",
        [(i, f"u{i}", state, due, key) for i, key, state, due in rows],
    )

    assert upgrade(conn) == list(range(6, len(MIGRATIONS) + 1))
    dues = dict(conn.execute("SELECT id, due_at FROM webhooks").fetchall())
    assert dues == {1: 600.0, 2: PARKED, 3: PARKED, 4: 13.0, 5: 14.0}
    assert [job.id for job in claim_due(conn, 600.0, 10, 660.0)] == [1, 4]
    record_attempt(conn, 1, 601.0, 200, 1.0, None, "delivered", None)
    assert [job.id for job in claim_due(conn, 601.0, 10, 660.0)] == [2]


PARTS_AN_OLDER_BUILD_REQUEUED = [  # id, state, attempts, last_error
    (1, "queued", 1, "smpp connector default: smpp connection lost"),
    (2, "queued", 1, "smpp connector default: no SUBMIT_SM_resp in time"),
    (3, "queued", 0, "stopping"),  # given back unsent at a stop
    (4, "queued", 0, "throttled"),  # refused by the SMSC: it did not take it
    (5, "queued", 0, None),  # never tried
    (6, "submitted", 1, None),
    (7, "queued", 1, "ESME_RTHROTTLED"),  # a counted attempt before: its error overwritten
]
OPEN_REPLY_CALLBACKS = [  # id, kind, state, order_key
    (1, "reply", "pending", "c+33612345678>+33757000001"),
    (2, "reply", "delivered", "c+33612345678>+33757000001"),
    (3, "dlr", "pending", "m7"),
]


def test_parts_an_older_build_requeued_after_a_lost_link_may_have_left(tmp_path: Path) -> None:
    # Builds before 8 requeued a part whose link was lost without a mark: cancelled after the
    # upgrade, it was refunded though the SMSC had it. Parts that surely did not leave (given
    # back at a stop, refused by the SMSC) stay cancellable, and so STOP-cancellable.
    conn = database_at_version(tmp_path / "v8.db", 8)
    conn.executemany(
        "INSERT INTO parts (id, message_id, seq, connector, state, due_at, attempts, "
        "last_error) VALUES (?, ?, 1, 'default', ?, 100.0, ?, ?)",
        [(i, i, state, tries, error) for i, state, tries, error in PARTS_AN_OLDER_BUILD_REQUEUED],
    )
    conn.executemany(
        "INSERT INTO webhooks (id, uuid, account_id, kind, url, body, state, created_at, "
        "due_at, order_key) VALUES (?, ?, 4, ?, 'https://e.com/', x'7b7d', ?, 10.0, 11.0, ?)",
        [(i, f"u{i}", kind, state, key) for i, kind, state, key in OPEN_REPLY_CALLBACKS],
    )

    assert upgrade(conn) == list(range(9, len(MIGRATIONS) + 1))
    marked = conn.execute("SELECT id FROM parts WHERE may_have_left = 1 ORDER BY id").fetchall()
    assert marked == [(1,), (2,), (7,)]
    keys = conn.execute("SELECT id, order_key FROM webhooks ORDER BY id").fetchall()
    assert keys == [(1, "c4:+33612345678>+33757000001"), (2, OPEN_REPLY_CALLBACKS[1][3]), (3, "m7")]
    steps = conn.execute("SELECT name FROM data_steps").fetchall()
    assert ("cancel_waiting_for_stopped",) in steps


def test_a_database_a_newer_build_upgraded_is_refused(tmp_path: Path) -> None:
    conn = database_at_version(tmp_path / "newer.db", len(MIGRATIONS))
    conn.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaTooNew, match="newer than this build knows"):
        upgrade(conn)


def test_only_a_new_database_gets_its_schema_when_only_new_is_asked(tmp_path: Path) -> None:
    # A CLI command (a monitoring check of a newly installed build) migrated the database
    # under the older serve still running it: only `db upgrade` and serve migrate now.
    older = database_at_version(tmp_path / "older.db", len(MIGRATIONS) - 1)
    with pytest.raises(SchemaTooOld, match="run `smsrelay db upgrade`"):
        upgrade(older, only_new=True)
    assert current_version(older) == len(MIGRATIONS) - 1  # untouched
    new = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    assert upgrade(new, only_new=True) == list(range(1, len(MIGRATIONS) + 1))
    assert upgrade(new, only_new=True) == []


def test_postgresql_gives_its_schema_only_to_a_new_database_when_only_new_is_asked(
    postgres: Any,
) -> None:
    url = postgres.new_database("older")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for script in pg_schema.MIGRATIONS[:-1]:
            conn.execute(script)
        conn.execute("INSERT INTO schema_version VALUES (%s)", (len(pg_schema.MIGRATIONS) - 1,))
        with pytest.raises(SchemaTooOld, match="older than this build"):
            pg_schema.upgrade(conn, only_new=True)
        assert pg_schema.upgrade(conn) == [len(pg_schema.MIGRATIONS)]


def _sqlite_shape(path: Path) -> tuple[dict[str, set[str]], set[str]]:
    conn = sqlite3.connect(path, isolation_level=None)
    upgrade(conn)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    columns = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
    indexes = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    }
    conn.close()
    return {t: c for t, c in columns.items() if not t.startswith("sqlite_")}, indexes


def _postgres_shape(url: str) -> tuple[dict[str, set[str]], set[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        pg_schema.upgrade(conn)
        columns: dict[str, set[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        ):
            columns.setdefault(table, set()).add(column)
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint)"  # keys' own indexes
            )
        }
    return columns, indexes


def test_both_engines_have_the_same_tables_columns_and_indexes(
    tmp_path: Path, postgres: Any
) -> None:
    """The operations are shared: a migration added to one engine only fails here."""
    assert _postgres_shape(postgres.new_database("shape")) == _sqlite_shape(tmp_path / "s.db")


def test_postgresql_refuses_a_database_a_newer_build_upgraded(postgres: Any) -> None:
    url = postgres.new_database("newer")
    with psycopg.connect(url, autocommit=True) as conn:
        pg_schema.upgrade(conn)
        conn.execute("INSERT INTO schema_version VALUES (%s)", (len(pg_schema.MIGRATIONS) + 1,))
        with pytest.raises(SchemaTooNew, match="newer than this build knows"):
            pg_schema.upgrade(conn)


def test_postgresql_migration_4_marks_and_rekeys_as_sqlites_9(postgres: Any) -> None:
    url = postgres.new_database("v3")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for script in pg_schema.MIGRATIONS[:3]:
            conn.execute(script)
        conn.execute("INSERT INTO schema_version VALUES (3)")
        for i, state, tries, error in PARTS_AN_OLDER_BUILD_REQUEUED:
            conn.execute(
                "INSERT INTO parts (id, message_id, seq, connector, state, due_at, attempts, "
                "last_error) VALUES (%s, %s, 1, 'default', %s, 100.0, %s, %s)",
                (i, i, state, tries, error),
            )
        for i, kind, state, key in OPEN_REPLY_CALLBACKS:
            conn.execute(
                "INSERT INTO webhooks (id, uuid, account_id, kind, url, body, state, "
                "created_at, due_at, order_key) VALUES (%s, %s, 4, %s, 'https://e.com/', "
                "'{}', %s, 10.0, 11.0, %s)",
                (i, f"u{i}", kind, state, key),
            )

        assert pg_schema.upgrade(conn) == list(range(4, len(pg_schema.MIGRATIONS) + 1))
        marked = conn.execute("SELECT id FROM parts WHERE may_have_left = 1 ORDER BY id")
        assert marked.fetchall() == [(1,), (2,), (7,)]
        keys = conn.execute("SELECT id, order_key FROM webhooks ORDER BY id").fetchall()
        assert keys == [
            (1, "c4:+33612345678>+33757000001"),
            (2, OPEN_REPLY_CALLBACKS[1][3]),
            (3, "m7"),
        ]
