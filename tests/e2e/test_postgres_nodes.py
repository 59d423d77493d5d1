"""Scaling out: two `serve` processes share one PostgreSQL database (a real server) and one SMSC.

Every message is submitted once and its delivery report posted once, whichever node took it
in and whichever node sent it; a node killed mid-flow leaves its work to the other.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest

from tests.support import Receiver, ServeProcess, eventually, start_serve, start_smsc

pytestmark = pytest.mark.asyncio


def _node_env(url: str, **more: str) -> dict[str, str]:
    return {
        "SMSRELAY_DATABASE_URL": url,
        "SMSRELAY_ALLOW_PRIVATE_WEBHOOKS": "true",  # the receiver is on 127.0.0.1
        "SMSRELAY_DEMO_CREDIT_EUR": "10000",
        **more,
    }


async def _send(node: ServeProcess, key: str, number: str, text: str, dlr: str) -> int:
    body = {"apiKey": key, "from": number, "to": "0612345678", "message": text, "urlDlr": dlr}
    async with (
        aiohttp.ClientSession() as session,
        session.post(node.base_url + "/v1/vn/send", data=orjson.dumps(body)) as resp,
    ):
        answer = orjson.loads(await resp.read())
    assert resp.status == 200 and answer["success"], answer
    return int(answer["message_id"])


def _states(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
    return {str(state): int(count) for state, count in rows}


async def test_two_nodes_share_the_queue_and_send_each_message_once(
    postgres: Any, tmp_path: Path
) -> None:
    url = postgres.new_database("two_nodes")
    smsc = await start_smsc("--delivery-rate", "1.0", "--resp-delay-ms", "10")
    receiver = Receiver()
    await receiver.start()
    nodes: list[ServeProcess] = []
    try:
        # Each node binds as its own system_id, so the SMSC tells who sent what.
        first_smsc, second_smsc = (smsc.url.replace("smsrelay:", f"{n}:") for n in ("na", "nb"))
        first = await start_serve(tmp_path / "a", "--smsc", first_smsc, env=_node_env(url))
        nodes.append(first)
        second = await start_serve(tmp_path / "b", "--smsc", second_smsc, env=_node_env(url))
        nodes.append(second)
        assert second.api_key == first.api_key  # one demo account, made by the first
        sends = [
            _send(node, first.api_key, first.number, f"n{i}", receiver.url + "/dlr")
            for i in range(120)
            for node in (nodes[i % 2],)
        ]
        ids = await asyncio.gather(*sends)

        await eventually(lambda: len(receiver.bodies("/dlr")) >= len(ids), timeout=60)
        reported = Counter(body["messageId"] for body in receiver.bodies("/dlr"))
        assert set(reported) == set(ids) and max(reported.values()) == 1
        assert all(body["status"] == "Delivered" for body in receiver.bodies("/dlr"))
        submits = await smsc.submits()
        assert len(submits) == len(ids)  # no part sent by both nodes
        assert set(Counter(s["system_id"] for s in submits)) == {"na", "nb"}  # both sent
        assert _states(url) == {"delivered": len(ids)}
    finally:
        for node in nodes:
            if node.process.returncode is None:
                node.kill()
            await node.wait()
        await smsc.stop()
        await receiver.stop()


async def test_a_node_killed_mid_flow_leaves_its_work_to_the_other(
    postgres: Any, tmp_path: Path
) -> None:
    url = postgres.new_database("killed_node")
    # The SMSC answers slowly, so the killed node dies with parts claimed and in flight.
    smsc = await start_smsc("--delivery-rate", "1.0", "--resp-delay-ms", "300")
    receiver = Receiver()
    await receiver.start()
    env = _node_env(url, SMSRELAY_LEASE_SECONDS="3")
    nodes: list[ServeProcess] = []
    try:
        doomed = await start_serve(tmp_path / "a", "--smsc", smsc.url, env=env)
        nodes.append(doomed)
        ids = [
            await _send(doomed, doomed.api_key, doomed.number, f"k{i}", receiver.url + "/dlr")
            for i in range(60)
        ]
        await eventually(lambda: _states(url).get("queued", 0) < len(ids))  # claims began
        doomed.kill()
        await doomed.wait()
        survivor = await start_serve(tmp_path / "b", "--smsc", smsc.url, env=env)
        nodes.append(survivor)

        await eventually(lambda: _states(url) == {"delivered": len(ids)}, timeout=60)
        await eventually(lambda: set(b["messageId"] for b in receiver.bodies("/dlr")) == set(ids))
    finally:
        for node in nodes:
            if node.process.returncode is None:
                node.kill()
            await node.wait()
        await smsc.stop()
        await receiver.stop()
