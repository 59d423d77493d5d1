"""A disk under the reserve (min_free_mb): new sends are refused with a 503 that says why,
/health and status say so, and what has already happened is still stored: the SMSC's
answers, receipts and the callbacks they make. Measured with the real statvfs: the tests
raise the reserve above the free space there is, which is what a filling disk does."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import orjson

from smsrelay import runtime
from smsrelay.store.health import MIB, free_bytes
from tests.support import (
    SMSRELAY,
    Receiver,
    RunningGateway,
    eventually,
    gateway_settings,
    start_gateway,
    start_serve,
)

NEARLY_FULL = "could not queue the SMS: the gateway's disk is nearly full, retry later"


def _more_than_free(folder: Path) -> int:
    return free_bytes(str(folder)) // MIB + 1_000_000


async def _state(gw: RunningGateway, message_id: int) -> str:
    message = await gw.store.get_message(message_id)
    return str(message.state)


async def _submitted(gw: RunningGateway, message_id: int) -> bool:
    return await _state(gw, message_id) == "submitted"


async def test_under_the_reserve_sends_wait_and_what_already_happened_is_stored(
    tmp_path: Path, receiver: Receiver
) -> None:
    gw = await start_gateway(gateway_settings(tmp_path, builtin_receipt_delay_ms=2_000))
    try:
        status, accepted = await gw.send(urlDlr=receiver.url + "/dlr")
        assert status == 200
        message_id = int(accepted["message_id"])
        await eventually(lambda: _submitted(gw, message_id))  # its receipt comes in 2 s
        health = gw.running.gateway.store.db.health
        health.min_free_bytes = _more_than_free(tmp_path) * MIB  # the disk fills up

        async def refused() -> object:
            status, answer = await gw.send()
            return answer if status == 503 else None

        answer = await eventually(refused)  # at once: a reserve changed is measured again
        assert answer == {"success": False, "code": 500, "message": NEARLY_FULL}
        assert receiver.bodies("/dlr") == []  # the receipt is still to come
        status, body = await gw.get("/health")
        assert (status, body["ok"], body["store"]) == (503, False, "disk under its reserve")
        # the receipt that comes meanwhile, and the DLR it makes, are stored and posted
        await eventually(lambda: receiver.bodies("/dlr"))
        assert await _state(gw, message_id) == "delivered"
        kept = len(await gw.store.recent_messages(None, 1_000))
        assert [(await gw.send())[0] for _ in range(3)] == [503] * 3
        assert len(await gw.store.recent_messages(None, 1_000)) == kept  # refused: not stored

        health.min_free_bytes = 0  # room again
        assert (await gw.send())[0] == 200
        assert (await gw.get("/health"))[0] == 200
    finally:
        await runtime.stop(gw.running)


async def test_serve_and_status_say_the_disk_is_under_the_reserve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    reserve = str(_more_than_free(data))
    serve = await start_serve(data, env={"SMSRELAY_MIN_FREE_MB": reserve})
    try:
        body = {"apiKey": serve.api_key, "from": serve.number, "to": "0612345678", "message": "a"}
        async with aiohttp.ClientSession() as session:
            async with session.post(serve.base_url + "/v1/vn/send", data=orjson.dumps(body)) as r:
                assert (r.status, orjson.loads(await r.read())["message"]) == (503, NEARLY_FULL)
                assert r.headers["Retry-After"] == "1"
            async with session.get(serve.base_url + "/health") as r:
                assert r.status == 503
        status = await asyncio.create_subprocess_exec(
            SMSRELAY,
            "--data-dir",
            str(data),
            "status",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "SMSRELAY_MIN_FREE_MB": reserve},
        )
        out, err = await status.communicate()
        assert status.returncode == 1
        assert b"disk: " in out and b"under min_free_mb" in err
    finally:
        serve.kill()
        await serve.wait()


async def test_a_database_file_removed_under_serve_refuses_sends_instead_of_losing_them(
    tmp_path: Path,
) -> None:
    gw = await start_gateway(gateway_settings(tmp_path))
    try:
        assert (await gw.send())[0] == 200
        for name in ("smsrelay.db", "smsrelay.db-wal", "smsrelay.db-shm"):
            (tmp_path / "data" / name).unlink()  # an operator's rm, serve still running

        async def refused() -> object:
            status, answer = await gw.send()
            return answer if status == 503 else None

        answer = await eventually(refused)
        assert answer == {
            "success": False,
            "code": 500,
            "message": "could not queue the SMS, retry later",
        }
        status, health = await gw.get("/health")
        assert status == 503 and "database file gone" in str(health)
    finally:
        await runtime.stop(gw.running)
