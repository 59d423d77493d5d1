"""Benchmark — the connection cap under floods: what clients lose at `http_max_connections`
while a flood of connections keeps it full.

A real `smsrelay serve` (built-in SMSC, SQLite, a fixed Sunday clock so quiet hours hold every
message: the dispatcher is idle) with a small cap (60). Each scenario, BENCH_CAP_SECONDS (7)
long: a flood (cap_load.py, its own process) opens connections at RATE a second, open loop:
  idle     connections that send nothing (over https: sockets that never say hello)
  onereq   one send each, its answer read, then silent until the gateway closes them
from the clients' own address (127.0.0.1 for both) or another one (the clients on 127.0.0.3,
the flood on 127.0.0.2); 0.5 s after it starts (the cap is full), the clients (cap_load.py,
another process):
  pool     4 keep-alive connections sending back to back
  pausing  4 keep-alive connections pausing 0.3 s between sends
  newconn  4 workers opening a new connection per send, 0.1 s between sends
By default the pool runs alone (it keeps the gateway's core busy), then pausing and newconn
together; `--clients separately`: one kind per run; `--clients together`: all three at once
(a flood while the gateway is busy). With no flood, all three at once (the cap is not
reached). A pooled connection found closed before a send is opened again first, as an HTTP
client's pool does; a send is lost when it is cut before its answer, answered 503 (or
anything but 200), or has no connection. Per row: sends, answered 200, lost (cut / 503 /
other), % lost, pooled connections reopened, "cut, stored" (sends stored but not answered:
those a client's retry would duplicate; each send's text carries its run and client kind),
p99 of the answered, the flood's rate achieved (connections/s), the gateway's CPU over the
clients' run, and the connections it reclaimed and turned away (its /health). Then a new
connection's first request cut, the clients' and the one-request floods' own. Over https
the flood is `nohello`: sockets that never say hello (a certificate made with openssl).
A gateway that hangs or dies fails its runs (every wait has a deadline), not the script;
every process is stopped by pid at the end.

Usage: .venv/bin/python bench/bench_cap.py [--rate 200] [--seconds 7] [--cap 60]
           [--clients split|separately|together] [--sources same,other]
           [--floods none,idle,onereq,nohello]
           (writes bench/out/cap.json; about 110 s by default)
Knobs: BENCH_CAP_RATE, BENCH_CAP_SECONDS (the defaults of --rate and --seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from collect import machine
from common import (
    BASE_ENV,
    BENCH,
    HOST,
    PY,
    SMSRELAY,
    Child,
    CpuMeter,
    free_port,
    save_section,
    spawn,
    table,
    wait_until,
)

LOAD = str(BENCH / "cap_load.py")
FIXED = {"SMSRELAY_FIXED_CLOCK": "2026-03-01T15:00:00+01:00"}
WARMUP_S = 0.5  # the flood fills the cap before the clients start
TAIL_S = 0.5  # and keeps on a little after they stop
KINDS = ("pool", "pausing", "newconn")
# The clients run together, or in groups one after the other: the pool sending back to back
# keeps the gateway's core busy (~80 %), which changes what the others lose (see bench/README)
GROUPS = {
    "split": [("pool",), ("pausing", "newconn")],
    "separately": [(kind,) for kind in KINDS],
    "together": [KINDS],
}
SOURCES = {"same": ("127.0.0.1", "127.0.0.1"), "other": ("127.0.0.3", "127.0.0.2")}
UNVERIFIED = ssl.create_default_context()
UNVERIFIED.check_hostname = False
UNVERIFIED.verify_mode = ssl.CERT_NONE  # the bench's own throwaway certificate


class Gateway:
    def __init__(
        self, child: Child, scheme: str, port: int, key: str, number: str, data_dir: Path
    ) -> None:
        self.child, self.scheme, self.port, self.key, self.number = (
            child,
            scheme,
            port,
            key,
            number,
        )
        self.db = data_dir / "smsrelay.db"

    def stored(self, tag: str) -> dict[str, int]:
        """The messages stored from one run, by who sent them (the text's last word)."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute(
                "SELECT text, COUNT(*) FROM messages WHERE text LIKE ? GROUP BY text",
                (f"% {tag}-%",),
            ).fetchall()
        return {text.rsplit("-", 1)[1]: count for text, count in rows}

    def health(self) -> dict[str, int]:
        url = f"{self.scheme}://{HOST}:{self.port}/health"
        context = UNVERIFIED if self.scheme == "https" else None
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return dict(json.loads(response.read())["http"])


