"""Benchmark 1 — accept: POST /v1/vn/send at a fixed concurrency (wrk, mixed bodies), against
the HTTP ceiling (GET /health on the gateway; a trivial JSON POST on the same HTTP server, and on
aiohttp's for reference) and the storage
ceiling (the store's durable accept in a tight in-process loop), then p99 at half the max rate
(open-loop client). The gateway runs with a fixed Sunday clock, so quiet hours HOLD every message:
this measures accepting alone, with an idle dispatcher (end to end is bench_e2e.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from common import (
    BENCH,
    HOST,
    OUT,
    PY,
    CpuMeter,
    free_port,
    peak_rss_mb,
    run_wrk,
    save_section,
    spawn,
    start_gateway,
    table,
    wrk_send,
)

SECONDS = float(os.environ.get("BENCH_ACCEPT_SECONDS", "8"))
CONNS = int(os.environ.get("BENCH_CONNS", "64"))
FIXED = {"SMSRELAY_FIXED_CLOCK": "2026-03-01T15:00:00+01:00"}
SHORT_BODY = (
    '{"apiKey":"k","to":"0612345678","from":"33757000001","message":"Votre code est 482913."}'
)


def _trivial_post(stack: str) -> dict:
    port = free_port()
    app = spawn([PY, str(BENCH / "ceiling_app.py"), stack, str(port)])
    try:
        app.wait_for(r"ceiling: .* listening")
        cpu = CpuMeter(app.pid)
        post = run_wrk(
            f"http://{HOST}:{port}/v1/vn/send",
            connections=CONNS,
            duration=SECONDS,
            env={"WRK_BODY": SHORT_BODY},
        )
        post.update(cpu.result())
        post["peak_rss_mb"] = round(peak_rss_mb(app.pid), 1)
        return post
    finally:
        app.stop()


def main() -> dict:
    results: dict = {"connections": CONNS, "seconds": SECONDS}
    rows = []

    # -- HTTP ceiling 1: GET /health on the gateway itself --------------------------------
    gw = start_gateway(OUT / "data-accept", env=FIXED)
    try:
        cpu = CpuMeter(gw.child.pid)
        health = run_wrk(gw.url + "/health", connections=CONNS, duration=SECONDS)
        health.update(cpu.result())
        results["ceiling_get_health"] = health
        rows.append(
            (
                "HTTP ceiling: gateway GET /health",
                health["rps"],
                health["p50_ms"],
                health["p99_ms"],
                health["p999_ms"],
                health["non_200"] + health["socket_errors"],
                health["cpu_pct"],
                "-",
            )
        )

        # -- the gateway: POST /v1/vn/send, mixed bodies --------------------------------------
        send = wrk_send(gw, {"SEND_THREADS": "1"}, connections=CONNS, duration=SECONDS)
        with sqlite3.connect(gw.db_path) as conn:
            send["rows_in_db"] = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            send["parts_in_db"] = conn.execute("SELECT COUNT(*) FROM parts").fetchone()[0]
        results["gateway_send"] = send
        rows.append(
            (
                "smsrelay POST /v1/vn/send (mixed)",
                send["accepted_per_s"],
                send["p50_ms"],
                send["p99_ms"],
                send["p999_ms"],
                send["refused"] + send["socket_errors"],
                send["cpu_pct"],
                send["peak_rss_mb"],
            )
        )

        # -- p99 at half the max rate (open loop) ---------------------------------------------
        half = max(100.0, round(send["accepted_per_s"] / 2))
        target_half = 4000.0  # the target: p99 <= 25 ms at half of 8,000/s
        for label, rate in (
            ("half of measured max", half),
            ("4,000/s (half the target)", target_half),
        ):
            cpu = CpuMeter(gw.child.pid)
            out = subprocess.run(
                [
                    PY,
                    str(BENCH / "loadgen.py"),
                    gw.url,
                    gw.key,
                    gw.number,
                    str(rate),
                    str(SECONDS),
                    "128",
                ],
                capture_output=True,
                check=False,
                text=True,
                timeout=SECONDS + 60,
            )
            line = next(ln for ln in out.stdout.splitlines() if ln.startswith("LOADJSON "))
            load = json.loads(line[9:])
            load.update(cpu.result())
            results[f"open_loop_{int(rate)}"] = load
            rows.append(
                (
                    f"smsrelay open loop @ {label} {rate:,.0f}/s",
                    load["achieved_per_s"],
                    load["p50_ms"],
                    load["p99_ms"],
                    load["p999_ms"],
                    load["errors"],
                    load["cpu_pct"],
                    round(peak_rss_mb(gw.child.pid), 1),
                )
            )
    finally:
        gw.child.stop()

    # -- HTTP ceiling 2: trivial JSON POST on the gateway's HTTP server (and on aiohttp's) --
    for position, (stack, key, label) in enumerate(
        (
            ("smsrelay", "ceiling_post_trivial", "HTTP ceiling: same server, trivial JSON POST"),
            ("aiohttp", "reference_aiohttp_post", "reference: aiohttp trivial JSON POST"),
        ),
        start=1,
    ):
        post = _trivial_post(stack)
        results[key] = post
        rows.insert(
            position,
            (
                label,
                post["rps"],
                post["p50_ms"],
                post["p99_ms"],
                post["p999_ms"],
                post["non_200"] + post["socket_errors"],
                post["cpu_pct"],
                post["peak_rss_mb"],
            ),
        )

    # -- storage ceiling: SqliteStore.accept_message in a tight loop ------------------------
    out = subprocess.run(
        [PY, str(BENCH / "store_ceiling.py"), str(OUT / "data-store-ceiling"), str(SECONDS), "256"],
        capture_output=True,
        check=False,
        text=True,
        timeout=SECONDS + 60,
        cwd=str(BENCH),
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("STOREJSON "))
    store = json.loads(line[10:])
    results["ceiling_store"] = store
    rows.insert(
        3,
        (
            "storage ceiling: store.accept_message x256 tasks",
            store["accepted_per_s"],
            store["p50_ms"],
            store["p99_ms"],
            "-",
            0,
            "-",
            "-",
        ),
    )

    accepted = results["gateway_send"]["accepted_per_s"]
    lower = min(results["ceiling_post_trivial"]["rps"], store["accepted_per_s"])
    results["ratios"] = {
        "vs_http_post_ceiling": round(accepted / results["ceiling_post_trivial"]["rps"], 3),
        "vs_http_get_health": round(accepted / results["ceiling_get_health"]["rps"], 3),
        "vs_storage_ceiling": round(accepted / store["accepted_per_s"], 3),
        "vs_lower_ceiling": round(accepted / lower, 3),
    }
    p99_half = results["open_loop_4000"]["p99_ms"]
    results["targets"] = {
        "accepted_per_s >= 8000": accepted >= 8000,
        "p99 <= 25 ms at 4000/s": p99_half <= 25,
        ">= 70% of lower ceiling": results["ratios"]["vs_lower_ceiling"] >= 0.7,
    }
    print(
        table(
            f"accept (c={CONNS}, {SECONDS:.0f}s each, 1 wrk thread)",
            rows,
            ("what", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "cpu %", "peak RSS MB"),
        )
    )
    r = results["ratios"]
    print(
        f"ratios: accept/POST ceiling {r['vs_http_post_ceiling']:.0%}, accept/GET /health "
        f"{r['vs_http_get_health']:.0%}, accept/storage ceiling {r['vs_storage_ceiling']:.0%}, "
        f"accept/lower ceiling {r['vs_lower_ceiling']:.0%}"
    )
    print(
        f"durable rows after the run: {results['gateway_send']['rows_in_db']:,} messages, "
        f"{results['gateway_send']['parts_in_db']:,} parts"
    )
    for name, ok in results["targets"].items():
        print(f"  target {name}: {'MET' if ok else 'NOT MET'}")
    return results


if __name__ == "__main__":
    data = main()
    save_section("accept", data)
    sys.exit(0)
