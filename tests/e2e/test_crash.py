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
from aiohttp import web

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


async def test_chaos_a_flaky_smsc_a_flaky_receiver_and_kills_still_report_every_message_once(
    tmp_path: Path,
) -> None:
    # Everything at once: the SMSC throttles (1,500/s), rejects 5 % and closes the link every 151
    # submits (after sending its answers: one that takes submits and drops the link before
    # answering any gets them all again, from any ESME); the receiver fails a third of the
    # callbacks; the gateway is killed twice at random moments. Each message answered
    # success ends final (delivered or rejected), and its one report (one callback id) says
    # how it ended.
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    smsc = await start_smsc(
        "--delivery-rate", "1.0", "--reject-rate", "0.05", "--throttle", "1500",
        "--drop-every", "151",
    )  # fmt: skip
    receiver = FlakyReceiver(rng, failing=1 / 3)
    await receiver.start()
    data = tmp_path / "data"
    flags = ("--smsc", smsc.url, "--allow-private-webhooks")
    quick_retries = {"SMSRELAY_WEBHOOK_FIRST_RETRY": "0.05", "SMSRELAY_WEBHOOK_MAX_BACKOFF": "0.3"}
    accepted: set[int] = set()
    try:
        for _ in range(2):
            serve = await start_serve(data, *flags, env=quick_retries)
            sending = asyncio.create_task(_send_until_killed(serve, receiver.url, accepted))
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            serve.kill()
            await serve.wait()
            await sending
        serve = await start_serve(data, *flags, env=quick_retries)
        try:
            await eventually(lambda: set(receiver.reports) >= accepted, 60)
        finally:
            serve.process.terminate()
            await serve.wait()
        final = _message_states(data / "smsrelay.db")
        for message_id in accepted:
            ids = {report_id for report_id, _ in receiver.reports[message_id]}
            statuses = {status for _, status in receiver.reports[message_id]}
            assert len(ids) == 1 and len(statuses) == 1, (seed, message_id)
            expected = {"delivered": "Delivered", "rejected": "Not delivered"}
            assert statuses == {expected[final[message_id]]}, (seed, message_id)
        assert receiver.failed > 0 and (await smsc.stats())["dropped_connections"] > 0, seed
    finally:
        await receiver.stop()
        await smsc.stop()


class FlakyReceiver:
    """A callback receiver that answers 500 to a share of the posts, at random."""

    def __init__(self, rng: random.Random, failing: float) -> None:
        self.rng = rng
        self.failing = failing
        self.failed = 0
        self.reports: dict[int, list[tuple[str, str]]] = {}  # message -> (callback id, status)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/dlr", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/dlr"

    async def _handle(self, request: web.Request) -> web.Response:
        if self.rng.random() < self.failing:
            self.failed += 1
            return web.Response(status=500)
        body = orjson.loads(await request.read())
        report = (request.headers["X-Smsrelay-Id"], body["status"])
        self.reports.setdefault(body["messageId"], []).append(report)
        return web.Response(text="ok")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _message_states(db: Path) -> dict[int, str]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT id, state FROM messages").fetchall())
    finally:
        conn.close()
