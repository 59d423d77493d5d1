"""Open-loop, rate-limited load generator (wrk2 is not in Debian): a separate process that
schedules POST /v1/vn/send at a fixed rate and measures each latency from its *scheduled* time,
so a stall is not hidden (no coordinated omission). Bodies: the same mix as wrk_send.lua.

Usage: loadgen.py URL KEY FROM RATE SECONDS [CONNECTIONS]   -> one line 'LOADJSON {...}'
       loadgen.py --count N --conns C [--dlr URL] [--ids-out FILE] URL KEY FROM
         (closed loop: exactly N sends over C connections; FILE gets "message_id accepted_at")
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import uvloop

SHORT = "Votre code de confirmation est 482913. Il expire dans 10 minutes."
LONG = ("Bonjour, votre colis n12345 sera livre demain entre 9h et 12h. " * 6)[:450]
UCS2 = "Привет! Ваш заказ №4821 готов к выдаче. Спасибо, что выбрали нас 🙂 Ответьте СТОП."


def request_bytes(host: str, port: int, key: str, sender: str, n: int, dlr: str = "") -> bytes:
    r = n % 10
    text = SHORT if r < 6 else LONG if r < 8 else UCS2
    fields = {"apiKey": key, "to": f"06{n % 100000000:08d}", "from": sender, "message": text}
    if dlr:
        fields["urlDlr"] = dlr
    body = json.dumps(fields, ensure_ascii=False).encode()
    head = (
        f"POST /v1/vn/send HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def main(url: str, key: str, sender: str, rate: float, seconds: float, conns: int) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    total = int(rate * seconds)
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0
    late_starts = 0
    hard_end = time.perf_counter() + seconds + 30  # bound: never run much past the plan

    async def worker() -> None:
        nonlocal errors, late_starts
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                n, scheduled = item
                if time.perf_counter() - scheduled > 0.005:
                    late_starts += 1
                writer.write(request_bytes(host, port, key, sender, n))
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - scheduled)
                if not head.startswith(b"HTTP/1.1 200") or b'"success":true' not in body:
                    errors += 1
                if time.perf_counter() > hard_end:
                    return
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(conns)]
    await asyncio.sleep(0.2)  # connections up
    t0 = time.perf_counter()
    for n in range(total):
        due = t0 + n / rate
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        queue.put_nowait((n, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait(workers, timeout=30)
    elapsed = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 3)

    return {
        "target_rate": rate,
        "sent": total,
        "answered": len(latencies),
        "achieved_per_s": round(len(latencies) / elapsed, 1),
        "errors": errors,
        "late_starts": late_starts,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": round(latencies[-1] * 1000, 3) if latencies else None,
    }


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


async def closed_loop(
    url: str, key: str, sender: str, count: int, conns: int, dlr: str, ids_out: str, limit_s: float
) -> dict:
    def accepted_id(n: int, head: bytes, body: bytes) -> int | None:
        match = ID_RE.search(body)
        return int(match.group(1)) if head.startswith(b"HTTP/1.1 200") and match else None

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    return await drive(
        host,
        port,
        lambda n: request_bytes(host, port, key, sender, n, dlr),
        accepted_id,
        count,
        conns,
        ids_out,
        limit_s,
    )


async def drive(
    host: str,
    port: int,
    request: Callable[[int], bytes],
    accepted_id: Callable[[int, bytes, bytes], int | None],
    count: int,
    conns: int,
    ids_out: str | None,
    limit_s: float,
) -> dict:
    """Exactly COUNT requests over CONNS keep-alive connections, each sent when the previous
    answer on its connection came back; ``accepted_id`` names an accepted answer's id."""
    next_n = 0
    errors = 0
    accepted: list[tuple[int, float]] = []
    latencies: list[float] = []
    hard_end = time.perf_counter() + limit_s

    async def worker() -> None:
        nonlocal next_n, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_n < count and time.perf_counter() < hard_end:
                n = next_n
                next_n += 1
                t0 = time.perf_counter()
                writer.write(request(n))
                head, body = await read_answer(reader)
                latencies.append(time.perf_counter() - t0)
                found = accepted_id(n, head, body)
                if found is None:
                    errors += 1
                else:
                    accepted.append((found, time.time()))
        finally:
            writer.close()

    t0 = time.perf_counter()
    wall0 = time.time()
    await asyncio.gather(*(worker() for _ in range(conns)))
    elapsed = time.perf_counter() - t0
    return summarize(next_n, accepted, errors, wall0, elapsed, latencies, ids_out)


def summarize(
    sent: int,
    accepted: list[tuple[int, float]],
    errors: int,
    wall0: float,
    elapsed: float,
    latencies: list[float],
    ids_out: str | None,
) -> dict:
    """The closed-loop figures (shared with the Kannel driver); writes "id time" lines."""
    if ids_out:
        with open(ids_out, "w") as out:
            out.writelines(f"{mid} {at:.6f}\n" for mid, at in accepted)
    latencies.sort()
    return {
        "sent": sent,
        "accepted": len(accepted),
        "errors": errors,
        "started_at": wall0,
        "duration_s": round(elapsed, 3),
        "accepted_per_s": round(len(accepted) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3) if latencies else None,
    }


ID_RE = re.compile(rb'"message_id":\s*(\d+)')


if __name__ == "__main__":
    if sys.argv[1] == "--count":
        import argparse

        ap = argparse.ArgumentParser()
        ap.add_argument("--count", type=int, required=True)
        ap.add_argument("--conns", type=int, default=64)
        ap.add_argument("--dlr", default="")
        ap.add_argument("--ids-out", default="")
        ap.add_argument("--limit-s", type=float, default=120.0)
        ap.add_argument("url")
        ap.add_argument("key")
        ap.add_argument("sender")
        a = ap.parse_args()
        result = uvloop.run(
            closed_loop(a.url, a.key, a.sender, a.count, a.conns, a.dlr, a.ids_out, a.limit_s)
        )
        print("LOADJSON " + json.dumps(result), flush=True)
        sys.exit(0)
    url, key, sender = sys.argv[1:4]
    rate, seconds = float(sys.argv[4]), float(sys.argv[5])
    conns = int(sys.argv[6]) if len(sys.argv) > 6 else 128
    result = uvloop.run(main(url, key, sender, rate, seconds, conns))
    print("LOADJSON " + json.dumps(result), flush=True)
