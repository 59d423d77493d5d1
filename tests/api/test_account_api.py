"""The account's other endpoints over real HTTP: /v1/me, multi-status, status by tag,
message-cancel, the STOP list and the test clock, in JSON and XML."""

from __future__ import annotations

import weakref
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from smsrelay.api import account_api
from smsrelay.api.render import respond
from smsrelay.service import account_queries
from smsrelay.service.accounts import create_account
from smsrelay.store.records import StopEntry

if TYPE_CHECKING:
    from tests.api.conftest import Api

RECIPIENT = "33612345678"  # 0612345678 in international digits
MONDAY_8AM = "2026-03-02T08:00:00+01:00"
_TUESDAY_10AM_EPOCH = str(
    int(datetime(2026, 3, 3, 10, tzinfo=ZoneInfo("Europe/Paris")).timestamp())
)


def tree(element: ET.Element) -> Any:
    """An XML answer as nested lists of texts (``entry`` order is the JSON key order)."""
    children = list(element)
    return [tree(child) for child in children] if children else (element.text or "")


def lookup(api: Api, message_id: int, phone: str = "0612345678") -> dict[str, str]:
    """A status lookup's parameters: SMS Partner's names the message and its recipient."""
    return {**key(api), "messageId": str(message_id), "phoneNumber": phone}


def key(api: Api) -> dict[str, str]:
    return {"apiKey": api.key}


# -- GET /v1/me -------------------------------------------------------------------------------


async def test_me_answers_the_account_and_its_credit(api: Api) -> None:
    status, answer = await api.call("GET", "/v1/me", params=key(api))
    assert status == 200
    assert answer == {
        "success": True,
        "code": 200,
        "user": {"username": "demo", "firstname": "", "lastname": ""},
        "credits": {"creditSms": 2222, "toSend": 0, "balance": "100.000", "currency": "EUR"},
    }


async def test_me_counts_waiting_messages_and_shows_the_debit(api: Api) -> None:
    await api.send()
    await api.send(text="Again")
    credits = (await api.me())["credits"]
    assert credits["toSend"] == 2
    assert credits["balance"] == "99.910"
    assert credits["creditSms"] == 2220


async def test_me_in_xml(api: Api) -> None:
    status, root = await api.call_xml("GET", "/v1/me", params=key(api))
    assert status == 200
    assert tree(root) == ["true", "200", ["demo", "", ""], ["2222", "0", "100.000", "EUR"]]


@pytest.mark.parametrize(
    ("params", "http", "code"),
    [({}, 400, 1), ({"apiKey": ""}, 400, 1), ({"apiKey": "not-a-key"}, 401, 10)],
)
async def test_me_refuses_a_missing_or_wrong_key(
    api: Api, params: dict[str, str], http: int, code: int
) -> None:
    status, answer = await api.call("GET", "/v1/me", params=params)
    assert (status, answer["success"], answer["code"]) == (http, False, code)


async def test_a_wrong_key_in_xml_is_an_xml_error(api: Api) -> None:
    status, root = await api.call_xml("GET", "/v1/stop-sms/list", params={"apiKey": "nope"})
    assert status == 401
    assert tree(root)[:2] == ["false", "10"]


# -- POST /v1/multi-status --------------------------------------------------------------------


async def test_multi_status_answers_each_item(api: Api) -> None:
    first = await api.send()
    second = await api.send(to="+33698765432")
    body = {
        "apiKey": api.key,
        "SMSStatut_List": [
            {"phoneNumber": "0612345678", "messageId": first},
            {"phoneNumber": "+33698765432", "messageId": str(second)},
            {"phoneNumber": "0612345678", "messageId": 999999},
            {"phoneNumber": "0611111111", "messageId": first},  # not this message's number
        ],
    }
    status, answer = await api.call("POST", "/v1/multi-status", body=body)
    assert status == 200
    assert (answer["success"], answer["code"]) == (True, 200)
    items = answer["StatutResponse_List"]
    assert items[0] == {
        "success": True,
        "code": 200,
        "phoneNumber": "+" + RECIPIENT,  # as SMS Partner writes it, so clients match it
        "messageId": str(first),
        "status": "Waiting",
        "date": _TUESDAY_10AM_EPOCH,  # Unix seconds as text, as SMS Partner writes it
        "stopSms": False,
        "statut": "Waiting",
    }
    assert (items[1]["success"], items[1]["messageId"], items[1]["phoneNumber"]) == (
        True,
        str(second),
        "+33698765432",
    )
    for missing in items[2:]:
        assert (missing["success"], missing["code"]) == (False, 4)
        assert missing["status"] == missing["statut"] == "message not found"
        assert list(missing) == list(items[0])  # the same keys in the same places (XML)
        assert (missing["date"], missing["stopSms"]) == (None, False)
    assert (items[2]["messageId"], items[2]["phoneNumber"]) == ("999999", "+" + RECIPIENT)


