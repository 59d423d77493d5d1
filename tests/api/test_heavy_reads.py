"""One account's heavy reads (multi-status, status by tag, the STOP list) over real HTTP: at
most two of them at a time, the others waiting their turn, and never another account's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from smsrelay.service.account_queries import STATUS_READ_CHUNK
from smsrelay.service.accounts import create_account
from smsrelay.service.heavy_reads import HEAVY_READS_PER_ACCOUNT, HeavyReadTurns

if TYPE_CHECKING:
    from tests.api.conftest import Api

from tests.support import eventually

RECIPIENT = "33612345678"
CONCURRENT = 16
DEADLINE_S = 10.0  # a deadline for an answer, not a timing threshold


@dataclass
class HeldReads:
    """The store's reads of one account, held until ``release`` (others pass at once)."""

    account_id: int
    released: asyncio.Event
    in_store: int = 0
    peak: int = 0

    def wrap(self, read: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def held(account_id: int, *args: Any, **kwargs: Any) -> Any:
            if account_id != self.account_id:
                return await read(account_id, *args, **kwargs)
            self.in_store += 1
            self.peak = max(self.peak, self.in_store)
            try:
                await self.released.wait()
                return await read(account_id, *args, **kwargs)
            finally:
                self.in_store -= 1

        return held


@dataclass(frozen=True)
class Endpoint:
    store_read: str  # the store method its cost is in
    method: str
    path: str

    def request(self, api_key: str, message_id: int) -> dict[str, Any]:
        if self.path == "/v1/multi-status":
            item = {"phoneNumber": RECIPIENT, "messageId": str(message_id)}
            return {"body": {"apiKey": api_key, "SMSStatut_List": [item]}}
        if self.path == "/v1/bulk-status-by-tag":
            return {"params": {"apiKey": api_key, "tag": "promo"}}
        return {"params": {"apiKey": api_key}}


HEAVY_ENDPOINTS = [
    Endpoint("messages_and_stops", "POST", "/v1/multi-status"),
    Endpoint("messages_by_tag", "GET", "/v1/bulk-status-by-tag"),
    Endpoint("stop_page", "GET", "/v1/stop-sms/list"),
]


@pytest.mark.parametrize("endpoint", HEAVY_ENDPOINTS, ids=lambda e: e.path)
async def test_an_accounts_heavy_reads_wait_their_turn_and_never_hold_another_account(
    api: Api, monkeypatch: pytest.MonkeyPatch, endpoint: Endpoint
) -> None:
    message_id = await api.send(tag="promo")
    demo = await api.gateway.accounts.authenticate(api.key, None)
    reads = HeldReads(demo.id, asyncio.Event())
    monkeypatch.setattr(
        api.store, endpoint.store_read, reads.wrap(getattr(api.store, endpoint.store_read))
    )
    # A request past its key check goes on, without yielding, to its turn or to the store: once
    # all of them are past it, each waits at one of the two.
    past_key = 0
    authenticate = api.gateway.accounts.authenticate

    async def counted(api_key: str | None, origin: Any) -> Any:
        nonlocal past_key
        account = await authenticate(api_key, origin)
        past_key += api_key == api.key
        return account

    monkeypatch.setattr(api.gateway.accounts, "authenticate", counted)
    request = endpoint.request(api.key, message_id)
    calls = [
        asyncio.ensure_future(api.call(endpoint.method, endpoint.path, **request))
        for _ in range(CONCURRENT)
    ]
    try:
        await eventually(lambda: past_key == CONCURRENT)
        assert reads.in_store == HEAVY_READS_PER_ACCOUNT
        assert api.gateway.heavy_reads.figures() == (
            HEAVY_READS_PER_ACCOUNT,
            CONCURRENT - HEAVY_READS_PER_ACCOUNT,
        )
        # another account's heavy read is served meanwhile, and a send (which never waits here)
        other = await create_account(api.store, "other", "10", api.gateway.clock)
        other_request = endpoint.request(other.api_key, message_id)
        status, _ = await asyncio.wait_for(
            api.call(endpoint.method, endpoint.path, **other_request), DEADLINE_S
        )
        assert status == 200
        assert await asyncio.wait_for(api.send(), DEADLINE_S)
    finally:
        reads.released.set()
        answers = await asyncio.wait_for(asyncio.gather(*calls), DEADLINE_S)
    assert [status for status, _ in answers] == [200] * CONCURRENT
    assert all(answer == answers[0][1] for _, answer in answers)
    assert reads.peak == HEAVY_READS_PER_ACCOUNT
    assert api.gateway.heavy_reads.accounts() == 0  # nothing kept for idle accounts


async def test_a_500_item_multi_status_reads_its_ids_a_chunk_at_a_time(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another request's read waits behind one chunk at most, not the whole list; the answer
    is the one a single read gave: each item in the order asked, stops included."""
    sent = [await api.send(to=f"+3361234567{i}") for i in range(3)]
    await api.call(
        "POST", "/v1/stop-sms/add", body={"apiKey": api.key, "phoneNumber": "+33612345671"}
    )
    unknown = [{"phoneNumber": RECIPIENT, "messageId": str(10_000 + i)} for i in range(497)]
    found = [{"phoneNumber": f"+3361234567{i}", "messageId": str(m)} for i, m in enumerate(sent)]
    listing = [*unknown[:200], found[0], *unknown[200:], found[1], found[2]]
    read_sizes: list[int] = []
    read = api.store.messages_and_stops

    async def measured(account_id: int, message_ids: list[int]) -> Any:
        read_sizes.append(len(message_ids))
        return await read(account_id, message_ids)

    monkeypatch.setattr(api.store, "messages_and_stops", measured)
    status, answer = await api.call(
        "POST", "/v1/multi-status", body={"apiKey": api.key, "SMSStatut_List": listing}
    )
    assert status == 200
    assert sum(read_sizes) == 500
    assert max(read_sizes) <= 100  # ids per read (STATUS_READ_CHUNK): never all 500 at once
    items = answer["StatutResponse_List"]
    assert [item["messageId"] for item in items] == [item["messageId"] for item in listing]
    assert [i for i, item in enumerate(items) if item["success"]] == [200, 498, 499]
    assert [item["stopSms"] for item in items if item["success"]] == [False, True, False]
    assert {item["code"] for item in items if not item["success"]} == {4}


async def test_each_item_of_a_chunked_multi_status_has_the_stop_flag_of_its_own_read(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A STOP between two chunks' reads: the item read before it is waiting and not stopped,
    the one read after is cancelled and stopped; never waiting and stopped at once, which
    every chunk's STOP set merged into one answered (the fairness review)."""
    before = await api.send(to=RECIPIENT)  # held (quiet hours): waiting
    fillers = [await api.send(to=f"+3361100{i:04d}") for i in range(STATUS_READ_CHUNK)]
    after = await api.send(to=RECIPIENT)  # its id in the next chunk
    listing = [{"phoneNumber": RECIPIENT, "messageId": str(m)} for m in (before, after)]
    listing += [
        {"phoneNumber": f"+3361100{i:04d}", "messageId": str(m)} for i, m in enumerate(fillers)
    ]
    read = api.store.messages_and_stops
    reads = 0

    async def stop_between_chunks(account_id: int, message_ids: list[int]) -> Any:
        nonlocal reads
        reads += 1
        if reads == 2:
            stop = {"apiKey": api.key, "phoneNumber": RECIPIENT}
            assert (await api.call("POST", "/v1/stop-sms/add", body=stop))[0] == 200
        return await read(account_id, message_ids)

    monkeypatch.setattr(api.store, "messages_and_stops", stop_between_chunks)
    status, answer = await api.call(
        "POST", "/v1/multi-status", body={"apiKey": api.key, "SMSStatut_List": listing}
    )
    assert status == 200 and reads == 2
    first, second = (
        (item["status"], item["stopSms"]) for item in answer["StatutResponse_List"][:2]
    )
    assert first == ("Waiting", False)
    assert second[1] is True and second[0] != "Waiting"


async def test_past_its_waiting_line_an_accounts_heavy_read_is_a_503_in_the_apis_format(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        api.gateway, "heavy_reads", HeavyReadTurns(per_account=1, waiting_at_most=1)
    )
    demo = await api.gateway.accounts.authenticate(api.key, None)
    reads = HeldReads(demo.id, asyncio.Event())
    monkeypatch.setattr(api.store, "stop_page", reads.wrap(api.store.stop_page))
    params = {"params": {"apiKey": api.key}}
    calls = [
        asyncio.ensure_future(api.call("GET", "/v1/stop-sms/list", **params)) for _ in range(2)
    ]
    try:
        await eventually(lambda: api.gateway.heavy_reads.figures() == (1, 1))
        status, answer = await asyncio.wait_for(
            api.call("GET", "/v1/stop-sms/list", **params), DEADLINE_S
        )
        assert (status, answer["success"], answer["code"]) == (503, False, 500)
        assert (
            "too many of this account's" in answer["message"] and "retry later" in answer["message"]
        )
    finally:
        reads.released.set()
        answers = await asyncio.wait_for(asyncio.gather(*calls), DEADLINE_S)
    assert [status for status, _ in answers] == [200, 200]
