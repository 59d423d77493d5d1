"""The simulator's control API refuses what a web page the developer opens could send it:
cross-site POSTs (no CORS preflight for text/plain) and DNS rebinding (a foreign Host)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from smsrelay.carrier.control_guard import ControlRequest, control_refusal, host_allowed
from smsrelay.carrier.simulator import Simulator

from .conftest import DESTINATION, SOURCE, Inbox, MakeConnector, eventually

REPLY = orjson.dumps({"from": DESTINATION, "to": SOURCE, "text": "STOP"})
RULE = orjson.dumps({"to": "0612345678", "submit_status": "ESME_RINVDSTADR"})
# What a browser sends for a page's fetch(url, {method: "POST", mode: "no-cors", body})
CROSS_SITE = {"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"}


async def _call(
    simulator: Simulator, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{simulator.control_port}{path}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=body, headers=headers) as response,
    ):
        return response.status, orjson.loads(await response.read())


async def test_a_web_page_can_neither_inject_nor_rule_nor_read(
    simulator: Simulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    await make_connector(simulator, inbox)
    port = simulator.control_port
    refused = [
        ("POST", "/reply", REPLY, CROSS_SITE, 403, "Origin 'http://evil.example' refused"),
        ("POST", "/rules", RULE, CROSS_SITE, 403, "Origin"),
        ("POST", "/reply", REPLY, {"Content-Type": "text/plain"}, 415, "application/json"),
        ("POST", "/rules", RULE, {}, 415, "Content-Type"),  # aiohttp: application/octet-stream
        ("DELETE", "/rules", None, {"Origin": "null"}, 403, "Origin 'null'"),  # a sandboxed page
        ("GET", "/submits", None, {"Host": f"rebind.attacker.example:{port}"}, 403, "rebinding"),
        ("GET", "/stats", None, {"Host": "evil@127.0.0.1"}, 403, "Host"),
        ("GET", "/rules", None, {"Origin": f"http://localhost:{port}"}, 403, "Origin"),
    ]
    for method, path, body, headers, status, says in refused:
        answer = await _call(simulator, method, path, body, headers)
        assert answer[0] == status and says in answer[1]["error"], (method, path, headers, answer)
    assert simulator.stats.mo_sent == 0 and not inbox.items and not simulator.rules


async def test_what_a_test_or_a_developer_sends_is_still_answered(
    simulator: Simulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    await make_connector(simulator, inbox)
    port = simulator.control_port
    json_type = {"Content-Type": "application/json; charset=utf-8"}
    own_origin = {**json_type, "Origin": f"http://127.0.0.1:{port}"}  # a console on the API
    assert (await _call(simulator, "POST", "/reply", REPLY, own_origin))[0] == 200
    assert (await _call(simulator, "POST", "/rules", RULE, json_type))[0] == 200
    for host in (f"localhost:{port}", f"[::1]:{port}", "127.0.0.2", "LocalHost.:1"):
        assert (await _call(simulator, "GET", "/rules", None, {"Host": host}))[0] == 200, host
    assert (await _call(simulator, "DELETE", "/rules", None, {}))[1] == {"removed": 1}
    await eventually(lambda: [m.short_message for m in inbox.items] == [b"STOP"])


@pytest.mark.parametrize(
    ("host", "bound", "allowed"),
    [
        ("127.0.0.1:2776", "127.0.0.1", True),
        ("smsc.lan:2776", "smsc.lan", True),  # listening on a name: that name
        ("other.lan:2776", "smsc.lan", False),
        ("192.0.2.7:2776", "192.0.2.7", True),
        ("192.0.2.8:2776", "192.0.2.7", False),
        ("192.0.2.8:2776", "0.0.0.0", True),  # every address: any literal (no DNS to rebind)
        ("[2001:db8::1]:2776", "::", True),
        ("smsc.lan:2776", "0.0.0.0", False),  # but no name
        ("127.0.0.1:x", "127.0.0.1", False),
        ("", "127.0.0.1", False),
    ],
)
def test_which_hosts_are_this_machine(host: str, bound: str, allowed: bool) -> None:
    assert host_allowed(host, bound) is allowed


def test_a_request_without_host_or_origin_is_not_a_browsers() -> None:
    # HTTP/1.0 clients may send no Host; a browser always does
    plain = ControlRequest("GET", None, None, None)
    assert control_refusal(plain, "127.0.0.1") is None
    with_origin = ControlRequest("GET", None, "http://127.0.0.1:2776", None)
    assert control_refusal(with_origin, "127.0.0.1") is not None