def start_gateway(data_dir: Path, cap: int, tls: tuple[Path, Path] | None) -> Gateway:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**BASE_ENV, **FIXED, "SMSRELAY_HTTP_MAX_CONNECTIONS": str(cap)}
    if tls:
        env |= {"SMSRELAY_HTTP_TLS_CERT": str(tls[0]), "SMSRELAY_HTTP_TLS_KEY": str(tls[1])}
    child = spawn([SMSRELAY, "serve", "--data-dir", str(data_dir), "--port", str(port)], env=env)
    demo = child.wait_for(r"demo account: apiKey=(\S+) number=(\S+)")
    scheme = child.wait_for(r"listening on (https?)://").group(1)
    return Gateway(child, scheme, port, demo.group(1), demo.group(2), data_dir)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def capjson(lines: list[str], what: str) -> dict[str, Any]:
    for line in lines:
        if line.startswith("CAPJSON "):
            return dict(json.loads(line[8:]))
    tail = "\n".join(line.rstrip("\n") for line in lines[-20:])
    raise RuntimeError(f"{what} printed no figures:\n{tail}")


def settle(gw: Gateway) -> dict[str, int]:
    """The gateway's front door once the last run's sockets are gone (5 s at most)."""
    figures: dict[str, int] = {}

    def quiet() -> bool:
        try:
            figures.update(gw.health())
        except OSError:  # (a timeout too)
            return False
        return figures["connections"] <= 1  # (this request's own)

    wait_until(quiet, timeout=5.0, every=0.2)
    if not figures:
        raise RuntimeError("the gateway does not answer /health")
    return figures


def run_scenario(
    gw: Gateway,
    flood: str | None,
    source: str,
    kinds: tuple[str, ...],
    args: argparse.Namespace,
    tag: str,
) -> dict[str, Any]:
    if gw.child.proc.poll() is not None:
        raise RuntimeError(f"the gateway exited ({gw.child.proc.returncode})")
    clients_at, flood_at = SOURCES[source]
    before = settle(gw)
    flooder = clients = None
    try:
        if flood:
            flooder = spawn(
                [
                    *(PY, LOAD, "flood", flood, str(gw.port), flood_at, str(args.rate)),
                    *(str(args.seconds + WARMUP_S + TAIL_S), gw.key, gw.number, tag),
                ]
            )
            flooder.wait_for("FLOOD started", timeout=10)
            time.sleep(WARMUP_S)
        cpu = CpuMeter(gw.child.pid)
        command = [PY, LOAD, "clients", ",".join(kinds), str(gw.port), clients_at]
        command += [str(args.seconds), gw.key, gw.number, tag]
        clients = spawn(command + (["--tls"] if gw.scheme == "https" else []))
        # every send and connect has its own deadline (10 s, 3 s): the run ends by then
        clients.wait_for("CAPJSON", timeout=args.seconds + 30)
        result: dict[str, Any] = {"clients": capjson(clients.lines, "the clients")}
        result["gateway_cpu_pct"] = cpu.result()["cpu_pct"]
        if flooder:
            flooder.wait_for("CAPJSON", timeout=TAIL_S + 15)
            result["flood"] = capjson(flooder.lines, "the flood")
    finally:
        for child in (clients, flooder):
            if child is not None:
                child.stop(deadline=3)
    after = settle(gw)
    for counter in ("reclaimed", "turned_away"):
        result[counter] = after[counter] - before[counter]
    stored = gw.stored(tag)
    for kind, figures in result["clients"].items():
        figures["stored"] = stored.get(kind, 0)
    if flooder:
        result["flood"]["stored"] = stored.get("flood", 0)
    return result


def rows_of(label: str, source: str, run: dict[str, Any]) -> list[tuple[Any, ...]]:
    flood = run.get("flood") or {}
    rows = []
    for kind, c in run["clients"].items():
        lost = c["attempted"] - c["ok"]
        rows.append(
            (
                label,
                source,
                kind,
                c["attempted"],
                c["ok"],
                f"{c['cut']}/{c['refused']}/{c['other']}",
                round(100 * lost / c["attempted"], 2) if c["attempted"] else float("nan"),
                c["reopened"],
                c["stored"] - c["ok"],
                c["p99_ms"] if c["p99_ms"] is not None else float("nan"),
                flood.get("rate_achieved", "-"),
                run["gateway_cpu_pct"],
                run["reclaimed"],
                run["turned_away"],
            )
        )
    return rows