async def test_an_id_sent_as_a_json_float_is_that_id(api: Api) -> None:
    message_id = await api.send()
    item = {"phoneNumber": RECIPIENT, "messageId": float(message_id)}  # 1.0
    body = {**key(api), "SMSStatut_List": [item]}
    _, answer = await api.call("POST", "/v1/multi-status", body=body)
    assert answer["StatutResponse_List"][0]["messageId"] == str(message_id)
    assert answer["StatutResponse_List"][0]["success"] is True  # was "message not found"


async def test_multi_status_via_get_and_an_item_without_its_phone_number(api: Api) -> None:
    # An item without phoneNumber was answered (any message matched): a client that forgot
    # it passed here and failed at SMS Partner, where the contract's items carry both.
    message_id = await api.send()
    with_phone = f'{{"phoneNumber": "{RECIPIENT}", "messageId": {message_id}}}'
    listing = f'[{with_phone}, {{"messageId": {message_id}}}]'
    status, answer = await api.call(
        "GET", "/v1/multi-status", params={**key(api), "SMSStatut_List": listing}
    )
    assert status == 200
    found, forgot = answer["StatutResponse_List"]
    assert found["status"] == "Waiting"
    assert (forgot["success"], forgot["code"], forgot["status"]) == (
        False,
        2,
        "phoneNumber is required",
    )


async def test_multi_status_shows_a_stopped_recipient(api: Api) -> None:
    message_id = await api.send()
    await api.call("POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": RECIPIENT})
    body = {**key(api), "SMSStatut_List": [{"phoneNumber": RECIPIENT, "messageId": message_id}]}
    _, answer = await api.call("POST", "/v1/multi-status", body=body)
    assert answer["StatutResponse_List"][0]["stopSms"] is True


async def test_multi_status_hides_other_accounts_messages(api: Api) -> None:
    message_id = await api.send()
    other = await create_account(api.store, "other", "10", api.gateway.clock)
    item = {"phoneNumber": RECIPIENT, "messageId": message_id}
    body = {"apiKey": other.api_key, "SMSStatut_List": [item]}
    _, answer = await api.call("POST", "/v1/multi-status", body=body)
    assert answer["StatutResponse_List"][0]["code"] == 4


async def test_multi_status_in_xml(api: Api) -> None:
    message_id = await api.send()
    items = [
        {"phoneNumber": RECIPIENT, "messageId": message_id},
        {"phoneNumber": RECIPIENT, "messageId": "x"},
    ]
    body = {**key(api), "SMSStatut_List": items}
    status, root = await api.call_xml("POST", "/v1/multi-status", body=body)
    assert status == 200
    success, code, items = tree(root)
    assert (success, code) == ("true", "200")
    assert items[0] == [
        "true",
        "200",
        "+" + RECIPIENT,
        str(message_id),
        "Waiting",
        _TUESDAY_10AM_EPOCH,
        "false",
        "Waiting",
    ]
    # the same eight places as a found item's (the date and stopSms were missing)
    assert items[1] == [
        "false",
        "4",
        "+" + RECIPIENT,
        "x",
        "message not found",
        "",
        "false",
        "message not found",
    ]


async def test_control_characters_never_break_an_xml_answer(api: Api) -> None:
    # XML 1.0 cannot carry them, not even in CDATA: the answer must still parse.
    body = {
        **key(api),
        "SMSStatut_List": [{"phoneNumber": "0612\u0001", "messageId": "x\u0002\u001f"}],
    }
    status, root = await api.call_xml("POST", "/v1/multi-status", body=body)
    assert status == 200
    _, _, items = tree(root)
    assert items[0][3] == "x\ufffd\ufffd"


async def test_multi_status_refuses_more_than_500_items(api: Api) -> None:
    body = {**key(api), "SMSStatut_List": [{"messageId": i} for i in range(1, 502)]}
    status, answer = await api.call("POST", "/v1/multi-status", body=body)
    assert (status, answer["success"], answer["code"]) == (400, False, 9)
    assert answer["error"][0]["elementId"] == "children[SMSStatut_List].data"


