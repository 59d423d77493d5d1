"""Accounts, virtual numbers and STOP lists: operations run on a SQLite connection."""

from __future__ import annotations

from typing import Any

from smsrelay.domain.ip_access import parse_networks, split_list
from smsrelay.domain.pricing import MAX_MICROS, MICROS_PER_EUR
from smsrelay.errors import DomainError
from smsrelay.store.message_ops import cancel_waiting_for
from smsrelay.store.records import (
    Account,
    CallbackBuilders,
    NumberRecord,
    StopAdded,
    StopEntry,
)
from smsrelay.store.sql import Conn

ACCOUNT_COLUMNS = (
    "id, name, credit_micros, disabled, quiet_hours, region, marketing, reply_url, "
    "webhook_secret, reassemble_replies, created_at, demo_key, allowed_ips"
)
SETTABLE = {
    "disabled",
    "quiet_hours",
    "region",
    "marketing",
    "reply_url",
    "webhook_secret",
    "reassemble_replies",
    "allowed_ips",
}


def account_from_row(row: tuple[Any, ...]) -> Account:
    return Account(
        id=row[0],
        name=row[1],
        credit_micros=row[2],
        disabled=bool(row[3]),
        quiet_hours=bool(row[4]),
        region=row[5],
        marketing=bool(row[6]),
        reply_url=row[7],
        webhook_secret=row[8],
        reassemble_replies=bool(row[9]),
        created_at=row[10],
        demo_key=row[11],
        # parsed here, once per read: the API's key lookup, cached, does no parsing per request
        allowed_ips=parse_networks(split_list(row[12])) if row[12] else (),
    )


def create_account(
    conn: Conn,
    name: str,
    key_hash: str,
    credit_micros: int,
    now: float,
    demo_key: str | None = None,
) -> Account:
    if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
        raise DomainError("account.exists", f"an account named {name!r} already exists", "name")
    conn.execute(
        "INSERT INTO accounts (name, key_hash, credit_micros, created_at, demo_key) "
        "VALUES (?, ?, ?, ?, ?)",
        (name, key_hash, credit_micros, now, demo_key),
    )
    return require_account(conn, name)


def find_account(conn: Conn, name: str) -> Account | None:
    row = conn.execute(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?", (name,)).fetchone()
    return None if row is None else account_from_row(row)


def require_account(conn: Conn, name: str) -> Account:
    account = find_account(conn, name)
    if account is None:
        raise DomainError("account.unknown", f"no account named {name!r}", "name")
    return account


def account_by_key_hash(conn: Conn, key_hash: str) -> Account | None:
    row = conn.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE key_hash = ?", (key_hash,)
    ).fetchone()
    return None if row is None else account_from_row(row)


def account_by_id(conn: Conn, account_id: int) -> Account | None:
    row = conn.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)
    ).fetchone()
    return None if row is None else account_from_row(row)