HEADER = (
    "flood",
    "from",
    "client",
    "sends",
    "200",
    "lost cut/503/other",
    "% lost",
    "reopened",
    "cut, stored",
    "p99 ms",
    "flood conn/s",
    "gw cpu %",
    "reclaimed",
    "turned away",
)


def plan(args: argparse.Namespace) -> list[tuple[str, str | None, str]]:
    """(protocol, flood, source) of each scenario, in order."""
    floods = args.floods.split(",")
    sources = args.sources.split(",")
    scenarios: list[tuple[str, str | None, str]] = [("http", None, "same")] * ("none" in floods)
    scenarios += [("http", f, s) for f in ("idle", "onereq") if f in floods for s in sources]
    if "nohello" in floods:
        scenarios += [("https", "idle", s) for s in sources]
    return scenarios


def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "cap": args.cap,
        "rate": args.rate,
        "seconds": args.seconds,
        "clients": args.clients,
        "runs": [],
    }
    rows: list[tuple[Any, ...]] = []
    groups = GROUPS[args.clients]
    with tempfile.TemporaryDirectory(prefix="bench-cap-") as temp:
        folder = Path(temp)
        gateways: dict[str, Gateway] = {}
        try:
            for protocol, flood, source in plan(args):
                if protocol not in gateways:
                    tls = make_certificate(folder) if protocol == "https" else None
                    gateways[protocol] = start_gateway(folder / protocol, args.cap, tls)
                label = {None: "none", "idle": "idle", "onereq": "one-request"}[flood]
                if protocol == "https":
                    label = "no-hello (https)"
                # with no flood the cap is never reached: the clients run at once
                for kinds in groups if flood else GROUPS["together"]:
                    print(
                        f"bench: cap {label} flood, {source} address, {'+'.join(kinds)}",
                        file=sys.stderr,
                        flush=True,
                    )
                    tag = f"r{len(results['runs'])}"
                    try:
                        run = run_scenario(gateways[protocol], flood, source, kinds, args, tag)
                    except RuntimeError as failed:  # (a process hung or died: bounded)
                        print(f"bench: that run failed: {failed}", file=sys.stderr, flush=True)
                        run = {"clients": {}, "error": str(failed)}
                        failed_row = (label, source if flood else "-", "+".join(kinds), "failed")
                        rows.append(failed_row + ("-",) * (len(HEADER) - len(failed_row)))
                    run.update(protocol=protocol, flood_kind=flood, source=source)
                    results["runs"].append(run)
                    rows += rows_of(label, source if flood else "-", run)
        finally:
            for gw in gateways.values():
                gw.child.stop(deadline=5)
    together = {"split": "the pool alone, the others together"}.get(args.clients, args.clients)
    print(
        table(
            f"connection cap {args.cap}, floods of {args.rate:g} connections/s, "
            f"{args.seconds:g} s each, clients {together}",
            rows,
            HEADER,
        )
    )
    print(first_requests(results["runs"]))
    results["machine"] = measured_on()
    print(f"measured {results['machine']}")
    return results


def measured_on() -> str:
    """When and on what: collect.py's machine facts, as one line."""
    facts = machine()
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    return f"{when}, {facts['nproc']} cores ({facts['cpu_model']}), Python {facts['python']}"


def first_requests(runs: list[dict[str, Any]]) -> str:
    """A new connection's first request cut: the clients' (every new connection's, the
    newconn workers' and the pools' reopened ones) and the one-request floods' own."""
    sent = cut = flood_sent = flood_cut = 0
    for run in runs:
        for c in run["clients"].values():
            sent += c["first_sent"]
            cut += c["first_cut"]
        flood = run.get("flood") or {}
        flood_sent += flood.get("sent", 0)
        flood_cut += flood.get("cut", 0)
    return (
        f"a new connection's first request cut: clients {cut:,} of {sent:,}; "
        f"one-request floods {flood_cut:,} of {flood_sent:,} (their own)"
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=float, default=float(os.environ.get("BENCH_CAP_RATE", "200"))
    )
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("BENCH_CAP_SECONDS", "7"))
    )
    parser.add_argument("--cap", type=int, default=60)
    parser.add_argument(
        "--clients",
        choices=sorted(GROUPS),
        default="split",
        help="split: the pool alone, then the pausing pool and newconn together (default)",
    )
    parser.add_argument(
        "--floods", default="none,idle,onereq,nohello", help="of none,idle,onereq,nohello"
    )
    parser.add_argument("--sources", default="same,other", help="of same,other")
    return parser.parse_args(argv)


if __name__ == "__main__":
    data = main(parse(sys.argv[1:]))
    save_section("cap", data)
    sys.exit(0)
