"""Benchmark 4 — replies: a burst of N MO replies injected at the simulator (its own process)
-> stored by the gateway (deliver_sm acknowledged after the commit) -> reply callbacks at
bench/receiver.py. Prints replies stored per second and callbacks per second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from common import (
    BENCH,
    HOST,
    OUT,
    PY,
    SMSRELAY,
    CpuMeter,
    free_port,
    http_json,
    peak_rss_mb,
    save_section,
    smsc_url,
    spawn,
    start_gateway,
    start_smsc,
    table,
)

N = int(os.environ.get("BENCH_REPLIES_N", "10000"))
CONC = int(os.environ.get("BENCH_REPLIES_CONC", "64"))
LIMIT_S = 90.0


def main() -> dict:
    smsc = start_smsc()
    rport = free_port()
    receiver = spawn([PY, str(BENCH / "receiver.py"), str(rport)])
    receiver.wait_for("receiver: listening")
    rurl = f"http://{HOST}:{rport}"
    gw = start_gateway(
        OUT / "data-replies", smsc=smsc_url(smsc), env={"SMSRELAY_DEMO_QUIET_HOURS": "false"}
    )
    try:
        set_ok = subprocess.run(
            [
                SMSRELAY,
                "--data-dir",
                str(gw.data_dir),
                "accounts",
                "set",
                "demo",
                "--reply-url",
                rurl + "/cb/reply",
            ],
            capture_output=True,
            check=False,
            text=True,
            timeout=30,
        )
        if set_ok.returncode != 0:
            raise RuntimeError(f"accounts set failed: {set_ok.stderr}")
        cpu = CpuMeter(gw.child.pid)
        out = subprocess.run(
            [PY, str(BENCH / "inject_replies.py"), smsc.control_url, gw.number, str(N), str(CONC)],
            capture_output=True,
            check=False,
            text=True,
            timeout=LIMIT_S + 30,
        )
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith("INJECTJSON "))
        inj = json.loads(line[11:])
        end = time.monotonic() + LIMIT_S
        count = http_json(rurl + "/count")
        while time.monotonic() < end and count["count"] < inj["injected"]:
            time.sleep(0.1)
            count = http_json(rurl + "/count")
        gw_cpu = cpu.result()
        rss = peak_rss_mb(gw.child.pid)
    finally:
        gw.child.stop()
        receiver.stop()
        smsc.child.stop()
    t_cb = (count["last"] - inj["started_at"]) if count["last"] else None
    result = {
        **inj,
        "callbacks": count["count"],
        "callbacks_per_s": round(count["count"] / t_cb, 1) if t_cb else None,
        "t_callbacks_s": round(t_cb, 3) if t_cb else None,
        "gateway": {**gw_cpu, "peak_rss_mb": round(rss, 1)},
    }
    print(
        table(
            f"replies ({N:,} injected, {CONC} concurrent POST /reply at the simulator)",
            [
                (
                    result["injected"],
                    result["errors"],
                    result["stored_per_s"],
                    result["ack_p50_ms"],
                    result["ack_p99_ms"],
                    result["callbacks"],
                    result["callbacks_per_s"],
                    gw_cpu["cpu_pct"],
                    round(rss, 1),
                )
            ],
            (
                "injected",
                "errors",
                "stored/s",
                "ack p50 ms",
                "ack p99 ms",
                "callbacks",
                "callbacks/s (from first inject)",
                "gw cpu %",
                "gw RSS MB",
            ),
        )
    )
    return result


if __name__ == "__main__":
    save_section("replies", main())
    sys.exit(0)
