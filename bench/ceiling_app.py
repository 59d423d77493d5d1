"""The POST ceiling: the same HTTP stack (aiohttp on uvloop) answering a trivial JSON POST."""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web


async def send(request: web.Request) -> web.Response:
    params = orjson.loads(await request.read())
    body = orjson.dumps({"success": True, "code": 200, "message_id": 1, "to": params.get("to")})
    return web.Response(body=body, content_type="application/json")


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/vn/send", send)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print(f"ceiling: listening on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM from bench/bench_accept.py (by pid)


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
