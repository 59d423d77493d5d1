"""Benchmark 3 — backlog: M held messages (quiet hours on a fixed Sunday clock, seeded straight
into SQLite by seed_backlog.py, mirroring accept), then released by moving the clock to Monday
08:00; measures claim+submit of the first K released parts against an empty-queue run of K,
the gateway's peak RSS in both, and the database bytes per message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from common import (
    BENCH,
    OUT,
    PY,
    CpuMeter,
    find_db,
    http_json,
    peak_rss_mb,
    rss_mb,
    save_section,
    smsc_url,
    start_gateway,
    start_smsc,
    table,
)

BACKLOG = int(os.environ.get("BENCH_BACKLOG_N", "1000000"))
K = int(os.environ.get("BENCH_BACKLOG_K", "50000"))
LIMIT_S = float(os.environ.get("BENCH_BACKLOG_LIMIT_S", "90"))
SUNDAY = "2026-03-01T15:00:00+01:00"
MONDAY = "2026-03-02T08:00:00+01:00"
WINDOW_ALLOWS = 100 / 0.020  # the default window over a 20 ms SMSC
DUE_AT = 1772434800.0  # MONDAY as epoch: what quiet hours give a message accepted on SUNDAY
CREATED_AT = 1772373600.0


def run(label: str, seeded: int, *smsc_args: str) -> dict:
    data = OUT / f"data-backlog-{label}"
    smsc = start_smsc(*smsc_args)
    env = {"SMSRELAY_FIXED_CLOCK": SUNDAY}
    try:
        gw = start_gateway(data, smsc=smsc_url(smsc), env=env)  # schema + demo account
        gw.child.stop()
        db = find_db(data)
        empty_bytes = db.stat().st_size
        out = subprocess.run(
            [
                PY,
                str(BENCH / "seed_backlog.py"),
                str(db),
                str(seeded),
                str(DUE_AT),
                str(CREATED_AT),
            ],
            capture_output=True,
            check=False,
            text=True,
            timeout=240,
        )
        seed = json.loads(
            next(ln for ln in out.stdout.splitlines() if ln.startswith("SEEDJSON "))[9:]
        )
        db_bytes = db.stat().st_size
        gw = start_gateway(data, smsc=smsc_url(smsc), env=env, fresh=False)
        rss_before = rss_mb(gw.child.pid)
        base = smsc.stats()["accepted"]
        peak_during = [0.0]
        stop = threading.Event()

        def watch_rss() -> None:
            while not stop.is_set():
                peak_during[0] = max(peak_during[0], rss_mb(gw.child.pid))
                stop.wait(0.2)

        threading.Thread(target=watch_rss, daemon=True).start()
        cpu = CpuMeter(gw.child.pid)
        t0 = time.monotonic()
        http_json(gw.url + "/_test/clock", {"now": MONDAY})
        submitted = 0
        while time.monotonic() - t0 < LIMIT_S:
            submitted = smsc.stats()["accepted"] - base
            if submitted >= K:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        stop.set()
        gw_cpu = cpu.result()
        peak = peak_rss_mb(gw.child.pid)
        gw.child.stop(deadline=15)
    finally:
        smsc.child.stop()
    return {
        "label": label,
        "queued": seeded,
        "measured_parts": submitted,
        "seconds": round(elapsed, 3),
        "claim_submit_per_s": round(submitted / elapsed, 1),
        "seed": seed,
        "db_bytes": db_bytes,
        "db_bytes_per_message": round((db_bytes - empty_bytes) / seeded, 1),
        "rss_before_release_mb": round(rss_before, 1),
        "rss_max_during_mb": round(peak_during[0], 1),
        "peak_rss_mb": round(peak, 1),
        "gateway": gw_cpu,
        "complete": submitted >= K,
    }


def main() -> dict:
    # empty, backlog, backlog, empty: a machine that speeds up or slows down during the step
    # moves both sides alike (one pair read anywhere from 0.76 to 1.01 on the same code).
    empty = run("empty", K)
    full = run("backlog", BACKLOG)
    full_again = run("backlog-2", BACKLOG)
    empty_again = run("empty-2", K)
    # The window measured alone: a released queue (not the accept rate) feeds one bind whose
    # SMSC answers 20 ms late; window 100 / 20 ms allows 5,000 submit_sm/s.
    slow = run("window-20ms", K, "--resp-delay-ms", "20")
    window_share = slow["claim_submit_per_s"] / WINDOW_ALLOWS
    ratio = (full["claim_submit_per_s"] + full_again["claim_submit_per_s"]) / (
        empty["claim_submit_per_s"] + empty_again["claim_submit_per_s"]
    )
    rows = [
        (
            r["label"],
            r["queued"],
            r["measured_parts"],
            r["seconds"],
            r["claim_submit_per_s"],
            r["db_bytes_per_message"],
            r["rss_before_release_mb"],
            r["peak_rss_mb"],
            r["gateway"]["cpu_pct"],
            r["seed"]["seconds"],
        )
        for r in (empty, full, full_again, empty_again, slow)
    ]
    print(
        table(
            f"backlog (first {K:,} released parts; 1-part messages; SMSC simulator answering "
            "at once)",
            rows,
            (
                "run",
                "queued",
                "measured",
                "seconds",
                "claim+submit/s",
                "DB bytes/msg",
                "RSS before MB",
                "peak RSS MB",
                "gw cpu %",
                "seed s",
            ),
        )
    )
    print(
        f"backlog/empty rate ratio: {ratio:.2f} (both backlog runs over both empty runs; "
        "target: within 15%, i.e. >= 0.85)"
    )
    if not all(r["complete"] for r in (empty, full, full_again, empty_again)):
        print(
            f"NOTE: fewer than {K:,} submit_sm within {LIMIT_S:.0f} s: the rate is "
            "count/elapsed and is bound by the SMSC simulator (see bench/README.md), not by the backlog"  # noqa: E501
        )
    print(f"peak RSS backlog/empty: {full['peak_rss_mb'] / empty['peak_rss_mb']:.2f}")
    print(
        f"SMSC 20 ms late: {slow['claim_submit_per_s']:,.0f} submit_sm/s = {window_share:.0%} of "
        f"window/latency ({WINDOW_ALLOWS:,.0f}/s; target >= 80%)"
    )
    return {
        "empty": empty,
        "backlog": full,
        "backlog_2": full_again,
        "empty_2": empty_again,
        "rate_ratio": round(ratio, 3),
        "rss_ratio": round(full["peak_rss_mb"] / empty["peak_rss_mb"], 3),
        "window_20ms": slow,
        "window_share_20ms": round(window_share, 3),
        "targets": {"within 15%": ratio >= 0.85, "window >= 80% at 20 ms": window_share >= 0.8},
        "complete": all(r["complete"] for r in (empty, full, full_again, empty_again)),
    }


if __name__ == "__main__":
    save_section("backlog", main())
    sys.exit(0)
