"""An account's API key restricted to addresses (SMS Partner's code 96), over real HTTP on
loopback: who gets in, from where, and what a refused request leaves behind (nothing)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from smsrelay.api.routes import ROUTES
from smsrelay.service.accounts import account_changes

if TYPE_CHECKING:
    from tests.api.conftest import Api, StartApi

from tests.api.conftest import DEMO_NUMBER, SUNDAY_AFTERNOON, TUESDAY_MORNING
from tests.support import eventually

RECIPIENT = "0612345678"


async def restrict(api: Api, allowed_ips: str) -> None:
    """As `accounts set demo --allowed-ips ...` does; the key cache forgotten (it would take
    up to a second to see the change, which is the README's word, not this test's)."""
    await api.store.update_account("demo", account_changes(allowed_ips=allowed_ips))
    api.gateway.accounts.forget()


def send_body(api: Api, **extra: str) -> dict[str, str]:
    return {"apiKey": api.key, "to": RECIPIENT, "from": DEMO_NUMBER, "message": "Hi", **extra}


async def stored(api: Api) -> tuple[int, int]:
    """(messages stored, the demo account's credit in micros)."""
    account = await api.store.find_account("demo")
    assert account is not None
    return len(await api.store.recent_messages(None, 100)), account.credit_micros


async def test_a_client_in_the_list_sends_one_outside_is_refused_96_and_cleared_sends_again(
    api: Api,
) -> None:
    await restrict(api, "127.0.0.1")
    assert await api.send() == 1
    before = await stored(api)

    await restrict(api, "10.0.0.0/8, 2001:db8::/32")
    status, answer = await api.call("POST", "/v1/vn/send", body=send_body(api))
    assert (status, answer) == (
        403,
        {"success": False, "code": 96, "message": "IP not authorised: 127.0.0.1"},
    )
    status, root = await api.call_xml("POST", "/v1/vn/send", body=send_body(api))
    assert status == 403
    assert [e.text for e in root] == ["false", "96", "IP not authorised: 127.0.0.1"]
    assert await stored(api) == before  # nothing stored, no credit taken

    await restrict(api, "any")
    assert await api.send() == 2


async def test_a_running_serve_applies_a_restriction_within_its_key_cache_age(api: Api) -> None:
    # The README's word: a change made beside a running serve (the CLI writes the store,
    # nothing tells serve) is applied within a second, once its cached account is too old.
    assert (await api.call("GET", "/v1/me", params={"apiKey": api.key}))[0] == 200  # cached
    await api.store.update_account("demo", account_changes(allowed_ips="10.0.0.0/8"))

    async def refused() -> bool:
        status, answer = await api.call("GET", "/v1/me", params={"apiKey": api.key})
        return (status, answer["code"]) == (403, 96)

    await eventually(refused, timeout=5.0)


def _requests(api: Api, message_id: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """One request per endpoint that takes an apiKey, each one it would otherwise answer."""
    key = {"apiKey": api.key}
    about = {"apiKey": api.key, "messageId": str(message_id)}
    item = {"phoneNumber": RECIPIENT, "messageId": str(message_id)}
    return {
        "/v1/vn/send": ("POST", {"body": send_body(api)}),
        "/v1/message-status": ("GET", {"params": about}),
        "/v1/me": ("GET", {"params": key}),
        "/v1/multi-status": ("POST", {"body": {**key, "SMSStatut_List": [item]}}),
        "/v1/bulk-status-by-tag": ("GET", {"params": {**key, "tag": "t"}}),
        "/v1/message-cancel": ("GET", {"params": about}),
        "/v1/stop-sms/list": ("GET", {"params": key}),
        "/v1/stop-sms/add": ("POST", {"body": {**key, "phoneNumber": RECIPIENT}}),
        "/v1/stop-sms/delete": ("GET", {"params": {**key, "id": "1"}}),
    }


async def test_every_endpoint_that_takes_an_api_key_refuses_a_client_outside_and_changes_nothing(
    sunday_api: Api,
) -> None:
    api = sunday_api  # a message held for quiet hours: one a cancel would cancel
    message_id = await api.send()
    requests = _requests(api, message_id)
    keyed = {path for _, path, _ in ROUTES if path != "/_test/clock"}
    assert set(requests) == keyed  # a new endpoint is added here, and checked
    await restrict(api, "192.0.2.0/24")
    before = await stored(api)
    for path, (method, request) in requests.items():
        status, answer = await api.call(method, path, **request)
        assert (status, answer["code"]) == (403, 96), (path, answer)
    assert await stored(api) == before  # nothing sent, nothing cancelled nor refunded
    assert await api.store.stop_list(1) == []  # nor added to the STOP list
    message = await api.store.get_message(message_id, 1)
    assert message is not None and message.state == "held"


async def test_a_wrong_key_is_still_code_10_and_a_disabled_account_code_20_from_outside(
    api: Api,
) -> None:
    await restrict(api, "10.0.0.0/8")
    status, answer = await api.call("GET", "/v1/me", params={"apiKey": "x" * 40})
    assert (status, answer["code"]) == (401, 10)
    await api.store.update_account("demo", {"disabled": 1})
    api.gateway.accounts.forget()
    status, answer = await api.call("GET", "/v1/me", params={"apiKey": api.key})
    assert (status, answer["code"]) == (403, 20)


async def test_x_forwarded_for_is_not_believed_from_a_peer_that_is_no_trusted_proxy(
    api: Api,
) -> None:
    # A client cannot name an allowed address and get in: no proxy is trusted by default.
    await restrict(api, "203.0.113.7")
    spoofed = {"X-Forwarded-For": "203.0.113.7"}
    status, answer = await api.call("POST", "/v1/vn/send", body=send_body(api), headers=spoofed)
    assert (status, answer["code"], answer["message"]) == (
        403,
        96,
        "IP not authorised: 127.0.0.1",
    )


@pytest.mark.parametrize(
    ("forwarded_for", "allowed", "client"),
    [
        ("203.0.113.7", True, "203.0.113.7"),
        ("192.0.2.1", False, "192.0.2.1"),
        # a client writing an allowed address first: its proxy appends the real one
        ("203.0.113.7, 192.0.2.1", False, "192.0.2.1"),
        # through a second proxy (trusted): the rightmost address no proxy of ours is
        ("192.0.2.1, 203.0.113.7, 10.1.2.3", True, "203.0.113.7"),
        ("203.0.113.7, 192.0.2.1, 10.1.2.3", False, "192.0.2.1"),
        # two headers are one list, in order
        ("192.0.2.1\r\nX-Forwarded-For: 203.0.113.7", True, "203.0.113.7"),
        # an IPv4 client as a dual-stack proxy writes it
        ("::ffff:203.0.113.7", True, "203.0.113.7"),
        ("unknown", False, "unknown address"),
    ],
)
async def test_behind_trusted_proxies_the_rightmost_untrusted_forwarded_address_decides(
    start_api: StartApi, forwarded_for: str, allowed: bool, client: str
) -> None:
    api = await start_api(TUESDAY_MORNING, trusted_proxies="127.0.0.1/32, 10.0.0.0/8")
    await restrict(api, "203.0.113.0/24")
    first, _, second = forwarded_for.partition("\r\nX-Forwarded-For: ")
    headers = [("X-Forwarded-For", first)] + ([("X-Forwarded-For", second)] if second else [])
    status, answer = await _send_with_headers(api, headers)
    if allowed:
        assert (status, answer["success"]) == (200, True), answer
    else:
        assert (status, answer["code"]) == (403, 96)
        assert answer["message"] == f"IP not authorised: {client}"


async def _send_with_headers(api: Api, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    """A send with headers repeated as given (a dict would keep one of each name)."""
    all_headers = [("Content-Type", "application/json"), *headers]
    data = orjson.dumps(send_body(api))
    async with api.session.post(api.base + "/v1/vn/send", data=data, headers=all_headers) as r:
        return r.status, orjson.loads(await r.read())


async def test_a_trusted_proxy_without_the_header_is_the_client(start_api: StartApi) -> None:
    api = await start_api(TUESDAY_MORNING, trusted_proxies="127.0.0.1")
    await restrict(api, "127.0.0.1")
    assert await api.send() == 1


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_an_ipv6_client_is_matched_against_ipv6_entries(start_api: StartApi) -> None:
    api = await start_api(TUESDAY_MORNING, host="::1")
    await restrict(api, "127.0.0.1")
    status, answer = await api.call("POST", "/v1/vn/send", body=send_body(api))
    assert (status, answer["message"]) == (403, "IP not authorised: ::1")
    await restrict(api, "127.0.0.1, ::1")
    assert await api.send() == 1


async def test_refusals_are_logged_a_line_a_minute_with_a_count(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="smsrelay.api")
    await restrict(api, "10.0.0.0/8")
    for _ in range(5):
        status, _answer = await api.call("GET", "/v1/me", params={"apiKey": api.key})
        assert status == 403
    lines = [r for r in caplog.records if r.getMessage() == "api.ip.not_authorised"]
    assert len(lines) == 1  # the first; the other four wait for the minute's end
    assert (lines[0].__dict__["account"], lines[0].__dict__["address"]) == ("demo", "127.0.0.1")


async def test_an_account_without_a_list_is_served_from_anywhere(
    start_api: StartApi,
) -> None:
    # what every account is until set: a forwarded address changes nothing
    api = await start_api(SUNDAY_AFTERNOON, trusted_proxies="127.0.0.1")
    status, answer = await api.call(
        "GET", "/v1/me", params={"apiKey": api.key}, headers={"X-Forwarded-For": "garbage"}
    )
    assert (status, answer["success"]) == (200, True)


async def test_a_forwarded_address_in_a_chunked_bodys_trailer_does_not_get_a_client_in(
    start_api: StartApi,
) -> None:
    # A proxy that passes a chunked body on as it came passes its trailer too: were it read as
    # a header, the client's address would come after the one its proxy wrote (the rightmost)
    api = await start_api(TUESDAY_MORNING, trusted_proxies="127.0.0.1")
    await restrict(api, "203.0.113.7")
    body = orjson.dumps(send_body(api))
    host, _, port = api.base.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/vn/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nX-Forwarded-For: 192.0.2.1\r\nConnection: close\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(body), body)
        + b"0\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["message"] == (
        "IP not authorised: 192.0.2.1"
    )
    assert await api.store.recent_messages(None, 100) == []