async def test_multi_status_accepts_exactly_500_items(api: Api) -> None:
    body = {**key(api), "SMSStatut_List": [{"messageId": i} for i in range(1, 501)]}
    status, answer = await api.call("POST", "/v1/multi-status", body=body)
    assert status == 200
    assert len(answer["StatutResponse_List"]) == 500


@pytest.mark.parametrize("listing", [None, "", [], "not json", [1, 2], {"messageId": 1}])
async def test_multi_status_needs_a_list_of_objects(api: Api, listing: Any) -> None:
    body: dict[str, Any] = dict(key(api))
    if listing is not None:
        body["SMSStatut_List"] = listing
    status, answer = await api.call("POST", "/v1/multi-status", body=body)
    assert (status, answer["code"]) == (400, 9)


async def test_multi_status_checks_the_key_first(api: Api) -> None:
    status, answer = await api.call("POST", "/v1/multi-status", body={"apiKey": "nope"})
    assert (status, answer["code"]) == (401, 10)


# -- GET /v1/bulk-status-by-tag ---------------------------------------------------------------


async def test_status_by_tag_lists_the_tagged_messages(api: Api) -> None:
    tagged = [await api.send(tag="promo") for _ in range(3)]
    await api.send(tag="other")
    await api.send()
    status, answer = await api.call(
        "GET", "/v1/bulk-status-by-tag", params={**key(api), "tag": "promo"}
    )
    assert status == 200
    assert (answer["success"], answer["code"]) == (True, 200)
    assert (answer["currentPage"], answer["total"]) == (1, 3)
    items = answer["StatutResponse_List"]
    assert [item["messageId"] for item in items] == [str(i) for i in tagged]
    assert items[0]["status"] == "Waiting"
    assert items[0]["phoneNumber"] == "+" + RECIPIENT
    assert list(answer) == ["success", "code", "StatutResponse_List", "currentPage", "total"]