def list_accounts(conn: Conn) -> list[Account]:
    rows = conn.execute(f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name").fetchall()
    return [account_from_row(r) for r in rows]


def update_account(conn: Conn, name: str, changes: dict[str, Any]) -> Account:
    unknown = set(changes) - SETTABLE
    if unknown:
        raise DomainError("account.setting", f"unknown account setting(s): {sorted(unknown)}")
    account = require_account(conn, name)
    for column, value in changes.items():
        conn.execute(f"UPDATE accounts SET {column} = ? WHERE id = ?", (value, account.id))
    return require_account(conn, name)


def add_credit(conn: Conn, name: str, micros: int) -> Account:
    account = require_account(conn, name)
    if account.credit_micros + micros < 0:
        raise DomainError("credit.negative", "the credit cannot go below zero", "credit")
    if account.credit_micros + micros > MAX_MICROS:
        limit = MAX_MICROS // MICROS_PER_EUR
        raise DomainError("credit.too_large", f"the credit cannot exceed {limit:,} EUR", "credit")
    conn.execute(
        "UPDATE accounts SET credit_micros = credit_micros + ? WHERE id = ?", (micros, account.id)
    )
    return require_account(conn, name)


def set_key_hash(conn: Conn, name: str, key_hash: str) -> Account:
    account = require_account(conn, name)
    # A rotated key is never printed again, so the demo copy is dropped with it.
    conn.execute(
        "UPDATE accounts SET key_hash = ?, demo_key = NULL WHERE id = ?", (key_hash, account.id)
    )
    return require_account(conn, name)


def add_number(
    conn: Conn, account_name: str, msisdn: str, connector: str, now: float
) -> NumberRecord:
    account = require_account(conn, account_name)
    owner = conn.execute(
        "SELECT a.name FROM numbers n JOIN accounts a ON a.id = n.account_id WHERE n.msisdn = ?",
        (msisdn,),
    ).fetchone()
    if owner is not None:
        raise DomainError("number.taken", f"{msisdn} already belongs to account {owner[0]!r}")
    conn.execute(
        "INSERT INTO numbers (msisdn, account_id, connector, created_at) VALUES (?, ?, ?, ?)",
        (msisdn, account.id, connector, now),
    )
    return NumberRecord(msisdn=msisdn, account_name=account.name, connector=connector)


def remove_number(conn: Conn, msisdn: str) -> None:
    if conn.execute("DELETE FROM numbers WHERE msisdn = ?", (msisdn,)).rowcount == 0:
        raise DomainError("number.unknown", f"no virtual number {msisdn}")


def unfinished_from(conn: Conn, msisdn: str) -> int:
    """How many messages sent from ``msisdn`` have not finished: a read (it walks the
    number's history), never inside a write, whose lock serve's batches would wait for."""
    row = conn.execute(
        "SELECT COUNT(*) FROM messages WHERE sender = ? AND final_at IS NULL", (msisdn,)
    ).fetchone()
    return int(row[0])


def list_numbers(conn: Conn, account_name: str | None) -> list[NumberRecord]:
    sql = (
        "SELECT n.msisdn, a.name, n.connector FROM numbers n JOIN accounts a ON a.id = n.account_id"
    )
    params: tuple[Any, ...] = ()
    if account_name is not None:
        require_account(conn, account_name)
        sql += " WHERE a.name = ?"
        params = (account_name,)
    rows = conn.execute(sql + " ORDER BY a.name, n.msisdn", params).fetchall()
    return [NumberRecord(msisdn=r[0], account_name=r[1], connector=r[2]) for r in rows]


def numbers_of(conn: Conn, account_id: int) -> list[NumberRecord]:
    rows = conn.execute(
        "SELECT n.msisdn, a.name, n.connector FROM numbers n "
        "JOIN accounts a ON a.id = n.account_id WHERE a.id = ? ORDER BY n.msisdn",
        (account_id,),
    ).fetchall()
    return [NumberRecord(msisdn=r[0], account_name=r[1], connector=r[2]) for r in rows]


def stop_add(
    conn: Conn, account_id: int, phone: str, now: float, builders: CallbackBuilders
) -> StopAdded:
    existing = conn.execute(
        "SELECT id FROM stop_list WHERE account_id = ? AND phone = ?", (account_id, phone)
    ).fetchone()
    if existing is not None:
        raise DomainError("stop.exists", f"{phone} is already in the STOP list", "phoneNumber")
    row = conn.execute(
        "INSERT INTO stop_list (account_id, phone, created_at) VALUES (?, ?, ?) RETURNING id",
        (account_id, phone, now),
    ).fetchone()
    # a message held for 08:00 must not leave
    cancelled = cancel_waiting_for(conn, account_id, phone, now, builders)
    return StopAdded(int(row[0]), cancelled)


def stop_remove(conn: Conn, account_id: int, stop_id: int) -> None:
    cursor = conn.execute(
        "DELETE FROM stop_list WHERE account_id = ? AND id = ?", (account_id, stop_id)
    )
    if cursor.rowcount == 0:
        raise DomainError("stop.unknown", f"no STOP entry with id {stop_id}", "id")


def stop_remove_phone(conn: Conn, account_id: int, phone: str) -> None:
    cursor = conn.execute(
        "DELETE FROM stop_list WHERE account_id = ? AND phone = ?", (account_id, phone)
    )
    if cursor.rowcount == 0:
        raise DomainError("stop.unknown", f"{phone} is not in the STOP list", "phoneNumber")


def stop_list(conn: Conn, account_id: int) -> list[StopEntry]:
    rows = conn.execute(
        "SELECT id, phone, created_at FROM stop_list WHERE account_id = ? ORDER BY id",
        (account_id,),
    ).fetchall()
    return [StopEntry(id=r[0], phone=r[1], created_at=r[2]) for r in rows]


def stop_page(conn: Conn, account_id: int, after_id: int, limit: int) -> list[StopEntry]:
    """The next ``limit`` entries of the account's STOP list past ``after_id``, in id order."""
    rows = conn.execute(
        "SELECT id, phone, created_at FROM stop_list WHERE account_id = ? AND id > ? "
        "ORDER BY id LIMIT ?",
        (account_id, after_id, limit),
    ).fetchall()
    return [StopEntry(id=r[0], phone=r[1], created_at=r[2]) for r in rows]
