"""Inject a burst of MO replies at the simulator's control API (POST /reply), its own process.
Usage: inject_replies.py CONTROL_URL TO_NUMBER COUNT CONCURRENCY  -> 'INJECTJSON {...}'
Each POST returns once the gateway acknowledged the deliver_sm, i.e. after it stored the reply.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp
import uvloop


async def main(control: str, to: str, count: int, conc: int) -> dict:
    next_n = 0
    ok = errors = 0
    lat: list[float] = []
    hard_end = time.perf_counter() + 120
    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal next_n, ok, errors
            while next_n < count and time.perf_counter() < hard_end:
                n = next_n
                next_n += 1
                body = {"from": f"336{n % 100000000:08d}", "to": to, "text": f"Oui merci {n}"}
                t0 = time.perf_counter()
                try:
                    async with session.post(control + "/reply", json=body) as resp:
                        await resp.read()
                        if resp.status == 200:
                            ok += 1
                        else:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                lat.append(time.perf_counter() - t0)

        wall0 = time.time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed = time.perf_counter() - t0
    lat.sort()
    return {
        "injected": ok,
        "errors": errors,
        "started_at": wall0,
        "duration_s": round(elapsed, 3),
        "stored_per_s": round(ok / elapsed, 1),
        "ack_p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
        "ack_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
    }


if __name__ == "__main__":
    control, to, count, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print("INJECTJSON " + json.dumps(uvloop.run(main(control, to, count, conc))), flush=True)
