"""Benchmark 5 — the peer in the same run: Kannel (Debian's `kannel` package: bearerbox +
smsbox) against smsrelay, both pointed at the SAME SMSC simulator (`smsrelay smsc`, its own
process, a fresh one per phase) and the same callback receiver (bench/receiver.py's handlers).

Phases (each with a fresh simulator and a fresh system under test, so no backlog leaks across):
  accept        wrk (1 thread, c=BENCH_CONNS, BENCH_ACCEPT_SECONDS): smsrelay POST /v1/vn/send
                (wrk_send.lua) vs Kannel GET /cgi-bin/sendsms (the same Lua logic and text mix,
                generated at run time); without receipts, then with receipts requested (urlDlr
                / dlr-mask=31 + dlr-url to the receiver). BOTH are connected to the simulator
                and dispatching while they accept (Kannel cannot hold; smsrelay runs with quiet
                hours off), which is not bench_accept.py's idle-dispatcher figure.
  end to end    N messages (closed loop, c=BENCH_CONNS): smsrelay via bench_e2e.run_case
                (loadgen.py), Kannel via the same closed loop over GET (`--loadgen` below);
                submits counted at the simulator's /stats, DLR callbacks at the receiver; with
                the simulator answering at once, with --resp-delay-ms 20, and with
                --resp-delay-ms 20 --receipt-delay-ms 40 (receipts after the resp).
  memory        peak RSS (VmHWM) of bearerbox + smsbox vs the gateway's, per phase.

Kannel: bearerbox + smsbox, one transceiver SMPP bind (max-pending-submits 100 = smsrelay's
window), store-type file (its usual setup; written behind, not fsync'd per message), internal
DLR storage, logs at warning level. Its dlr-url is fetched with GET, so the receiver runs here
with receiver.py's own handlers and one more route (GET on /cb/{kind}); the callback kind
carries Kannel's DLR type (%d) and the request's number, for accept-to-callback latency.

Usage: .venv/bin/python bench/bench_kannel.py          (writes bench/out/kannel.json)
       .venv/bin/python bench/bench_kannel.py --install (only install Kannel, service off)
Knobs: BENCH_ACCEPT_SECONDS (8), BENCH_CONNS (64), BENCH_KANNEL_E2E_N (5000),
BENCH_KANNEL_E2E_REPEAT (3: runs of the instant case per side, alternating, median shown),
       BENCH_KANNEL_E2E_LIMIT_S (12), BENCH_KANNEL_DLR_MASK (31).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from common import (
    CLK_TCK,
    HOST,
    OUT,
    PY,
    Child,
    CpuMeter,
    free_port,
    http_json,
    peak_rss_mb,
    percentile,
    run_wrk,
    save_section,
    smsc_url,
    spawn,
    start_gateway,
    start_smsc,
    stop_process,
    table,
    wait_until,
    wrk_send,
)

SECONDS = float(os.environ.get("BENCH_ACCEPT_SECONDS", "8"))
CONNS = int(os.environ.get("BENCH_CONNS", "64"))
E2E_N = int(os.environ.get("BENCH_KANNEL_E2E_N", "5000"))
# The instant case runs this many times on each side, alternating; the median run is shown.
E2E_REPEAT = int(os.environ.get("BENCH_KANNEL_E2E_REPEAT", "3"))
E2E_LIMIT_S = float(os.environ.get("BENCH_KANNEL_E2E_LIMIT_S", "12"))
DLR_MASK = int(os.environ.get("BENCH_KANNEL_DLR_MASK", "31"))
WINDOW = 100
SENDER = "33757000001"
USER = PASSWORD = "bench"
STOP_DEADLINE_S = 5.0  # SIGTERM, then SIGKILL by pid (bearerbox may wait forever for queues)
LIVE_DISPATCH = {"SMSRELAY_DEMO_QUIET_HOURS": "false"}

# -- installing Kannel ------------------------------------------------------------------------


def find_box(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def ensure_kannel() -> tuple[str, str]:
    """bearerbox and smsbox paths; installs Debian's package (and switches its service off)."""
    if not (find_box("bearerbox") and find_box("smsbox")):
        print("bench: installing kannel (apt-get)", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "kannel"],
            check=True,
            env=env,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
        disable_debian_service()
    bearerbox, smsbox = find_box("bearerbox"), find_box("smsbox")
    if not (bearerbox and smsbox):
        raise RuntimeError("kannel is installed but bearerbox/smsbox are not on this machine")
    return bearerbox, smsbox


