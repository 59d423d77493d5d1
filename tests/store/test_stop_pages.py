"""The STOP list read a page at a time (``GET /v1/stop-sms/list`` of 100,000s of entries), on
both engines: the whole list, in id order, each entry once, and only the account's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from smsrelay.service import account_queries
from smsrelay.service.account_queries import stop_pages
from smsrelay.store.factory import store_for
from smsrelay.store.records import Account, StopEntry
from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS

pytestmark = pytest.mark.asyncio

PAGE = 3


@pytest.fixture
async def store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SqlStore]:
    monkeypatch.setattr(account_queries, "STOP_PAGE_SIZE", PAGE)
    s = store_for(store_url)
    await s.open()
    yield s
    await s.close()


async def _account(store: SqlStore, name: str) -> Account:
    return await store.create_account(name, f"hash-{name}", 0, 0.0)


async def _pages(store: SqlStore, account: Account) -> list[list[StopEntry]]:
    return [page async for page in stop_pages(store, account)]


async def test_a_list_of_several_pages_comes_back_whole_in_order_and_each_entry_once(
    store: SqlStore,
) -> None:
    a, b = await _account(store, "a"), await _account(store, "b")
    for n in range(7):  # the two lists' ids interleave
        await store.stop_add(a.id, f"+3361000000{n}", 100.0 + n, BUILDERS)
        if n < 2 * PAGE:
            await store.stop_add(b.id, f"+3362000000{n}", 200.0 + n, BUILDERS)
    a_pages, b_pages = await _pages(store, a), await _pages(store, b)
    assert [len(page) for page in a_pages] == [3, 3, 1]
    assert [len(page) for page in b_pages] == [3, 3]  # a last full page: no empty one after
    a_listed = [entry for page in a_pages for entry in page]
    assert a_listed == await store.stop_list(a.id)  # what the list read whole gives
    assert [entry.phone for entry in a_listed] == [f"+3361000000{n}" for n in range(7)]
    ids = [entry.id for entry in a_listed]
    assert ids == sorted(set(ids))
    b_listed = [entry for page in b_pages for entry in page]
    assert b_listed == await store.stop_list(b.id)
    assert {entry.phone[:6] for entry in b_listed} == {"+33620"}  # none of a's


async def test_an_empty_list_is_no_page_even_beside_another_accounts(store: SqlStore) -> None:
    a, b = await _account(store, "a"), await _account(store, "b")
    for n in range(PAGE + 1):
        await store.stop_add(b.id, f"+3362000000{n}", 0.0, BUILDERS)
    assert await _pages(store, a) == []
    assert await store.stop_page(a.id, 0, PAGE) == []


async def test_an_entry_added_or_removed_during_the_walk_is_listed_at_most_once(
    store: SqlStore,
) -> None:
    a = await _account(store, "a")
    added = [await _stop(store, a, f"+3361000000{n}") for n in range(7)]
    walk = stop_pages(store, a)
    first = await anext(walk)
    await store.stop_remove(a.id, added[0])  # listed already: stays in the answer
    await store.stop_remove(a.id, added[4])  # not read yet: gone
    late = [await _stop(store, a, "+33619999999"), await _stop(store, a, "+33610000000")]
    rest = [entry async for page in walk for entry in page]
    listed = [entry.id for entry in first + rest]
    assert listed == [*added[:4], *added[5:], *late]  # the number removed is back, once
    assert len(listed) == len(set(listed))


async def _stop(store: SqlStore, account: Account, phone: str) -> int:
    return (await store.stop_add(account.id, phone, 0.0, BUILDERS)).id
