"""Values many tests build the same way."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from smsrelay.store.factory import store_for
from smsrelay.store.records import IncomingReceipt, NewMessage
from smsrelay.store.schema import MIGRATIONS
from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS


async def open_store(where: Path | str, numbers: dict[str, str]) -> SqlStore:
    """A real store with account "a" (id 1, quiet hours off) owning ``numbers`` (msisdn ->
    connector): SQLite in the folder ``where``, or the database at the URL ``where``."""
    store = store_for(where if isinstance(where, str) else f"sqlite:///{where}/s.db")
    await store.open()
    await store.create_account("a", "hash-a", 1_000_000, 0.0)
    # no quiet hours: the dispatcher asks them at each claim, and tests run at any hour
    await store.update_account("a", {"quiet_hours": 0})
    for msisdn, connector in numbers.items():
        await store.add_number("a", msisdn, connector, 0.0)
    return store


def new_message(**changes: Any) -> NewMessage:
    """A one-part GSM message from the test account's first number (account 1)."""
    fields: dict[str, Any] = {
        "account_id": 1,
        "sender": "+33757000001",
        "recipient": "+33612345678",
        "region": "FR",
        "text": "hi",
        "encoding": "gsm7",
        "nb_sms": 1,
        "cost_micros": 45_000,
        "tag": None,
        "url_response": None,
        "url_dlr": None,
        "stop_sms": False,
        "sandbox": False,
        "created_at": 100.0,
        "due_at": 100.0,
    }
    fields.update(changes)
    return NewMessage(**fields)


async def delivered_message(store: SqlStore, at: float, carrier_id: str, **changes: Any) -> int:
    """A one-part message accepted, sent and delivered at ``at`` (its DLR queued if it asks)."""
    message_id = await store.accept_message(new_message(created_at=at, due_at=at, **changes))
    [part] = await store.claim_due_parts("default", at, 10, at + 60)
    await store.mark_submitted(part.part_id, carrier_id, carrier_id, at, BUILDERS, 1)
    receipt = IncomingReceipt("default", carrier_id, (carrier_id,), "DELIVRD", None, at)
    assert await store.record_receipt(receipt, BUILDERS)
    return message_id


def database_at_version(path: Path, version: int) -> sqlite3.Connection:
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