async def test_status_by_tag_pages(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(account_queries, "TAG_PAGE_SIZE", 2)
    tagged = [await api.send(tag="promo") for _ in range(3)]
    pages = []
    for page in ("1", "2", "3"):
        _, answer = await api.call(
            "GET", "/v1/bulk-status-by-tag", params={**key(api), "tag": "promo", "page": page}
        )
        assert answer["total"] == 3
        assert answer["currentPage"] == int(page)
        pages.append([int(item["messageId"]) for item in answer["StatutResponse_List"]])
    assert pages == [tagged[:2], tagged[2:], []]


async def test_status_by_tag_in_xml(api: Api) -> None:
    message_id = await api.send(tag="promo")
    status, root = await api.call_xml(
        "GET", "/v1/bulk-status-by-tag", params={**key(api), "tag": "promo"}
    )
    assert status == 200
    success, code, items, page, total = tree(root)
    assert (success, code, page, total) == ("true", "200", "1", "1")
    assert items[0][3] == str(message_id)


async def test_status_by_tag_with_an_unknown_tag_is_empty(api: Api) -> None:
    _, answer = await api.call(
        "GET", "/v1/bulk-status-by-tag", params={**key(api), "tag": "nothing"}
    )
    assert (answer["success"], answer["StatutResponse_List"], answer["total"]) == (True, [], 0)


@pytest.mark.parametrize(
    ("params", "field"),
    [({}, "tag"), ({"tag": "promo", "page": "0"}, "page"), ({"tag": "promo", "page": "x"}, "page")],
)
async def test_status_by_tag_refuses_bad_parameters(
    api: Api, params: dict[str, str], field: str
) -> None:
    status, answer = await api.call("GET", "/v1/bulk-status-by-tag", params={**key(api), **params})
    assert (status, answer["code"]) == (400, 9)
    assert answer["error"][0]["elementId"] == f"children[{field}].data"


# -- GET /v1/message-cancel -------------------------------------------------------------------


@pytest.mark.parametrize("phone", [None, "", "  "])
async def test_a_status_lookup_without_the_recipient_is_code_2(api: Api, phone: str | None) -> None:
    # SMS Partner's lookup takes messageId and phoneNumber (codes 1, 2, 4, 10): a client that
    # forgot the number must learn it here, not in production
    message_id = await api.send()
    params = {**key(api), "messageId": str(message_id)}
    if phone is not None:
        params["phoneNumber"] = phone
    status, answer = await api.call("GET", "/v1/message-status", params=params)
    assert (status, answer["success"], answer["code"]) == (400, False, 2)
    assert "phoneNumber" in answer["message"]


async def test_a_status_lookup_finds_the_message_by_any_form_of_its_recipient(api: Api) -> None:
    message_id = await api.send()
    for phone in ("0612345678", "+33612345678", RECIPIENT, "06 12 34 56 78"):
        status, answer = await api.call(
            "GET", "/v1/message-status", params=lookup(api, message_id, phone)
        )
        assert (status, answer["messageId"]) == (200, str(message_id)), phone
    status, answer = await api.call(
        "GET", "/v1/message-status", params=lookup(api, message_id, "0611111111")
    )
    assert (status, answer["code"]) == (404, 4)


async def test_a_held_message_shows_when_it_will_leave(sunday_api: Api) -> None:
    api = sunday_api
    message_id = await api.send()
    status, answer = await api.call("GET", "/v1/message-status", params=lookup(api, message_id))
    assert status == 200
    assert answer["statut"] == "Waiting"
    assert datetime.fromisoformat(answer["dueAt"]) == datetime.fromisoformat(MONDAY_8AM)
    assert answer["dueAt"] == MONDAY_8AM


async def test_a_held_message_whose_time_has_come_shows_no_due_time(sunday_api: Api) -> None:
    # No dispatcher here: at 08:00 it is still held (as when its connector is down), but it
    # leaves as soon as it can, not at a time in the past.
    api = sunday_api
    message_id = await api.send()
    await api.call("POST", "/_test/clock", body={"now": MONDAY_8AM})
    _, state = await api.call("GET", "/v1/message-status", params=lookup(api, message_id))
    assert (state["statut"], state["dueAt"]) == ("Waiting", None)


async def test_cancelling_a_held_message_refunds_it(sunday_api: Api) -> None:
    api = sunday_api
    message_id = await api.send()
    before = (await api.me())["credits"]
    assert (before["balance"], before["toSend"]) == ("99.955", 1)

    status, answer = await api.call(
        "GET", "/v1/message-cancel", params={**key(api), "messageId": str(message_id)}
    )
    assert status == 200
    assert (answer["success"], answer["code"]) == (True, 200)
    assert "cancelled" in answer["message"]
    assert list(answer) == ["success", "code", "message"]

    after = (await api.me())["credits"]
    assert (after["balance"], after["toSend"]) == ("100.000", 0)
    _, state = await api.call("GET", "/v1/message-status", params=lookup(api, message_id))
    # SMS Partner's vocabulary has no "Cancelled": a final "ko", and nothing it cost is left
    assert (state["statut"], state["cost"], state["dueAt"]) == ("ko", 0, None)
    assert state["parts"][0]["state"] == "cancelled"  # our own detail still tells it apart


async def test_a_cancelled_message_is_never_claimed(sunday_api: Api) -> None:
    api = sunday_api
    message_id = await api.send()
    await api.call("POST", "/v1/message-cancel", body={**key(api), "messageId": message_id})
    await api.call("POST", "/_test/clock", body={"now": MONDAY_8AM})
    now = api.gateway.clock.now()
    assert await api.store.claim_due_parts("default", now, 10, now + 60) == []


async def test_cancel_in_xml(sunday_api: Api) -> None:
    api = sunday_api
    message_id = await api.send()
    status, root = await api.call_xml(
        "GET", "/v1/message-cancel", params={**key(api), "messageId": str(message_id)}
    )
    assert status == 200
    success, code, message = tree(root)
    assert (success, code) == ("true", "200")
    assert "0.045 EUR refunded" in message


async def test_a_message_that_has_left_cannot_be_cancelled(sunday_api: Api) -> None:
    api = sunday_api
    message_id = await api.send()
    status, moved = await api.call("POST", "/_test/clock", body={"now": MONDAY_8AM})
    assert (status, moved) == (200, {"now": MONDAY_8AM})
    now = api.gateway.clock.now()
    claimed = await api.store.claim_due_parts("default", now, 10, now + 60)
    assert [part.message_id for part in claimed] == [message_id]

    status, answer = await api.call(
        "GET", "/v1/message-cancel", params={**key(api), "messageId": str(message_id)}
    )
    assert (status, answer["success"], answer["code"]) == (409, False, 4)
    assert "already left" in answer["message"]
    assert (await api.me())["credits"]["balance"] == "99.955"


async def test_a_queued_message_not_yet_claimed_can_be_cancelled(api: Api) -> None:
    message_id = await api.send()
    status, answer = await api.call(
        "GET", "/v1/message-cancel", params={**key(api), "messageId": str(message_id)}
    )
    assert (status, answer["code"]) == (200, 200)


async def test_cancelling_twice_says_so(sunday_api: Api) -> None:
    api = sunday_api
    params = {**key(api), "messageId": str(await api.send())}
    await api.call("GET", "/v1/message-cancel", params=params)
    status, answer = await api.call("GET", "/v1/message-cancel", params=params)
    assert (status, answer["code"]) == (409, 4)
    assert answer["message"] == "the message was already cancelled"
    assert (await api.me())["credits"]["balance"] == "100.000"


@pytest.mark.parametrize(
    ("message_id", "http"), [(None, 400), ("", 400), ("999999", 404), ("abc", 404)]
)
async def test_cancel_refuses_an_unknown_or_missing_id(
    api: Api, message_id: str | None, http: int
) -> None:
    params = key(api) if message_id is None else {**key(api), "messageId": message_id}
    status, answer = await api.call("GET", "/v1/message-cancel", params=params)
    assert (status, answer["success"], answer["code"]) == (http, False, 4)


@pytest.mark.parametrize("written", ["{id}_0", "\u0661", "+{id}", "{id}.0", "0x{id}"])
async def test_an_id_is_read_in_plain_digits_only(api: Api, written: str) -> None:
    # int() alone reads "1_0" as 10 and "١" (Arabic-Indic one) as 1: a client's typo would
    # then read or cancel another of its messages.
    first = await api.send()
    for _ in range(10):
        await api.send()
    params = {**key(api), "messageId": written.format(id=first), "phoneNumber": "0612345678"}
    for path in ("/v1/message-status", "/v1/message-cancel"):
        status, answer = await api.call("GET", path, params=params)
        assert (status, answer["code"]) == (404, 4), path
    assert (await api.store.get_message(first * 10, None)).state != "cancelled"


async def test_cancel_refuses_another_accounts_message(api: Api) -> None:
    message_id = await api.send()
    other = await create_account(api.store, "other", "10", api.gateway.clock)
    params = {"apiKey": other.api_key, "messageId": str(message_id)}
    status, answer = await api.call("GET", "/v1/message-cancel", params=params)
    assert (status, answer["code"]) == (404, 4)


# -- the STOP list ----------------------------------------------------------------------------


async def test_stop_list_add_list_delete(api: Api) -> None:
    status, added = await api.call(
        "POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": "06 12 34 56 78"}
    )
    assert status == 200
    assert list(added) == ["success", "code", "stopId"]
    assert (added["success"], added["code"]) == (True, 200)
    stop_id = added["stopId"]
    assert isinstance(stop_id, int)

    status, listed = await api.call("GET", "/v1/stop-sms/list", params=key(api))
    assert status == 200
    assert listed == {
        "success": True,
        "code": 200,
        "nbData": 1,
        "data": [{"id": stop_id, "phoneNumber": RECIPIENT, "createdAt": "2026-03-03 10:00:00"}],
    }

    status, deleted = await api.call(
        "GET", "/v1/stop-sms/delete", params={**key(api), "id": str(stop_id)}
    )
    assert (status, deleted) == (200, {"success": True, "code": 200})
    _, listed = await api.call("GET", "/v1/stop-sms/list", params=key(api))
    assert (listed["nbData"], listed["data"]) == (0, [])
    _, again = await api.call(
        "POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": "06 99 99 99 99"}
    )
    assert again["stopId"] > stop_id  # an old id never names somebody else's entry


