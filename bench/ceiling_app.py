"""The POST ceiling: an HTTP stack answering a trivial JSON POST (decode the body, answer JSON).

``smsrelay``: the gateway's own HTTP server (smsrelay.api.http_server) — the HTTP ceiling.
``aiohttp``: aiohttp's server on uvloop, the stack the gateway used before (for reference).
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web

from smsrelay.api.http_server import HttpServer
from smsrelay.api.http_types import Request, Response


def _answer(body: bytes) -> bytes:
    params = orjson.loads(body)
    return orjson.dumps({"success": True, "code": 200, "message_id": 1, "to": params.get("to")})


async def trivial(request: Request) -> Response:
    return Response(200, _answer(request.body), "application/json; charset=utf-8")


def refuse(status: int, detail: str, raw_query: str) -> Response:
    return Response(status, orjson.dumps({"error": detail}), "application/json", close=True)


async def aiohttp_send(request: web.Request) -> web.Response:
    return web.Response(body=_answer(await request.read()), content_type="application/json")


async def serve_smsrelay(port: int) -> None:
    server = HttpServer(trivial, refuse, max_body=65536, idle_timeout=75, body_timeout=30)
    await server.start("127.0.0.1", port)


async def serve_aiohttp(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/vn/send", aiohttp_send)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()


async def main(stack: str, port: int) -> None:
    await (serve_smsrelay if stack == "smsrelay" else serve_aiohttp)(port)
    print(f"ceiling: {stack} listening on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM from bench/bench_accept.py (by pid)


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