def disable_debian_service() -> None:
    """The package's init script may start its own bearerbox/wapbox: stop it, keep it off."""

    def run(*args: str) -> None:
        subprocess.run(
            list(args),
            check=False,
            timeout=60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        run("systemctl", "disable", "--now", "kannel")
    elif Path("/etc/init.d/kannel").exists():
        run("/etc/init.d/kannel", "stop")
        if shutil.which("update-rc.d"):
            run("update-rc.d", "kannel", "disable")


# -- running Kannel ---------------------------------------------------------------------------


def kannel_conf(work: Path, admin: int, box: int, sendsms: int, smsc_port: int) -> str:
    return f"""\
group = core
admin-port = {admin}
admin-interface = {HOST}
admin-password = bench
status-password = bench
admin-allow-ip = "{HOST}"
smsbox-port = {box}
smsbox-interface = {HOST}
box-allow-ip = "{HOST}"
log-level = 2
dlr-storage = internal
store-type = file
store-location = "{work / "kannel.store"}"

group = smsc
smsc = smpp
smsc-id = sim
host = {HOST}
port = {smsc_port}
transceiver-mode = true
smsc-username = kannel
smsc-password = kannel
system-type = "bench"
max-pending-submits = {WINDOW}
enquire-link-interval = 30
log-level = 2

group = smsbox
bearerbox-host = {HOST}
bearerbox-port = {box}
sendsms-port = {sendsms}
sendsms-interface = {HOST}
log-level = 2

group = sendsms-user
username = {USER}
password = {PASSWORD}
max-messages = 10
concatenation = true

group = sms-service
keyword = default
text = "ok"
"""


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class Kannel:
    """bearerbox then smsbox on one kannel.conf in a temp dir; stopped by pid."""

    def __init__(self, smsc_port: int) -> None:
        self.bearerbox_bin, self.smsbox_bin = ensure_kannel()
        self.work = Path(tempfile.mkdtemp(prefix="bench-kannel-"))
        self.admin, self.box, self.sendsms = free_port(), free_port(), free_port()
        self.conf = self.work / "kannel.conf"
        self.conf.write_text(kannel_conf(self.work, self.admin, self.box, self.sendsms, smsc_port))
        self.bearerbox: Child | None = None
        self.smsbox: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.sendsms}"

    def status(self) -> str:
        url = f"http://{HOST}:{self.admin}/status.txt?password=bench"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode(errors="replace"))

    def _ready(self, child: Child, what: str, cond: Any, timeout: float = 15.0) -> None:
        def check() -> bool:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{what} exited ({child.proc.returncode}):\n{self.tail(child)}")
            try:
                return bool(cond())
            except OSError:
                return False

        if not wait_until(check, timeout):
            raise RuntimeError(f"{what} not ready in {timeout:.0f} s:\n{self.tail(child)}")

    @staticmethod
    def tail(child: Child) -> str:
        with child.cond:
            return "".join(child.lines[-15:])

    def start(self) -> Kannel:
        # -v 2: warnings and worse on stderr (the default is debug: hundreds of MB per run)
        self.bearerbox = spawn([self.bearerbox_bin, "-v", "2", str(self.conf)], cwd=str(self.work))
        # smsbox panics if bearerbox is not listening yet: wait for its admin port, then its
        # box port, then the SMPP bind
        self._ready(self.bearerbox, "bearerbox admin port", lambda: port_open(self.admin))
        self._ready(self.bearerbox, "bearerbox box port", lambda: port_open(self.box))
        self._ready(self.bearerbox, "bearerbox SMPP bind", self._smsc_online)
        self.smsbox = spawn([self.smsbox_bin, "-v", "2", str(self.conf)], cwd=str(self.work))
        self._ready(self.smsbox, "smsbox sendsms port", lambda: port_open(self.sendsms))
        self._ready(self.smsbox, "smsbox connected", lambda: "smsbox:" in self.status())
        return self

    def _smsc_online(self) -> bool:
        return any("sim[sim]" in ln and "online" in ln for ln in self.status().splitlines())

    def warnings(self) -> dict[str, Any]:
        """How many WARNING/ERROR lines the boxes printed, and the commonest (ids masked)."""
        found: list[str] = []
        for child in (self.bearerbox, self.smsbox):
            if child is not None:
                with child.cond:
                    found += [ln for ln in child.lines if " WARNING: " in ln or " ERROR: " in ln]
        kinds = Counter(
            re.sub(r"\b[0-9a-fA-F]{5,}\b|\d+", "N", line.split("] ", 2)[-1].strip())
            for line in found
        )
        return {"count": len(found), "top": [f"{n} x {text}" for text, n in kinds.most_common(3)]}

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in (self.bearerbox, self.smsbox) if c and c.proc.poll() is None]

    def peak_rss_mb(self) -> dict[str, float]:
        bb = peak_rss_mb(self.bearerbox.pid) if self.bearerbox else 0.0
        sb = peak_rss_mb(self.smsbox.pid) if self.smsbox else 0.0
        return {"bearerbox": round(bb, 1), "smsbox": round(sb, 1), "total": round(bb + sb, 1)}

    def stop(self) -> None:
        try:
            for child in (self.smsbox, self.bearerbox):  # smsbox first: it talks to bearerbox
                if child is not None:
                    stop_process(child.proc, deadline=STOP_DEADLINE_S)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)