async def test_a_stop_list_of_several_pages_is_answered_whole_and_as_read_at_once(
    api_on_each_engine: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = api_on_each_engine
    monkeypatch.setattr(account_queries, "STOP_PAGE_SIZE", 2)
    other = await create_account(api.store, "other", "10", api.gateway.clock)
    for n in range(5):  # the two lists' ids interleave
        await api.call(
            "POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": f"061234567{n}"}
        )
        other_stop = {"apiKey": other.api_key, "phoneNumber": f"069876543{n}"}
        await api.call("POST", "/v1/stop-sms/add", body=other_stop)
    pages_after = _pages_read(api, monkeypatch)
    demo = await api.gateway.accounts.authenticate(api.key, None)
    whole = await api.store.stop_list(demo.id)  # the list read at once
    assert [entry.phone for entry in whole] == [f"+3361234567{n}" for n in range(5)]
    items = [
        {"id": entry.id, "phoneNumber": entry.phone[1:], "createdAt": "2026-03-03 10:00:00"}
        for entry in whole
    ]
    expected = {"success": True, "code": 200, "nbData": 5, "data": items}
    for xml in (False, True):  # byte for byte what the renderer makes of the whole list
        assert await _stop_list_bytes(api, api.key, xml) == respond(expected, 200, xml).body
    assert pages_after == [0, whole[1].id, whole[3].id] * 2  # a read per page of 2


