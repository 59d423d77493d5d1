"""Scale-out: the end-to-end run with one `serve` node, then with two, on one PostgreSQL database.

Each case gets a fresh database, the SMSC simulator, the callback receiver and its node(s); a
load generator per node posts its share of N messages (with urlDlr) in parallel. Prints, per
case: accepted/s, end-to-end msg/s (first send until the last callback), accept->callback
p50/p99, each node's CPU per message and peak RSS, and how many write batches had to run alone
(the `store.batch.run_alone` warning: a batch that lost three conflicts in a row to another node).

PostgreSQL: a throwaway server from Debian's postgresql package, started the way the tests
start theirs (`tests/pg_server.py`). On one 2-core machine the nodes, the server and the helpers
share two cores: the figures show what a second node costs and what contention it brings, not
what two machines would do.

Usage: .venv/bin/python bench/bench_nodes.py   (BENCH_NODES_N messages, 6,000 by default)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    BASE_ENV,
    BENCH,
    HOST,
    OUT,
    PY,
    ROOT,
    SMSRELAY,
    Child,
    CpuMeter,
    accept_to_callback_ms,
    free_port,
    http_json,
    peak_rss_mb,
    percentile,
    save_section,
    smsc_url,
    spawn,
    start_smsc,
    table,
)

sys.path.insert(0, str(ROOT))
from tests.pg_server import PostgresServer, find_binaries, start

N = int(os.environ.get("BENCH_NODES_N", "6000"))
CONNS = int(os.environ.get("BENCH_CONNS", "64"))
LIMIT_S = float(os.environ.get("BENCH_NODES_LIMIT_S", "90"))
RUN_ALONE = "store.batch.run_alone"


class Node:
    """One `serve` on the shared database; only the first prints the demo account."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.url = f"http://{HOST}:{port}"


def start_node(data_dir: Path, database: str, smsc: str, first: bool) -> tuple[Node, Any]:
    port = free_port()
    args = [SMSRELAY, "serve", "--data-dir", str(data_dir), "--port", str(port), "--smsc", smsc]
    env = {**BASE_ENV, "SMSRELAY_DATABASE_URL": database, "SMSRELAY_DEMO_QUIET_HOURS": "false"}
    child = spawn(args, env=env)
    demo = child.wait_for(r"demo account: apiKey=(\S+) number=(\S+)") if first else None
    child.wait_for(r"listening on http://[\d.]+:(\d+)")
    return Node(child, port), demo


def run_case(server: PostgresServer, nodes_wanted: int) -> dict[str, Any]:
    database = server.new_database(f"bench_nodes_{nodes_wanted}")
    smsc = start_smsc()
    rport = free_port()
    receiver = spawn([PY, str(BENCH / "receiver.py"), str(rport)])
    receiver.wait_for("receiver: listening")
    rurl = f"http://{HOST}:{rport}"
    nodes: list[Node] = []
    try:
        for i in range(nodes_wanted):
            node, demo = start_node(
                OUT / f"data-nodes-{nodes_wanted}-{i}", database, smsc_url(smsc), i == 0
            )
            nodes.append(node)
            if demo is not None:
                key, number = demo.group(1), demo.group(2)
        meters = [CpuMeter(node.child.pid) for node in nodes]  # from the first send, not start
        loads = _drive(nodes, key, number, rurl, nodes_wanted)
        accepted = sum(load["accepted"] for load in loads)
        done_at = _wait_for_callbacks(rurl, accepted)
        dump = OUT / f"nodes-{nodes_wanted}-callbacks.txt"
        http_json(rurl + "/dump", {"path": str(dump)})
        per_node = [
            {**meter.result(), "peak_rss_mb": round(peak_rss_mb(node.child.pid), 1)}
            for node, meter in zip(nodes, meters, strict=True)
        ]
        run_alone = sum(line.count(RUN_ALONE) for node in nodes for line in node.child.lines)
    finally:
        for node in nodes:
            node.child.stop()
        receiver.stop()
        smsc.child.stop()
    return _figures(nodes_wanted, loads, accepted, done_at, dump, per_node, run_alone)