class CpuMeters:
    """CPU % summed over several processes (Kannel's two boxes)."""

    def __init__(self, pids: list[int]) -> None:
        self.meters = [CpuMeter(pid) for pid in pids]

    def result(self) -> dict[str, float]:
        parts = [m.result() for m in self.meters]
        return {
            "cpu_s": round(sum(p["cpu_s"] for p in parts), 2),
            "cpu_pct": round(sum(p["cpu_pct"] for p in parts), 1),
        }


# -- the receiver (receiver.py's handlers, plus GET: Kannel fetches dlr-url with GET) ----------


def receiver_main(port: int) -> None:
    import asyncio

    import receiver
    import uvloop
    from aiohttp import web

    async def main() -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/count", receiver.count)
        app.router.add_post("/dump", receiver.dump)
        app.router.add_post("/reset", receiver.reset)
        app.router.add_route("*", "/cb/{kind}", receiver.callback)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=1024).start()
        print(f"receiver: listening on http://{HOST}:{port}", flush=True)
        await asyncio.Event().wait()  # until SIGTERM from the benchmark that started it

    uvloop.run(main())


def start_receiver() -> tuple[Child, str]:
    port = free_port()
    child = spawn([PY, str(Path(__file__).resolve()), "--receiver", str(port)])
    child.wait_for("receiver: listening")
    return child, f"http://{HOST}:{port}"


def kannel_dlr_param(rurl: str, suffix: str = "") -> str:
    """'&dlr-mask=..&dlr-url=..' for a sendsms GET; %d is Kannel's DLR type (1, 2, 8, 16...)."""
    target = f"{rurl}/cb/k%d{suffix}"
    return f"&dlr-mask={DLR_MASK}&dlr-url={urllib.parse.quote(target, safe='')}"


def callbacks_expected_per_message() -> int:
    """With receipts to the phone (1|2) one final DLR; with 8 (SMSC ack) one more."""
    return (1 if DLR_MASK & 3 else 0) + (1 if DLR_MASK & 8 else 0)


# -- the load: wrk for accept, a closed loop (like loadgen.py --count) for end to end ---------

WRK_KANNEL_LUA = r"""
-- GET /cgi-bin/sendsms with the same mix as wrk_send.lua: 60% short GSM-7, 20% long GSM-7
-- (3 parts), 20% UCS-2 (2 parts). Env: K_USER, K_PASS, K_FROM; K_DLR (optional: the
-- '&dlr-mask=..&dlr-url=..' suffix, already URL-encoded). Prints one 'WRKJSON {...}' line.
local user = os.getenv("K_USER")
local pass = os.getenv("K_PASS")
local from = os.getenv("K_FROM")
local dlr = os.getenv("K_DLR") or ""

local function enc(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
local short = enc("Votre code de confirmation est 482913. Il expire dans 10 minutes.")
local long = enc(string.sub(
  string.rep("Bonjour, votre colis n12345 sera livre demain entre 9h et 12h. ", 6), 1, 450))
local ucs2 = enc("Привет! Ваш заказ №4821 готов к выдаче. Спасибо, что выбрали нас 🙂 " ..
                 "Ответьте СТОП, чтобы отписаться.") .. "&coding=2&charset=UTF-8"
local prefix = "/cgi-bin/sendsms?username=" .. enc(user) .. "&password=" .. enc(pass) ..
               "&from=" .. enc(from)

local threads = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  n, ok, bad = 0, 0, 0
end

function request()
  n = n + 1
  local r = n % 10
  local text
  if r < 6 then text = short elseif r < 8 then text = long else text = ucs2 end
  local to = string.format("336%08d", (id * 1000003 + n) % 100000000)
  return wrk.format("GET", prefix .. "&to=" .. to .. "&text=" .. text .. dlr)
end

function response(status, headers, body)
  -- Kannel: '202 Accepted' + '0: Accepted for delivery' (or 200 '0: Sent.')
  if (status == 202 or status == 200) and string.sub(body, 1, 2) == "0:" then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 3 then
      io.stderr:write("bad answer " .. status .. ": " .. string.sub(body, 1, 200) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok") or 0)
    bad_total = bad_total + (t:get("bad") or 0)
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests": %d, "accepted": %d, "refused": %d, "duration_s": %.3f, "rps": %.1f, ' ..
    '"accepted_per_s": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, "max_ms": %.3f, ' ..
    '"socket_errors": %d}\n',
    summary.requests, ok_total, bad_total, secs, summary.requests / secs, ok_total / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000, e.connect + e.read + e.write + e.timeout))
end
"""