async def test_an_empty_stop_list_is_answered_as_before_beside_another_accounts(
    api_on_each_engine: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = api_on_each_engine
    await api.call("POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": RECIPIENT})
    empty = await create_account(api.store, "empty", "10", api.gateway.clock)
    pages_after = _pages_read(api, monkeypatch)
    expected = {"success": True, "code": 200, "nbData": 0, "data": []}
    for xml in (False, True):
        assert await _stop_list_bytes(api, empty.api_key, xml) == respond(expected, 200, xml).body
    assert pages_after == [0, 0]  # one read each, that found no page


async def test_an_xml_stop_list_holds_a_pages_items_at_most_beside_its_rendered_text(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each page's items are rendered before the next read: kept too, a 100,000-entry list's
    # dicts were 3 times the size of the answer (77 MB at the peak, not 50), for its count.
    monkeypatch.setattr(account_queries, "STOP_PAGE_SIZE", 2)
    for n in range(6):
        await api.call(
            "POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": f"061234567{n}"}
        )
    made: list[weakref.ref[_Item]] = []
    stop_item = account_api._stop_item

    def tracked(entry: StopEntry) -> dict[str, Any]:
        item = _Item(stop_item(entry))
        made.append(weakref.ref(item))
        return item

    monkeypatch.setattr(account_api, "_stop_item", tracked)
    alive_at_reads: list[int] = []
    stop_page = api.store.stop_page

    async def counted(account_id: int, after_id: int, limit: int) -> list[StopEntry]:
        alive_at_reads.append(sum(item() is not None for item in made))
        return await stop_page(account_id, after_id, limit)

    monkeypatch.setattr(api.store, "stop_page", counted)
    answer = ET.fromstring(await _stop_list_bytes(api, api.key, xml=True))
    assert [e.text for e in answer][2] == "6"  # nbData
    assert alive_at_reads == [0, 2, 2, 2]  # the page just rendered, not the list so far


class _Item(dict[str, Any]):
    """A STOP list item that can be watched (a plain dict cannot be weakly referenced)."""


