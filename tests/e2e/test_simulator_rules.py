"""A CI suite tells the built-in SMSC, per number, what happens to a message: delivered,
undeliverable, refused by the carrier, or never reported. Through serve's own simulator and
its control API, as a test of an application would."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from smsrelay.cli import cli
from tests.support import RunningGateway, eventually

pytestmark = pytest.mark.asyncio


async def _control(gw: RunningGateway, method: str, path: str, body: Any = None) -> Any:
    simulator = gw.running.simulator
    assert simulator is not None
    url = f"http://127.0.0.1:{simulator.control_port}{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as r:
        return r.status, await r.json()


async def _statut(gw: RunningGateway, message_id: int) -> dict[str, Any]:
    return await gw.status(message_id)


async def _final(gw: RunningGateway, message_id: int, wanted: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status = await _statut(gw, message_id)
        return status if status["statut"] == wanted else None

    result: dict[str, Any] = await eventually(done, timeout=15)
    return result


async def test_rules_decide_each_numbers_fate_until_removed(gw: RunningGateway) -> None:
    rules = [
        {"to": "+33 6 12 34 56 01", "stat": "UNDELIV", "err": 12},
        {"to": "33612345602", "submit_status": "ESME_RINVDSTADR"},
        {"to": "33612345603", "receipt": False},
    ]
    for rule in rules:
        status, answer = await _control(gw, "POST", "/rules", rule)
        assert status == 200, answer
    assert [r["to"] for r in (await _control(gw, "GET", "/rules"))[1]] == [
        "33612345601",
        "33612345602",
        "33612345603",
    ]

    ids = [(await gw.send(to=f"06123456{n:02d}"))[1]["message_id"] for n in (1, 2, 3, 4)]
    undelivered = await _final(gw, ids[0], "Not delivered")
    assert undelivered["stat"] == "UNDELIV"
    await _final(gw, ids[1], "Not delivered")
    message = await gw.store.get_message(ids[1])
    assert message.state == "rejected" and "ESME_RINVDSTADR" in message.parts[0].last_error
    await _final(gw, ids[3], "Delivered")  # no rule: the simulator's own rate (1.0)
    # sent before the last one, whose receipt is in: the SMSC took it and never reports
    message = await gw.store.get_message(ids[2])
    assert message.parts[0].submitted_at and (await _statut(gw, ids[2]))["statut"] == "Waiting"

    assert await _control(gw, "DELETE", "/rules?to=0033612345601") == (200, {"removed": 1})
    again = (await gw.send(to="0612345601"))[1]["message_id"]
    await _final(gw, again, "Delivered")
    assert await _control(gw, "DELETE", "/rules") == (200, {"removed": 2})


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ({"stat": "UNDELIV"}, '"to" must be'),
        ({"to": "12", "stat": "UNDELIV"}, '"to" must be'),
        ({"to": "0612345601", "stat": "LOST"}, "stat must be one of"),
        ({"to": "0612345601", "submit_status": "ESME_NOPE"}, "not an SMPP status name"),
        ({"to": "0612345601", "receipt_delay": 5}, "unknown field"),
        ({"to": "0612345601", "receipt": "no"}, "receipt must be true or false"),
        ({"to": "0612345601", "receipt_delay_ms": -1}, "receipt_delay_ms must be"),
        (["0612345601"], "expected a JSON object"),
    ],
)
async def test_a_rule_it_cannot_follow_is_refused_with_the_reason(
    gw: RunningGateway, rule: Any, says: str
) -> None:
    status, answer = await _control(gw, "POST", "/rules", rule)
    assert status == 400 and says in answer["error"]
    assert await _control(gw, "GET", "/rules") == (200, [])


async def test_the_cli_sets_lists_and_clears_rules(gw: RunningGateway) -> None:
    simulator = gw.running.simulator
    assert simulator is not None
    control = ["--control", f"http://127.0.0.1:{simulator.control_port}"]

    async def run(*args: str) -> Any:  # in a thread: the simulator answers on this loop
        return await asyncio.to_thread(CliRunner().invoke, cli, ["smsc", *args, *control])

    done = await run("rule", "--to", "0612345601", "--stat", "expired", "--err", "27")
    assert done.exit_code == 0 and json.loads(done.output)["stat"] == "EXPIRED", done.output
    sent = (await gw.send(to="0612345601"))[1]["message_id"]
    assert (await _final(gw, sent, "Not delivered"))["stat"] == "EXPIRED"
    listed = await run("rules")
    assert [r["to"] for r in json.loads(listed.output)] == ["33612345601"]
    refused = await run("rule", "--to", "0612345602", "--submit-status", "ESME_WHAT")
    assert refused.exit_code == 1 and "not an SMPP status name" in refused.stderr
    cleared = await run("rules", "--clear")
    assert json.loads(cleared.output) == {"removed": 1}
