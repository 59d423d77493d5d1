"""Scaling out: two `serve` processes share one PostgreSQL database (a real server) and one SMSC.

Every message is submitted once and its delivery report posted once, whichever node took it
in and whichever node sent it; a node killed mid-flow leaves its work to the other.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest

from tests.support import (
    Receiver,
    ServeProcess,
    SmscProcess,
    eventually,
    start_serve,
    start_smsc,
)

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


@dataclass
class Cluster:
    """One database, one SMSC, one callback receiver; the test starts the nodes."""

    url: str
    smsc: SmscProcess
    receiver: Receiver
    nodes: list[ServeProcess] = field(default_factory=list)

    async def node(self, folder: Path, smsc_url: str, env: dict[str, str]) -> ServeProcess:
        node = await start_serve(folder, "--smsc", smsc_url, env=env)
        self.nodes.append(node)
        return node


@asynccontextmanager
async def cluster(postgres: Any, name: str, *smsc_args: str) -> AsyncIterator[Cluster]:
    smsc = await start_smsc("--delivery-rate", "1.0", *smsc_args)
    receiver = Receiver()
    await receiver.start()
    running = Cluster(postgres.new_database(name), smsc, receiver)
    try:
        yield running
    finally:
        for node in running.nodes:
            if node.process.returncode is None:
                node.kill()
            await node.wait()
        await smsc.stop()
        await receiver.stop()


async def test_two_nodes_share_the_queue_and_send_each_message_once(
    postgres: Any, tmp_path: Path
) -> None:
    async with cluster(postgres, "two_nodes", "--resp-delay-ms", "10") as c:
        # Each node binds as its own system_id, so the SMSC tells who sent what.
        first_smsc, second_smsc = (c.smsc.url.replace("smsrelay:", f"{n}:") for n in ("na", "nb"))
        # Small claims: neither node can take the whole queue while the other one is slow to
        # start (seen on a loaded machine), so both send.
        env = _node_env(c.url, SMSRELAY_DISPATCH_BATCH="8")
        first = await c.node(tmp_path / "a", first_smsc, env)
        second = await c.node(tmp_path / "b", second_smsc, env)
        assert second.api_key == first.api_key  # one demo account, made by the first
        dlr = c.receiver.url + "/dlr"
        ids = await asyncio.gather(
            *(
                _send((first, second)[i % 2], first.api_key, first.number, f"n{i}", dlr)
                for i in range(120)
            )
        )

        await eventually(lambda: len(c.receiver.bodies("/dlr")) >= len(ids), timeout=60)
        reported = Counter(body["messageId"] for body in c.receiver.bodies("/dlr"))
        assert set(reported) == set(ids) and max(reported.values()) == 1
        assert all(body["status"] == "Delivered" for body in c.receiver.bodies("/dlr"))
        submits = await c.smsc.submits()
        assert len(submits) == len(ids)  # no part sent by both nodes
        assert set(Counter(s["system_id"] for s in submits)) == {"na", "nb"}  # both sent
        assert _states(c.url) == {"delivered": len(ids)}


async def test_a_node_killed_mid_flow_leaves_its_work_to_the_other(
    postgres: Any, tmp_path: Path
) -> None:
    # The SMSC answers slowly, so the killed node dies with parts claimed and in flight.
    async with cluster(postgres, "killed_node", "--resp-delay-ms", "300") as c:
        # Short leases, of parts and of callbacks (4 x the webhook timeout + 5 s): whatever
        # the killed node held comes back to the other one soon.
        env = _node_env(c.url, SMSRELAY_LEASE_SECONDS="3", SMSRELAY_WEBHOOK_TIMEOUT="1")
        doomed = await c.node(tmp_path / "a", c.smsc.url, env)
        dlr = c.receiver.url + "/dlr"
        ids = [await _send(doomed, doomed.api_key, doomed.number, f"k{i}", dlr) for i in range(60)]
        await eventually(lambda: _states(c.url).get("queued", 0) < len(ids))  # claims began
        doomed.kill()
        await doomed.wait()
        await c.node(tmp_path / "b", c.smsc.url, env)

        await eventually(lambda: _states(c.url) == {"delivered": len(ids)}, timeout=60)
        await eventually(
            lambda: {b["messageId"] for b in c.receiver.bodies("/dlr")} == set(ids), timeout=60
        )


def _clock_ahead(folder: Path, seconds: float) -> dict[str, str]:
    """The environment of a node whose wall clock runs ``seconds`` ahead, as an unsynchronised
    machine's would (``time.time`` only; the event loop's monotonic clock is untouched)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        f"import time\n_real = time.time\ntime.time = lambda: _real() + {seconds!r}\n"
    )
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def _parts_in(url: str, state: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM parts WHERE state = %s", (state,)).fetchone()
    return int(row[0]) if row else 0


async def test_a_node_whose_clock_runs_ahead_takes_no_live_work(
    postgres: Any, tmp_path: Path
) -> None:
    # Leases are written by one node and found run out by another: a node whose clock ran
    # two minutes ahead took the first one's live leases for dead ones and sent their parts
    # again (96 of 119 messages twice in the review's run). Each keeps the database's time.
    async with cluster(postgres, "clock_ahead", "--resp-delay-ms", "6000") as c:
        first = await c.node(tmp_path / "a", c.smsc.url, _node_env(c.url))
        dlr = c.receiver.url + "/dlr"
        ids = [await _send(first, first.api_key, first.number, f"c{i}", dlr) for i in range(30)]
        await eventually(lambda: _parts_in(c.url, "sending") == len(ids))  # all in flight
        ahead = {**_node_env(c.url), **_clock_ahead(tmp_path / "skew", 120.0)}
        await c.node(tmp_path / "b", c.smsc.url, ahead)

        await eventually(lambda: _states(c.url) == {"delivered": len(ids)}, timeout=60)
        submits = await c.smsc.submits()
        assert len(submits) == len(ids)  # none sent again by the node ahead
        await eventually(lambda: len(c.receiver.bodies("/dlr")) >= len(ids), timeout=30)
        assert sorted(int(b["messageId"]) for b in c.receiver.bodies("/dlr")) == sorted(ids)