def kannel_request(host: str, port: int, n: int, rurl: str) -> bytes:
    """One sendsms GET; the same text mix (n % 10) as loadgen.py's closed loop."""
    import loadgen

    r = n % 10
    text = loadgen.SHORT if r < 6 else loadgen.LONG if r < 8 else loadgen.UCS2
    query = {
        "username": USER,
        "password": PASSWORD,
        "from": SENDER,
        "to": f"336{n % 100000000:08d}",
        "text": text,
    }
    if r >= 8:
        query |= {"coding": "2", "charset": "UTF-8"}
    path = "/cgi-bin/sendsms?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    if rurl:
        path += kannel_dlr_param(rurl, f"-{n}")
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def loadgen_main(url: str, count: int, conns: int, rurl: str, ids_out: str, limit_s: float) -> None:
    """Closed loop, as loadgen.py --count: exactly COUNT sends over CONNS keep-alive connections;
    IDS_OUT gets "n accepted_at" lines. Prints one 'LOADJSON {...}' line."""

    import loadgen
    import uvloop

    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 80

    def accepted_id(n: int, head: bytes, body: bytes) -> int | None:
        ok = head.startswith((b"HTTP/1.1 202", b"HTTP/1.1 200")) and body.startswith(b"0:")
        return n if ok else None

    async def run() -> dict[str, Any]:
        return await loadgen.drive(
            host,
            port,
            lambda n: kannel_request(host, port, n, rurl),
            accepted_id,
            count,
            conns,
            ids_out,
            limit_s,
        )

    print("LOADJSON " + json.dumps(uvloop.run(run())), flush=True)


# -- phase 1: accept --------------------------------------------------------------------------


def accept_kannel(with_dlr: bool, lua: Path) -> dict[str, Any]:
    smsc = start_smsc()
    receiver = kannel = None
    try:
        env = {"K_USER": USER, "K_PASS": PASSWORD, "K_FROM": SENDER, "K_DLR": ""}
        if with_dlr:
            receiver, rurl = start_receiver()
            env["K_DLR"] = kannel_dlr_param(rurl)
        kannel = Kannel(smsc.port)
        kannel.start()
        cpu = CpuMeters(kannel.pids)
        res = run_wrk(
            kannel.url + "/cgi-bin/sendsms",
            connections=CONNS,
            duration=SECONDS,
            script=str(lua),
            env=env,
            timeout=SECONDS + 30,
        )
        res.update(cpu.result())
        res["peak_rss_mb"] = kannel.peak_rss_mb()
        res["smsc_submits_by_end"] = smsc.stats()["accepted"]
        if receiver is not None:
            res["callbacks_by_end"] = http_json(rurl + "/count")["count"]
        return res
    finally:
        if kannel is not None:
            kannel.stop()
        if receiver is not None:
            receiver.stop()
        smsc.child.stop()


def accept_smsrelay(with_dlr: bool) -> dict[str, Any]:
    smsc = start_smsc()
    receiver = gw = None
    try:
        env = {"SEND_THREADS": "1"}
        if with_dlr:
            receiver, rurl = start_receiver()
            env["SEND_DLR"] = rurl + "/cb/dlr"
        label = "dlr" if with_dlr else "plain"
        gw = start_gateway(
            OUT / f"data-kannel-cmp-accept-{label}", smsc=smsc_url(smsc), env=LIVE_DISPATCH
        )
        res = wrk_send(gw, env, connections=CONNS, duration=SECONDS, timeout=SECONDS + 30)
        res["smsc_submits_by_end"] = smsc.stats()["accepted"]
        if receiver is not None:
            res["callbacks_by_end"] = http_json(rurl + "/count")["count"]
        return res
    finally:
        if gw is not None:
            gw.child.stop()
        if receiver is not None:
            receiver.stop()
        smsc.child.stop()