def _drive(nodes: list[Node], key: str, number: str, rurl: str, count: int) -> list[dict[str, Any]]:
    """One closed-loop load generator per node, all at once, each with its share of N."""
    share, conns = N // count, max(1, CONNS // count)
    procs = [
        subprocess.Popen(
            [
                PY,
                str(BENCH / "loadgen.py"),
                "--count",
                str(share),
                "--conns",
                str(conns),
                "--dlr",
                rurl + "/cb/dlr",
                "--ids-out",
                str(OUT / f"nodes-{count}-ids-{i}.txt"),
                "--limit-s",
                str(LIMIT_S),
                node.url,
                key,
                number,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, node in enumerate(nodes)
    ]
    loads = []
    for proc in procs:
        out, _ = proc.communicate(timeout=LIMIT_S + 30)
        line = next(ln for ln in out.splitlines() if ln.startswith("LOADJSON "))
        loads.append(json.loads(line[9:]))
    return loads


def _wait_for_callbacks(rurl: str, accepted: int) -> float | None:
    """When the receiver had every callback (time.time()), or None past the limit."""
    end = time.monotonic() + LIMIT_S
    while time.monotonic() < end:
        got = http_json(rurl + "/count")
        if got["count"] >= accepted:
            return float(got["last"])
        time.sleep(0.1)
    return None


def _figures(
    count: int,
    loads: list[dict[str, Any]],
    accepted: int,
    done_at: float | None,
    dump: Path,
    per_node: list[dict[str, Any]],
    run_alone: int,
) -> dict[str, Any]:
    t0 = min(load["started_at"] for load in loads)
    accept_end = max(load["started_at"] + load["duration_s"] for load in loads)
    id_files = [OUT / f"nodes-{count}-ids-{i}.txt" for i in range(count)]
    latencies = accept_to_callback_ms(id_files, dump)
    cpu_s = sum(node["cpu_s"] for node in per_node)
    return {
        "nodes": count,
        "accepted": accepted,
        "accept_errors": sum(load["errors"] for load in loads),
        "accepted_msgs_per_s": round(accepted / (accept_end - t0), 1),
        "end_to_end_msgs_per_s": round(accepted / (done_at - t0), 1) if done_at else None,
        "accept_to_callback_p50_ms": round(percentile(latencies, 50), 1),
        "accept_to_callback_p99_ms": round(percentile(latencies, 99), 1),
        "nodes_cpu_us_per_msg": round(cpu_s * 1e6 / max(1, accepted)),
        "per_node": per_node,
        "batches_run_alone": run_alone,
    }


def main() -> dict[str, Any]:
    binaries = find_binaries()
    if binaries is None:
        sys.exit("bench_nodes: PostgreSQL not found (apt-get install postgresql)")
    OUT.mkdir(parents=True, exist_ok=True)
    server = start(binaries)
    try:
        cases = [run_case(server, 1), run_case(server, 2)]
    finally:
        server.stop()
    rows = [
        (
            c["nodes"],
            c["accepted"],
            c["accept_errors"],
            c["accepted_msgs_per_s"],
            c["end_to_end_msgs_per_s"] or "-",
            c["accept_to_callback_p50_ms"],
            c["accept_to_callback_p99_ms"],
            c["nodes_cpu_us_per_msg"],
            max(node["peak_rss_mb"] for node in c["per_node"]),
            c["batches_run_alone"],
        )
        for c in cases
    ]
    header = (
        "nodes",
        "msgs",
        "errors",
        "accepted/s",
        "e2e msg/s",
        "acc->cb p50 ms",
        "acc->cb p99 ms",
        "cpu µs/msg",
        "RSS MB",
        "run alone",
    )
    print(table(f"scale-out on one PostgreSQL ({N:,} messages, c={CONNS} in all)", rows, header))
    one, two = (c["end_to_end_msgs_per_s"] for c in cases)
    if one and two:
        print(f"two nodes / one node, end to end: {two / one:.2f}x (same machine, same run)")
    results = {"messages": N, "cases": cases}
    save_section("nodes", results)
    return results


if __name__ == "__main__":
    main()
