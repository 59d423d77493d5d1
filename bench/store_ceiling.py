"""The storage ceiling: the gateway's own durable insert (SqliteStore.accept_message through the
group commit, each batch's WAL fdatasync'd before it is answered), driven in-process by many
concurrent tasks with no HTTP in front. Prints one JSON line.
Usage: store_ceiling.py DATA_DIR SECONDS CONCURRENCY
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import uvloop

from smsrelay.service.accounts import DEMO_NUMBER
from smsrelay.store.records import NewMessage
from smsrelay.store.sqlite_store import SqliteStore

MIX = [  # the same mix as wrk_send.lua: (text, encoding, parts)
    *[("Votre code de confirmation est 482913. Il expire dans 10 minutes.", "gsm7", 1)] * 6,
    *[("Bonjour, votre colis n12345 sera livre demain entre 9h et 12h. " * 6, "gsm7", 3)] * 2,
    *[("Привет! Ваш заказ №4821 готов к выдаче. 🙂 " * 2, "ucs2", 2)] * 2,
]


async def main(data_dir: Path, seconds: float, concurrency: int) -> dict[str, float]:
    shutil.rmtree(data_dir, ignore_errors=True)
    store = SqliteStore(f"sqlite:///{data_dir / 'ceiling.db'}")
    await store.open()
    account = await store.create_account("bench", "hash", 10**15, time.time())
    await store.add_number("bench", DEMO_NUMBER, "default", time.time())
    count = 0
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal count
        n = 0
        while time.monotonic() < end:
            n += 1
            text, encoding, parts = MIX[n % 10]
            now = time.time()
            message = NewMessage(
                account_id=account.id,
                sender=DEMO_NUMBER,
                recipient=f"+336{w:04d}{n:04d}",
                region="metropole",
                text=text,
                encoding=encoding,
                nb_sms=parts,
                cost_micros=45000 * parts,
                tag=None,
                url_response=None,
                url_dlr=None,
                stop_sms=False,
                sandbox=False,
                created_at=now,
                due_at=now + 86400,
            )
            t0 = time.perf_counter()
            await store.accept_message(message)
            latencies.append(time.perf_counter() - t0)
            count += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.monotonic() - t0
    await store.close()
    latencies.sort()
    return {
        "accepted": count,
        "duration_s": round(elapsed, 3),
        "accepted_per_s": round(count / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    }


if __name__ == "__main__":
    result = uvloop.run(main(Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])))
    print("STOREJSON " + json.dumps(result), flush=True)
