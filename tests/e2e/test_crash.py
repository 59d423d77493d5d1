"""kill -9 the gateway mid-flow: after a restart nothing accepted is lost."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sqlite3
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.support import (
    SMSRELAY,
    Receiver,
    ServeProcess,
    SmscProcess,
    eventually,
    start_serve,
    start_smsc,
)

pytestmark = pytest.mark.asyncio
# The soaks send as fast as the machine lets them: more than the demo's 100 EUR buys (2,222).
PLENTY_OF_CREDIT = {"SMSRELAY_DEMO_CREDIT_EUR": "100000"}


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
    rng, seed = _seeded()
    smsc = await start_smsc("--delivery-rate", "1.0", "--resp-delay-ms", "20")
    receiver = Receiver()
    await receiver.start()
    data = tmp_path / "data"
    flags = ("--smsc", smsc.url, "--allow-private-webhooks")
    accepted: set[int] = set()
    try:
        for _ in range(4):
            serve = await start_serve(data, *flags, env=PLENTY_OF_CREDIT)
            sending = asyncio.create_task(
                _send_until_killed(serve, receiver.url + "/dlr", accepted)
            )
            await asyncio.sleep(rng.uniform(0.05, 0.6))  # the random moment of the crash
            serve.kill()
            await serve.wait()
            await sending
        serve = await start_serve(data, *flags, env=PLENTY_OF_CREDIT)
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
    rng, seed = _seeded()
    smsc = await start_smsc(
        "--delivery-rate", "1.0", "--reject-rate", "0.05", "--throttle", "1500",
        "--drop-every", "151",
    )  # fmt: skip
    receiver = FlakyReceiver(rng, failing=1 / 3)
    await receiver.start()
    data = tmp_path / "data"
    flags = ("--smsc", smsc.url, "--allow-private-webhooks")
    quick_retries = {
        "SMSRELAY_WEBHOOK_FIRST_RETRY": "0.05",
        "SMSRELAY_WEBHOOK_MAX_BACKOFF": "0.3",
        **PLENTY_OF_CREDIT,
    }
    accepted: set[int] = set()
    try:
        for _ in range(2):
            serve = await start_serve(data, *flags, env=quick_retries)
            sending = asyncio.create_task(_send_until_killed(serve, receiver.url, accepted))
            # enough traffic for the link to drop (every 151 submits) on a slow machine too
            await eventually(lambda: len(accepted) >= 200, 30)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
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
        self.replies: dict[str, set[str]] = {}  # reply text -> callback ids
        self.reply_order: list[int] = []  # reply ids as posted
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/dlr", self._handle)
        app.router.add_post("/mo", self._handle_reply)
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

    async def _handle_reply(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.replies.setdefault(body["text"], set()).add(request.headers["X-Smsrelay-Id"])
        self.reply_order.append(int(body["messageId"]))
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


async def test_replies_through_kills_are_posted_once_each(tmp_path: Path) -> None:
    # 300 replies from one person come in while the gateway is killed three times: each is
    # stored and posted once, in order, and the ones left to post after a restart drain at
    # once (they are one chain: each waited a claim poll, 0.2 s, before this test). A kill
    # between a reply's commit and its resp is rare here; tests/store covers that re-send.
    rng, seed = _seeded()
    smsc = await start_smsc()
    receiver = FlakyReceiver(rng, failing=0.0)
    await receiver.start()
    data = tmp_path / "data"
    flags = ("--smsc", smsc.url, "--allow-private-webhooks")
    serve = await start_serve(data, *flags)
    await _set_reply_url(data, receiver.url.replace("/dlr", "/mo"))
    injecting = asyncio.create_task(_inject_replies(smsc, serve.number, 300))
    try:
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            serve.kill()
            await serve.wait()
            serve = await start_serve(data, *flags)
        assert await injecting == [[0]] * 300, seed  # each acknowledged in the end
        texts = {f"reply {i}" for i in range(300)}
        await eventually(lambda: set(receiver.replies) == texts, 30)
        assert all(len(ids) == 1 for ids in receiver.replies.values()), seed
        assert receiver.reply_order == sorted(receiver.reply_order), seed  # one chain, in order
    finally:
        injecting.cancel()
        serve.process.terminate()
        await serve.wait()
        await receiver.stop()
        await smsc.stop()


async def _set_reply_url(data: Path, url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        SMSRELAY, "--data-dir", str(data), "accounts", "set", "demo", "--reply-url", url,
        env={**os.environ, "SMSRELAY_ALLOW_PRIVATE_WEBHOOKS": "true"},
    )  # fmt: skip
    assert await process.wait() == 0


async def _inject_replies(smsc: SmscProcess, number: str, count: int) -> list[list[int]]:
    """Forty at a time from the SMSC, which delivers each until it is acknowledged."""
    statuses: list[list[int]] = [[] for _ in range(count)]

    async def worker(first: int) -> None:
        for i in range(first, count, 40):
            statuses[i] = (await smsc.reply("33612345678", number, f"reply {i}"))["statuses"]

    await asyncio.gather(*(worker(n) for n in range(40)))
    return statuses


async def test_a_database_locked_now_and_then_by_another_process_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    # Another process (a CLI command, a backup) holds the write lock for 0.5 to 2.5 s, 4 times,
    # while sends, submits, receipts and callbacks flow. Sends may be refused then (503, to
    # retry); nothing answered success is lost, no part the SMSC took goes twice, and each
    # message is reported under one callback id.
    rng, seed = _seeded()
    smsc = await start_smsc("--delivery-rate", "1.0")
    receiver = FlakyReceiver(rng, failing=0.0)
    await receiver.start()
    data = tmp_path / "data"
    serve = await start_serve(
        data, "--smsc", smsc.url, "--allow-private-webhooks", env=PLENTY_OF_CREDIT
    )
    accepted: set[int] = set()
    try:
        sending = asyncio.create_task(_send_for(serve, receiver.url, accepted, seconds=6.0))
        for _ in range(4):
            await asyncio.sleep(rng.uniform(0.1, 0.3))
            await asyncio.to_thread(_hold_write_lock, data / "smsrelay.db", rng.uniform(0.5, 2.5))
        await sending
        await eventually(lambda: set(receiver.reports) >= accepted, 60)
        assert all(len({i for i, _ in r}) == 1 for r in receiver.reports.values()), seed
        acked = [s for s in await smsc.submits() if s["status"] == 0 and s["message_id"]]
        texts = [s["short_message"] for s in acked]
        assert len(texts) == len(set(texts)), seed  # none the SMSC took was sent again
    finally:
        serve.process.terminate()
        await serve.wait()
        await receiver.stop()
        await smsc.stop()


def _hold_write_lock(database: Path, seconds: float) -> None:
    conn = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        time.sleep(seconds)  # this thread holds the lock: the point of the test
        conn.execute("COMMIT")
    finally:
        conn.close()


async def _send_for(serve: ServeProcess, url_dlr: str, accepted: set[int], seconds: float) -> None:
    """Eight clients sending for ``seconds``; a refusal (503) is simply not noted."""
    deadline = asyncio.get_running_loop().time() + seconds

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        for i in itertools.count():
            if asyncio.get_running_loop().time() > deadline:
                return
            body = {
                "apiKey": serve.api_key,
                "from": serve.number,
                "to": "0612345678",
                "message": f"locked {n}-{i}",
                "urlDlr": url_dlr,
            }
            async with session.post(serve.base_url + "/v1/vn/send", data=orjson.dumps(body)) as r:
                answer = orjson.loads(await r.read())
            if answer.get("success"):
                accepted.add(answer["message_id"])
            else:
                assert r.status == 503, answer  # busy, retry later: the only refusal here

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session, n) for n in range(8)))


def _seeded() -> tuple[random.Random, int]:
    """A random source and its seed, which the assertions print (to replay a failure)."""
    seed = random.randrange(1 << 30)
    return random.Random(seed), seed
