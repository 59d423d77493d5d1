"""Shared helpers for the benchmarks: processes, /proc figures, wrk, percentiles, tables.

Every process started here is registered and killed (by pid) at exit, whatever happens.
Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
PY = str(ROOT / ".venv" / "bin" / "python")
SMSRELAY = str(ROOT / ".venv" / "bin" / "smsrelay")
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

_started: list[subprocess.Popen[bytes]] = []


def _cleanup() -> None:
    for proc in _started:
        stop_process(proc, deadline=3.0)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def stop_process(proc: subprocess.Popen[bytes], deadline: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


@dataclass
class Child:
    """A started process whose stdout+stderr lines are collected by a thread."""

    proc: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = "".join(self.lines[-20:])
                    raise RuntimeError(f"{pattern!r} not seen (exit {self.proc.poll()}):\n{tail}")
                self.cond.wait(min(left, 0.2))

    def stop(self, deadline: float = 10.0) -> None:
        stop_process(self.proc, deadline)


def spawn(args: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Child:
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=cwd or str(ROOT),
        start_new_session=True,
    )
    _started.append(proc)
    child = Child(proc)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            with child.cond:
                child.lines.append(raw.decode(errors="replace"))
                if len(child.lines) > 5000:  # bound memory: keep the head and the tail
                    del child.lines[100:1000]
                child.cond.notify_all()

    threading.Thread(target=pump, daemon=True).start()
    return child


# -- /proc figures --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def disk_written_bytes(pid: int) -> int:
    """Bytes the process (all its threads) caused to be written to storage (/proc/PID/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_mb(pid: int) -> float:
    return status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


class CpuMeter:
    """CPU seconds and wall time of one process over a phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu0 = cpu_seconds(pid)
        self.t0 = time.monotonic()

    def result(self) -> dict[str, float]:
        cpu = cpu_seconds(self.pid) - self.cpu0
        wall = time.monotonic() - self.t0
        return {"cpu_s": round(cpu, 2), "cpu_pct": round(100 * cpu / wall, 1) if wall else 0}


# -- misc -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def http_json(url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if data is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def accept_to_callback_ms(id_files: list[Path], dump: Path) -> list[float]:
    """Each callback's delay after its message was accepted: the load generator's
    "message_id accepted_at" lines against the receiver's "kind message_id arrival" dump."""
    accepted_at = {}
    for ids in id_files:
        for row in ids.read_text().split("\n"):
            if row:
                mid, at = row.split()
                accepted_at[mid] = float(at)
    delays = []
    for row in dump.read_text().split("\n"):
        if row:
            _, mid, arrived = row.split()
            if mid in accepted_at:
                delays.append((float(arrived) - accepted_at[mid]) * 1000)
    return delays


def wait_until(cond: Any, timeout: float, every: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("bench: installing wrk (apt-get)", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=240)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, timeout=240)
    path = shutil.which("wrk")
    if not path:
        raise RuntimeError("wrk could not be installed")
    return path


def wrk_send(
    gw: Gateway,
    env: dict[str, str],
    *,
    connections: int,
    duration: float,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """wrk with wrk_send.lua's mixed bodies on the gateway's POST /v1/vn/send, plus the
    gateway's CPU over the run and its peak RSS."""
    cpu = CpuMeter(gw.child.pid)
    result = run_wrk(
        gw.url + "/v1/vn/send",
        connections=connections,
        duration=duration,
        script=str(BENCH / "wrk_send.lua"),
        env={"SEND_KEY": gw.key, "SEND_FROM": gw.number, **env},
        timeout=timeout,
    )
    result.update(cpu.result())
    result["peak_rss_mb"] = round(peak_rss_mb(gw.child.pid), 1)
    return result


def run_wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    script: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Run wrk; the Lua script's done() prints one line 'WRKJSON {...}' that we return."""
    wrk = ensure_wrk()
    args = [
        wrk,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "10s",
    ]
    args += ["-s", script or str(BENCH / "wrk_stats.lua"), url]
    full_env = dict(os.environ)
    full_env.update(env or {})
    done = subprocess.run(
        args, capture_output=True, check=False, text=True, env=full_env, timeout=timeout
    )
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return dict(json.loads(line[8:]))
    raise RuntimeError(f"wrk printed no figures:\n{done.stdout}\n{done.stderr}")


# -- the gateway and the simulator ----------------------------------------------------------


BASE_ENV = {
    "SMSRELAY_LOG_LEVEL": "WARNING",
    "SMSRELAY_DEMO_CREDIT_EUR": "100000000",
    "SMSRELAY_DEMO": "true",  # made with a separate simulator too (the default: built-in only)
    "SMSRELAY_ALLOW_PRIVATE_WEBHOOKS": "true",
    "SMSRELAY_BUILTIN_SMSC_PORT": "0",
    "SMSRELAY_BUILTIN_SMSC_CONTROL_PORT": "0",
}


@dataclass
class Gateway:
    child: Child
    port: int
    key: str
    number: str
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "smsrelay.db"


def start_gateway(
    data_dir: Path,
    *,
    smsc: str | None = None,
    env: dict[str, str] | None = None,
    fresh: bool = True,
) -> Gateway:
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [SMSRELAY, "serve", "--data-dir", str(data_dir), "--port", str(port)]
    if smsc:
        args += ["--smsc", smsc]
    child = spawn(args, env={**BASE_ENV, **(env or {})})
    demo = child.wait_for(r"demo account: apiKey=(\S+) number=(\S+)")
    child.wait_for(r"listening on http://[\d.]+:(\d+)")
    return Gateway(child, port, demo.group(1), demo.group(2), data_dir)


def find_db(data_dir: Path) -> Path:
    found = sorted(data_dir.glob("*.db")) + sorted(data_dir.glob("*.sqlite*"))
    if not found:
        raise RuntimeError(f"no database file in {data_dir}")
    return found[0]


@dataclass
class Smsc:
    child: Child
    port: int
    control: int

    @property
    def control_url(self) -> str:
        return f"http://{HOST}:{self.control}"

    def stats(self) -> dict[str, Any]:
        return dict(http_json(self.control_url + "/stats"))


def start_smsc(*extra: str) -> Smsc:
    args = [SMSRELAY, "smsc", "--port", "0", "--control-port", "0", "--delivery-rate", "1.0"]
    env = {"SMSRELAY_LOG_LEVEL": "WARNING"}
    # What-if runs: BENCH_SMSC_PYTHONPATH=/tmp/scratch/src runs the simulator from a patched copy.
    if os.environ.get("BENCH_SMSC_PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["BENCH_SMSC_PYTHONPATH"]
    child = spawn([*args, *extra], env=env)
    match = child.wait_for(r"listening on 127\.0\.0\.1:(\d+) \(control http://127\.0\.0\.1:(\d+)\)")
    return Smsc(child, int(match.group(1)), int(match.group(2)))


def smsc_url(smsc: Smsc) -> str:
    return f"smpp://smsrelay:smsrelay@{HOST}:{smsc.port}"


# -- output ---------------------------------------------------------------------------------


def table(title: str, rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    cells = [tuple(_fmt(c) for c in row) for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"== {title} =="]
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def save_section(name: str, data: dict[str, Any]) -> None:
    """Each script writes bench/out/<name>.json; run-all merges them into results.json."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