# -- phase 2: end to end ----------------------------------------------------------------------


def e2e_kannel(label: str, smsc_args: list[str]) -> dict[str, Any]:
    import threading

    smsc = start_smsc(*smsc_args)
    receiver = kannel = None
    samples: list[tuple[float, int, int, int]] = []  # (t, submits, receipts acked, callbacks)
    stop = threading.Event()
    work = Path(tempfile.mkdtemp(prefix="bench-kannel-e2e-"))
    try:
        receiver, rurl = start_receiver()
        kannel = Kannel(smsc.port)
        kannel.start()

        def sample() -> None:
            while not stop.is_set():
                try:
                    st = smsc.stats()
                    cb = http_json(rurl + "/count")["count"]
                    samples.append((time.time(), st["accepted"], st["receipts_acked"], cb))
                except OSError:
                    pass
                stop.wait(0.1)

        cpu = CpuMeters(kannel.pids)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        ids_file = work / "accepted.txt"
        out = subprocess.run(
            [
                PY,
                str(Path(__file__).resolve()),
                "--loadgen",
                kannel.url,
                str(E2E_N),
                str(CONNS),
                rurl,
                str(ids_file),
                str(E2E_LIMIT_S),
            ],
            capture_output=True,
            check=False,
            text=True,
            timeout=E2E_LIMIT_S + 30,
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("LOADJSON ")), None)
        if line is None:
            raise RuntimeError(f"kannel loadgen printed no figures:\n{out.stdout}\n{out.stderr}")
        load = json.loads(line[9:])
        accepted = load["accepted"]
        want_cb = accepted * callbacks_expected_per_message()
        parts_total = sum(1 if n % 10 < 6 else 3 if n % 10 < 8 else 2 for n in range(load["sent"]))
        receipts_expected = accepted if DLR_MASK & 3 else 0  # Kannel: one receipt a message
        end = time.monotonic() + E2E_LIMIT_S
        seen, still_since = -1, time.monotonic()
        while time.monotonic() < end:  # bounded wait for every callback
            last = samples[-1] if samples else (0.0, 0, 0, 0)
            if last[3] >= want_cb:
                break
            if last[3] != seen:
                seen, still_since = last[3], time.monotonic()
            # everything reached the simulator and came back, yet no callback for 2 s: stuck
            settled = last[1] >= parts_total and last[2] >= receipts_expected
            if settled and time.monotonic() - still_since > 2.0:
                break
            time.sleep(0.1)
        stop.set()
        sampler.join(timeout=2)
        k_cpu = cpu.result()
        k_rss = kannel.peak_rss_mb()
        status_tail = [
            ln.strip() for ln in kannel.status().splitlines() if ln.startswith(("SMS:", "DLR:"))
        ]
        warnings = kannel.warnings()
        dump = work / "callbacks.txt"
        http_json(rurl + "/dump", {"path": str(dump)})
        records = [ln.split() for ln in dump.read_text().splitlines() if ln.strip()]
        accepted_at = {}
        for row in ids_file.read_text().splitlines():
            if row:
                n, at = row.split()
                accepted_at[n] = float(at)
    finally:
        stop.set()
        if kannel is not None:
            kannel.stop()
        if receiver is not None:
            receiver.stop()
        smsc.child.stop()
        shutil.rmtree(work, ignore_errors=True)

    t0 = float(load["started_at"])
    last = samples[-1] if samples else (time.time(), 0, 0, 0)

    def reached(index: int, target: int) -> float | None:
        for s in samples:
            if s[index] >= target:
                return s[0] - t0
        return None

    # callbacks: kind "k<type>-<n>" (1 delivered, 2 undelivered, 8 SMSC ack, 16 SMSC reject)
    final_times = sorted(
        float(arr)
        for kind, arr in ((r[0], r[-1]) for r in records)
        if kind.split("-")[0] in ("k1", "k2")
    )
    lat = []
    for r in records:
        kind = r[0]
        dlr_type, _, n = kind.partition("-")
        if dlr_type in ("k1", "k2") and n in accepted_at:
            lat.append((float(r[-1]) - accepted_at[n]) * 1000)
    incomplete: list[str] = []

    def rate(count: int, t: float | None, done: float, name: str) -> float | str:
        if t:
            return round(count / t, 1)
        incomplete.append(name)
        return f"{done / max(1e-9, last[0] - t0):,.0f}*"

    submit_t = reached(1, parts_total)
    receipt_t = reached(2, receipts_expected) if receipts_expected else None
    final_t = final_times[accepted - 1] - t0 if accepted and len(final_times) >= accepted else None
    all_cb_t = reached(3, want_cb)
    return {
        "label": label,
        "smsc_args": smsc_args,
        "messages": E2E_N,
        "accepted": accepted,
        "accept_errors": load["errors"],
        "parts_expected": parts_total,
        "parts_submitted": last[1],
        "receipts_expected": receipts_expected,
        "receipts_acked": last[2],
        "callbacks_expected": want_cb,
        "callbacks": last[3],
        "final_dlr_callbacks": len(final_times),
        "accepted_msgs_per_s": load["accepted_per_s"],
        "submitted_parts_per_s": rate(parts_total, submit_t, last[1], "submitted"),
        "submitted_msgs_per_s": rate(
            accepted, submit_t, last[1] * accepted / max(1, parts_total), "submitted"
        ),
        "delivered_msgs_per_s": rate(accepted, receipt_t, last[2], "delivered"),
        "end_to_end_msgs_per_s": rate(accepted, final_t, len(final_times), "final callbacks"),
        "all_callbacks_per_s": rate(want_cb, all_cb_t, last[3], "all callbacks"),
        "incomplete_stages": sorted(set(incomplete)),
        "t_accept_s": load["duration_s"],
        "t_submit_s": submit_t,
        "t_receipts_s": receipt_t,
        "t_final_callbacks_s": final_t,
        "accept_to_callback_p50_ms": round(percentile(lat, 50), 1),
        "accept_to_callback_p99_ms": round(percentile(lat, 99), 1),
        "accept_http_p99_ms": load["p99_ms"],
        "kannel": {**k_cpu, "peak_rss_mb": k_rss},
        "kannel_status": status_tail,
        "kannel_warnings": warnings,
    }


