"""The callback receiver: a small aiohttp server (its own process) that answers 200 to every
POST and records, per callback, its kind, its messageId and its arrival time (time.time()).

GET /count -> {"count": N, "first": t, "last": t};  POST /dump {"path": FILE} writes
"kind id arrival" lines. Usage: receiver.py PORT
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
import uvloop
from aiohttp import web

records: list[tuple[str, str, float]] = []


async def callback(request: web.Request) -> web.Response:
    arrived = time.time()
    body = await request.read()
    kind = request.match_info.get("kind", "x")
    try:
        payload = orjson.loads(body)
        ident = str(payload.get("messageId", ""))
    except (orjson.JSONDecodeError, AttributeError):
        ident = ""
    records.append((kind, ident, arrived))
    return web.Response(text="ok")


async def count(request: web.Request) -> web.Response:
    first = records[0][2] if records else None
    last = records[-1][2] if records else None
    return web.json_response({"count": len(records), "first": first, "last": last})


async def dump(request: web.Request) -> web.Response:
    path = (await request.json())["path"]
    with open(path, "w") as out:  # noqa: ASYNC230 - a bench dump
        out.writelines(f"{k} {i} {t:.6f}\n" for k, i, t in records)
    return web.json_response({"written": len(records)})


async def reset(request: web.Request) -> web.Response:
    records.clear()
    return web.json_response({"count": 0})


async def main(port: int) -> None:
    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/count", count)
    app.router.add_post("/dump", dump)
    app.router.add_post("/reset", reset)
    app.router.add_post("/cb/{kind}", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print(f"receiver: listening on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM from the benchmark that started it


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
