"""kill -9 the gateway mid-flow: after a restart nothing accepted is lost."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support import Receiver, ServeProcess, eventually, start_serve, start_smsc

pytestmark = pytest.mark.asyncio


async def _send_many(base: str, key: str, number: str, count: int) -> list[int]:
    ids = []
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            body = {"apiKey": key, "from": number, "to": "0612345678", "message": f"crash {i}"}
            async with session.post(base + "/v1/vn/send", data=orjson.dumps(body)) as resp:
                answer = orjson.loads(await resp.read())
                assert answer["success"], answer
                ids.append(answer["message_id"])
    return ids


def _states(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
    finally:
        conn.close()
    return dict(rows)


async def test_kill_during_dispatch_then_restart_delivers_everything(tmp_path: Path) -> None:
    smsc = await start_smsc("--delivery-rate", "1.0", "--resp-delay-ms", "50")
    data = tmp_path / "data"
    try:
        serve = await start_serve(data, "--smsc", smsc.url)
        ids = await _send_many(serve.base_url, serve.api_key, serve.number, 300)
        serve.kill()  # no unbind, no flush: parts are mid-window right now
        await serve.wait()
        at_kill = _states(data / "smsrelay.db")
        assert sum(at_kill.values()) == len(ids) == 300  # every answered success survived
        assert at_kill.get("delivered", 0) < 300  # and the kill did interrupt the flow

        serve = await start_serve(data, "--smsc", smsc.url)
        await eventually(lambda: _states(data / "smsrelay.db") == {"delivered": 300}, 60)
        serve.process.terminate()
        await serve.wait()
        texts = {bytes.fromhex(s["short_message"]) for s in await smsc.submits()}
        assert texts == {f"crash {i}".encode() for i in range(300)}
    finally:
        await smsc.stop()


async def test_repeated_kills_at_random_moments_lose_nothing_and_report_each_message_once(
    tmp_path: Path,
) -> None:
    # Four kill -9s, each at a random moment while sends, submits, receipts and callbacks are
    # all in flight. Whatever was answered "success" is delivered, and its delivery report
    # reaches the receiver under one callback id (re-posts after a crash keep that id).
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    smsc = await start_smsc("--delivery-rate", "1.0", "--resp-delay-ms", "20")
    receiver = Receiver()
    await receiver.start()
    data = tmp_path / "data"
    flags = ("--smsc", smsc.url, "--allow-private-webhooks")
    accepted: set[int] = set()
    try:
        for _ in range(4):
            serve = await start_serve(data, *flags)
            sending = asyncio.create_task(
                _send_until_killed(serve, receiver.url + "/dlr", accepted)
            )
            await asyncio.sleep(rng.uniform(0.05, 0.6))  # the random moment of the crash
            serve.kill()
            await serve.wait()
            await sending
        serve = await start_serve(data, *flags)
        try:
            await eventually(lambda: _reported(receiver) >= accepted, 60)
        finally:
            serve.process.terminate()
            await serve.wait()
        assert _states(data / "smsrelay.db").get("delivered", 0) >= len(accepted) > 0, seed
        ids_by_message: dict[int, set[str]] = {}
        for headers, body in receiver.received:
            ids_by_message.setdefault(body["messageId"], set()).add(headers["X-Smsrelay-Id"])
        assert all(len(ids) == 1 for ids in ids_by_message.values()), seed
    finally:
        await receiver.stop()
        await smsc.stop()


async def _send_until_killed(serve: ServeProcess, url_dlr: str, accepted: set[int]) -> None:
    """Eight clients sending until the gateway dies; what it answered "success" is noted."""

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        for i in itertools.count():
            body = {
                "apiKey": serve.api_key,
                "from": serve.number,
                "to": "0612345678",
                "message": f"soak {n}-{i}",
                "urlDlr": url_dlr,
            }
            try:
                async with session.post(
                    serve.base_url + "/v1/vn/send", data=orjson.dumps(body)
                ) as resp:
                    answer = orjson.loads(await resp.read())
            except (aiohttp.ClientError, ValueError):
                return  # killed mid-request: that one may or may not be stored
            if answer.get("success"):
                accepted.add(answer["message_id"])

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session, n) for n in range(8)))


def _reported(receiver: Receiver) -> set[int]:
    return {body["messageId"] for body in receiver.bodies("/dlr") if body["stat"] == "DELIVRD"}