def e2e_smsrelay(label: str, smsc_args: list[str]) -> dict[str, Any]:
    import bench_e2e

    bench_e2e.N = E2E_N
    bench_e2e.CONNS = CONNS
    bench_e2e.STAGE_LIMIT_S = E2E_LIMIT_S
    return dict(bench_e2e.run_case(f"kannel-cmp-{label}", smsc_args))


# -- main -------------------------------------------------------------------------------------


def num(value: Any) -> float:
    """A figure as a float; '1,234*' (stage not finished in time) -> 1234."""
    try:
        return float(str(value).rstrip("*").replace(",", ""))
    except ValueError:
        return float("nan")


def held_accept_reference() -> dict[str, Any] | None:
    """bench_accept.py's own figure (dispatcher idle), when this run (or an earlier one) has it."""
    path = OUT / "accept.json"
    if not path.exists():
        return None
    try:
        send = json.loads(path.read_text())["gateway_send"]
    except (ValueError, KeyError):
        return None
    return {
        "accepted_per_s": send["accepted_per_s"],
        "p50_ms": send["p50_ms"],
        "p99_ms": send["p99_ms"],
        "age_s": round(time.time() - path.stat().st_mtime),
    }


E2E_CASES: tuple[tuple[str, str, list[str]], ...] = (
    ("instant", "SMSC instant", []),
    ("resp20ms", "SMSC resp 20 ms", ["--resp-delay-ms", "20"]),
    # --resp-delay-ms alone sends each receipt ~20 ms BEFORE its submit_sm_resp (the receipt is
    # not delayed, the resp is): Kannel cannot match those. Receipts 40 ms after the submit
    # come after the resp, as from a real SMSC.
    (
        "resp20ms-rcpt40ms",
        "SMSC resp 20 ms, receipt 40 ms",
        ["--resp-delay-ms", "20", "--receipt-delay-ms", "40"],
    ),
)


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median end-to-end rate (an unfinished run counts as its rate so far)."""
    ordered = sorted(results, key=lambda r: num(r["end_to_end_msgs_per_s"]))
    return ordered[len(ordered) // 2]


def kannel_version(bearerbox: str) -> str:
    done = subprocess.run(
        [bearerbox, "--version"], capture_output=True, text=True, check=False, timeout=10
    )
    for line in (done.stdout + done.stderr).splitlines():
        match = re.search(r"bearerbox version `([^']+)'", line)
        if match:
            return match.group(1)
    return "?"


def busy_cores(seconds: float = 1.0) -> tuple[float, list[str]]:
    """Cores busy (all processes) over SECONDS from /proc/stat, and the busiest processes then:
    was something else running?"""

    def machine() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def per_process() -> dict[str, tuple[str, int]]:
        ticks = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            name = text[text.find("(") + 1 : text.rfind(")")]
            fields = text.rsplit(")", 1)[1].split()
            ticks[stat.parent.name] = (name, int(fields[11]) + int(fields[12]))
        return ticks

    busy0, total0 = machine()
    procs0 = per_process()
    time.sleep(seconds)
    busy1, total1 = machine()
    procs1 = per_process()
    cores = os.cpu_count() or 1
    busy = round(cores * (busy1 - busy0) / max(1, total1 - total0), 2)
    deltas = sorted(
        (
            (t1 - procs0.get(pid, (name, 0))[1], f"{pid} {name}")
            for pid, (name, t1) in procs1.items()
        ),
        reverse=True,
    )
    top = [f"{who} {100 * d / CLK_TCK / seconds:.0f}%" for d, who in deltas[:3] if d > 0]
    return busy, top


def main() -> dict[str, Any]:
    started = time.monotonic()
    busy_before, busiest = busy_cores()
    bearerbox, _ = ensure_kannel()
    version = kannel_version(bearerbox)
    work = Path(tempfile.mkdtemp(prefix="bench-kannel-lua-"))
    try:
        lua = work / "wrk_kannel.lua"
        lua.write_text(WRK_KANNEL_LUA)
        accept = {
            "kannel_plain": accept_kannel(False, lua),
            "smsrelay_plain": accept_smsrelay(False),
            "kannel_dlr": accept_kannel(True, lua),
            "smsrelay_dlr": accept_smsrelay(True),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    e2e: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, list[Any]]] = {}
    for label, _, args in E2E_CASES:
        kannel_runs, smsrelay_runs = [], []
        for _ in range(E2E_REPEAT if label == "instant" else 1):
            kannel_runs.append(e2e_kannel(label, args))
            smsrelay_runs.append(e2e_smsrelay(label, args))
        e2e[f"kannel_{label}"] = median_run(kannel_runs)
        e2e[f"smsrelay_{label}"] = median_run(smsrelay_runs)
        runs[label] = {
            "kannel": [r["end_to_end_msgs_per_s"] for r in kannel_runs],
            "smsrelay": [r["end_to_end_msgs_per_s"] for r in smsrelay_runs],
        }

    rows: list[tuple[str, Any, Any]] = []
    for mode, name in (("plain", "no receipts"), ("dlr", f"receipts (dlr-mask={DLR_MASK})")):
        s, k = accept[f"smsrelay_{mode}"], accept[f"kannel_{mode}"]
        rows += [
            (f"accept {name}: accepted/s", s["accepted_per_s"], k["accepted_per_s"]),
            (f"accept {name}: p50 ms", s["p50_ms"], k["p50_ms"]),
            (f"accept {name}: p99 ms", s["p99_ms"], k["p99_ms"]),
            (
                f"accept {name}: HTTP errors",
                s["refused"] + s["socket_errors"],
                k["refused"] + k["socket_errors"],
            ),
            (
                f"accept {name}: submit_sm at SMSC by the end",
                s["smsc_submits_by_end"],
                k["smsc_submits_by_end"],
            ),
            (f"accept {name}: CPU % (gw | both boxes)", s["cpu_pct"], k["cpu_pct"]),
        ]
    for label, name, _ in E2E_CASES:
        s, k = e2e[f"smsrelay_{label}"], e2e[f"kannel_{label}"]
        rows += [
            (
                f"e2e {name}: msgs/s (to last final DLR)",
                s["end_to_end_msgs_per_s"],
                k["end_to_end_msgs_per_s"],
            ),
            (f"e2e {name}: submit_sm/s", s["submitted_parts_per_s"], k["submitted_parts_per_s"]),
            (f"e2e {name}: final DLR callbacks", s["callbacks"], k["final_dlr_callbacks"]),
            (
                f"e2e {name}: accept->DLR p50 ms",
                s["accept_to_callback_p50_ms"],
                k["accept_to_callback_p50_ms"],
            ),
            (
                f"e2e {name}: accept->DLR p99 ms",
                s["accept_to_callback_p99_ms"],
                k["accept_to_callback_p99_ms"],
            ),
        ]
    rss: dict[str, dict[str, float]] = {}
    for mode in ("plain", "dlr"):
        rss[f"accept {mode}"] = {
            "smsrelay": accept[f"smsrelay_{mode}"]["peak_rss_mb"],
            "kannel": accept[f"kannel_{mode}"]["peak_rss_mb"]["total"],
        }
    for label, _, _ in E2E_CASES:
        rss[f"e2e {label}"] = {
            "smsrelay": e2e[f"smsrelay_{label}"]["gateway"]["peak_rss_mb"],
            "kannel": e2e[f"kannel_{label}"]["kannel"]["peak_rss_mb"]["total"],
        }
    for phase, pair in rss.items():
        rows.append((f"peak RSS MB, {phase}", pair["smsrelay"], pair["kannel"]))
    peak = {
        "smsrelay": max(p["smsrelay"] for p in rss.values()),
        "kannel": max(p["kannel"] for p in rss.values()),
    }
    rows.append(("peak RSS MB, max (gateway | bearerbox+smsbox)", peak["smsrelay"], peak["kannel"]))

    table_rows = []
    for what, s_val, k_val in rows:
        sv, kv = num(s_val), num(k_val)
        ratio = round(sv / kv, 2) if kv and kv == kv and sv == sv else None
        table_rows.append((what, s_val, k_val, ratio))
    shown = [tuple("-" if v is None else v for v in row) for row in table_rows]
    print(
        table(
            f"smsrelay vs Kannel {version} (same SMSC simulator and receiver; accept: wrk "
            f"c={CONNS} {SECONDS:.0f}s, both dispatching; e2e: N={E2E_N:,}, c={CONNS})",
            shown,
            ("what", "smsrelay", "Kannel", "smsrelay/Kannel"),
        )
    )
    print(
        "ratio > 1: smsrelay higher (better for rates; worse for latency, memory and CPU). "
        "* = stage not finished within BENCH_KANNEL_E2E_LIMIT_S: count reached / elapsed."
    )
    print(
        f"Kannel, dlr-mask={DLR_MASK}: {callbacks_expected_per_message()} callbacks a message "
        "(type 8 SMSC ack + type 1 delivered), a receipt asked on the first part only; "
        "smsrelay: 1 callback a message, a receipt a part. Kannel's accept answer means "
        "'in bearerbox's store file' (written behind); smsrelay's means 'in SQLite, fsync'd'."
    )
    for label, name, _ in E2E_CASES:
        k = e2e[f"kannel_{label}"]
        if k["final_dlr_callbacks"] < k["accepted"]:
            print(
                f"Kannel, {name}: {k['final_dlr_callbacks']:,} of {k['accepted']:,} final DLRs; "
                f"bearerbox: {'; '.join(k['kannel_status'][2:3])}; "
                f"{k['kannel_warnings']['count']:,} warning/error lines kept, the commonest: "
                + " | ".join(k["kannel_warnings"]["top"][:2] or ["-"])
            )
    held = held_accept_reference()
    if held:
        print(
            f"reference, bench_accept.py (smsrelay, dispatcher idle: quiet hours hold; "
            f"accept.json {held['age_s']:,} s old): {held['accepted_per_s']:,.0f}/s, "
            f"p50 {held['p50_ms']:.1f} ms, p99 {held['p99_ms']:.1f} ms"
        )
    wall = round(time.monotonic() - started, 1)
    if busy_before > 0.2:
        print(
            f"warning: {busy_before:.2f} cores were busy just before the run (busiest: "
            f"{', '.join(busiest) or '-'}): the figures are not clean"
        )
    spread = runs["instant"]
    print(
        f"e2e SMSC instant: median of {len(spread['smsrelay'])} alternating runs per side "
        f"(smsrelay: {', '.join(str(v) for v in spread['smsrelay'])}; "
        f"Kannel: {', '.join(str(v) for v in spread['kannel'])})"
    )
    print(f"kannel run: {wall} s")
    return {
        "kannel_version": version,
        "connections": CONNS,
        "seconds": SECONDS,
        "e2e_n": E2E_N,
        "dlr_mask": DLR_MASK,
        "accept": accept,
        "e2e": e2e,
        "e2e_runs": runs,
        "peak_rss_mb": {"per_phase": rss, **peak},
        "table": [
            {"what": w, "smsrelay": s, "kannel": k, "smsrelay_over_kannel": r}
            for w, s, k, r in table_rows
        ],
        "held_accept_reference": held,
        "busy_cores_before": busy_before,
        "busiest_before": busiest,
        "wall_s": wall,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--receiver":
        receiver_main(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        url, count, conns, rurl, ids_out, limit = sys.argv[2:8]
        loadgen_main(url, int(count), int(conns), rurl, ids_out, float(limit))
    elif len(sys.argv) > 1 and sys.argv[1] == "--install":
        ensure_kannel()
    else:
        save_section("kannel", main())
    sys.exit(0)
