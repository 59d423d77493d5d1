"""One-off steps a migration leaves for serve (both engines): run once, then gone."""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator

import pytest

from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS
from tests.factories import new_message, open_store

PHONE = "+33612345678"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    s = await open_store(store_url, {"+33757000001": "default"})
    yield s
    await s.close()


async def _credit(store: SqlStore) -> int:
    account = await store.find_account("a")
    assert account is not None
    return account.credit_micros


async def test_messages_an_older_build_kept_for_stopped_people_are_cancelled_once(
    store: SqlStore,
) -> None:
    # Builds before the STOP cancel put the person on the list and left their held message
    # to leave at 08:00, charged. The upgrade's step cancels, refunds and reports it.
    held = await store.accept_message(
        new_message(created_at=100.0, due_at=5_000.0, url_dlr="https://example.com/dlr")
    )
    other = await store.accept_message(
        new_message(recipient="+33699999999", created_at=100.0, due_at=5_000.0)
    )
    before = await _credit(store)
    await store.db.write(  # what the older build's STOP did: the entry, nothing else
        lambda c: c.execute(
            "INSERT INTO stop_list (account_id, phone, created_at) VALUES (1, ?, 150.0)",
            (PHONE,),
        )
    )

    done = await store.run_data_steps(200.0, BUILDERS)
    assert done["cancel_waiting_for_stopped"] == 1
    message = await store.get_message(held)
    assert message is not None and message.state == "cancelled"
    assert await _credit(store) == before + message.cost_micros
    [dlr] = await store.list_webhooks(None, 10)
    assert (dlr.kind, dlr.message_id, dlr.url) == ("dlr", held, "https://example.com/dlr")
    still = await store.get_message(other)
    assert still is not None and still.state == "held"

    assert await store.run_data_steps(300.0, BUILDERS) == {}  # once


async def test_account_names_an_older_build_stored_decomposed_get_their_composed_form(
    store: SqlStore,
) -> None:
    # The CLI reads names composed (NFC): an account an older build made from "café" typed
    # with a combining accent could no longer be named at all.
    cafe = unicodedata.normalize("NFD", "café")
    creme = unicodedata.normalize("NFD", "crème")
    for name in (cafe, creme, "crème"):  # "crème" both ways: neither is renamed
        await store.create_account(name, f"hash-{name}", 0, 0.0)

    done = await store.run_data_steps(200.0, BUILDERS)
    assert done["compose_account_names"] == 1
    assert await store.find_account(cafe) is None
    found = await store.find_account("café")
    assert found is not None and found.name == "café"
    assert await store.find_account(creme) is not None
    assert await store.find_account("crème") is not None
    assert await store.run_data_steps(300.0, BUILDERS) == {}  # once
