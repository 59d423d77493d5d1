"""kill -9 the gateway mid-flow: after a restart nothing accepted is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support import eventually, start_serve, start_smsc

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