def _pages_read(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``after_id`` of each page the store is asked for, from now on."""
    pages_after: list[int] = []
    stop_page = api.store.stop_page

    async def counted(account_id: int, after_id: int, limit: int) -> list[StopEntry]:
        pages_after.append(after_id)
        return await stop_page(account_id, after_id, limit)

    monkeypatch.setattr(api.store, "stop_page", counted)
    return pages_after


async def _stop_list_bytes(api: Api, api_key: str, xml: bool) -> bytes:
    params = {"apiKey": api_key, **({"_format": "xml"} if xml else {})}
    async with api.session.get(api.base + "/v1/stop-sms/list", params=params) as response:
        assert response.status == 200
        return await response.read()


async def test_stop_add_accepts_form_fields(api: Api) -> None:
    body = f"apiKey={api.key}&phoneNumber=%2B33612345678".encode()
    status, added = await api.call("POST", "/v1/stop-sms/add", body=body)
    assert (status, added["code"]) == (200, 200)


async def test_a_stopped_number_cannot_be_sent_to(api: Api) -> None:
    await api.call("POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": RECIPIENT})
    body = {**key(api), "to": "0612345678", "from": "33757000001", "message": "Hi"}
    status, answer = await api.call("POST", "/v1/vn/send", body=body)
    assert (status, answer["code"]) == (400, 14)


async def test_stop_add_twice_is_code_15(api: Api) -> None:
    await api.call("POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": "0612345678"})
    status, answer = await api.call(
        "POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": "+33612345678"}
    )
    assert (status, answer["success"], answer["code"]) == (409, False, 15)


async def test_stop_add_needs_a_valid_number(api: Api) -> None:
    status, answer = await api.call("POST", "/v1/stop-sms/add", body=key(api))
    assert (status, answer["code"]) == (400, 2)
    status, answer = await api.call(
        "POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": "12ab"}
    )
    assert (status, answer["code"]) == (400, 9)
    assert answer["error"][0]["elementId"] == "children[phoneNumber].data"


@pytest.mark.parametrize(("stop_id", "http"), [("424242", 404), ("x", 404), (None, 400)])
async def test_stop_delete_refuses_an_unknown_id(api: Api, stop_id: str | None, http: int) -> None:
    params = key(api) if stop_id is None else {**key(api), "id": stop_id}
    status, answer = await api.call("GET", "/v1/stop-sms/delete", params=params)
    assert (status, answer["success"], answer["code"]) == (http, False, 4)


async def test_stop_delete_only_touches_the_callers_list(api: Api) -> None:
    _, added = await api.call(
        "POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": RECIPIENT}
    )
    other = await create_account(api.store, "other", "10", api.gateway.clock)
    params = {"apiKey": other.api_key, "id": str(added["stopId"])}
    status, answer = await api.call("GET", "/v1/stop-sms/delete", params=params)
    assert (status, answer["code"]) == (404, 4)


async def test_stop_endpoints_in_xml(api: Api) -> None:
    status, root = await api.call_xml(
        "POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": RECIPIENT}
    )
    assert status == 200
    success, code, stop_id = tree(root)
    assert (success, code) == ("true", "200")

    _, root = await api.call_xml("GET", "/v1/stop-sms/list", params=key(api))
    assert tree(root) == ["true", "200", "1", [[stop_id, RECIPIENT, "2026-03-03 10:00:00"]]]

    _, root = await api.call_xml("GET", "/v1/stop-sms/delete", params={**key(api), "id": stop_id})
    assert tree(root) == ["true", "200"]

    status, root = await api.call_xml(
        "POST", "/v1/stop-sms/add", body={**key(api), "phoneNumber": "bad"}
    )
    assert status == 400
    assert tree(root)[:2] == ["false", "9"]


# -- POST /_test/clock ------------------------------------------------------------------------


async def test_the_test_clock_is_off_without_fixed_clock(live_clock_api: Api) -> None:
    status, answer = await live_clock_api.call("POST", "/_test/clock", body={"now": MONDAY_8AM})
    assert (status, answer["success"], answer["code"]) == (404, False, 404)


async def test_the_test_clock_moves_the_fixed_clock(sunday_api: Api) -> None:
    status, answer = await sunday_api.call("POST", "/_test/clock", body={"now": MONDAY_8AM})
    assert (status, answer) == (200, {"now": MONDAY_8AM})
    assert sunday_api.gateway.clock.now() == datetime.fromisoformat(MONDAY_8AM).timestamp()


@pytest.mark.parametrize("now", [None, "tomorrow", "2026-03-02T08:00:00"])
async def test_the_test_clock_needs_a_time_with_an_offset(sunday_api: Api, now: str | None) -> None:
    body = {} if now is None else {"now": now}
    status, answer = await sunday_api.call("POST", "/_test/clock", body=body)
    assert (status, answer["code"]) == (400, 9)


async def test_read_endpoints_take_an_object_parameter_as_absent(api: Api) -> None:
    # A JSON object where the id belongs is no id at all: the same answer as a missing one.
    for endpoint in ("/v1/message-status", "/v1/message-cancel"):
        status, answer = await api.call("GET", endpoint, body={**key(api), "messageId": {"id": 1}})
        assert (status, answer["success"], answer["code"]) == (400, False, 4), endpoint


async def test_a_message_not_held_shows_no_due_time(api: Api) -> None:
    message_id = await api.send()  # a weekday morning: queued at once, not held
    _, state = await api.call("GET", "/v1/message-status", params=lookup(api, message_id))
    assert state["statut"] == "Waiting" and state["dueAt"] is None


async def test_health_before_any_smsc_session_exists_is_up_but_not_bound(api: Api) -> None:
    # serve listens before it builds its connectors: nothing bound yet is not "all bound"
    up = {"ok": True, "store": "ok", "smsc": {}, "http": {}}
    assert await api.call("GET", "/health") == (200, up)
    status, answer = await api.call("GET", "/health", params={"require": "smsc"})
    assert (status, answer) == (503, {**up, "ok": False})
