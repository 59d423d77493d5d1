"""A disk whose fsync fails: serve answers 503 for what it cannot make durable, stops accepting
anything after it (fail-stop), exits with code 3, and a restart finds every answered message.

The failing disk is the one thing faked here: a sitecustomize in the serve process makes
os.fdatasync raise EIO once a flag file exists."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support import start_serve

pytestmark = pytest.mark.asyncio

FAILING_FSYNC = """
import os
_flag = os.environ.get("SMSRELAY_TEST_FAIL_FSYNC_WHEN")
if _flag:
    _real_fdatasync = os.fdatasync

    def _fdatasync(fd):
        if os.path.exists(_flag):
            raise OSError(5, "Input/output error (a failing disk, faked by the test)")
        return _real_fdatasync(fd)

    os.fdatasync = _fdatasync
"""


async def _send(session: aiohttp.ClientSession, base: str, key: str, number: str, text: str):
    body = {"apiKey": key, "from": number, "to": "0612345678", "message": text}
    async with session.post(base + "/v1/vn/send", data=orjson.dumps(body)) as resp:
        return resp.status, orjson.loads(await resp.read())


async def test_a_failed_fsync_refuses_and_stops_and_keeps_what_was_answered(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAILING_FSYNC)
    flag = tmp_path / "disk-fails"
    data = tmp_path / "data"
    env = {
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "SMSRELAY_TEST_FAIL_FSYNC_WHEN": str(flag),
    }
    serve = await start_serve(data, env=env)
    try:
        async with aiohttp.ClientSession() as session:
            status, kept = await _send(session, serve.base_url, serve.api_key, serve.number, "a")
            assert (status, kept["success"]) == (200, True)
            flag.touch()
            status, refused = await _send(session, serve.base_url, serve.api_key, serve.number, "b")
            assert status == 503 and refused["success"] is False
        assert await asyncio.wait_for(serve.process.wait(), 30) == 3  # stopped on its own
    finally:
        if serve.process.returncode is None:
            serve.kill()
            await serve.wait()

    flag.unlink()
    again = await start_serve(data)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{again.base_url}/v1/message-status"
            params = {
                "apiKey": again.api_key,
                "messageId": str(kept["message_id"]),
                "phoneNumber": "0612345678",
            }
            async with session.get(url, params=params) as resp:
                assert resp.status == 200
                assert orjson.loads(await resp.read())["messageId"] == str(kept["message_id"])
    finally:
        again.kill()
        await again.wait()
