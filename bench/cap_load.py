"""The load processes of bench_cap.py: a flood of connections, and the clients measured
against it. Each runs in its own process (raw asyncio sockets on uvloop), bound to its own
loopback address (Linux routes 127/8 to lo, and the gateway tells clients apart by address).

  cap_load.py flood KIND PORT ADDR RATE SECONDS KEY FROM TAG
      KIND idle: connections that send nothing (over https: sockets that never say hello);
      onereq: one send each, its answer read, then silent until the gateway closes them.
      Opened open-loop at RATE a second; the gateway's closing is read (EOF or reset), and
      every socket still open at the end is aborted.
  cap_load.py clients KINDS PORT ADDR SECONDS KEY FROM TAG [--tls]
      KINDS, comma-separated: pool (4 keep-alive connections sending back to back), pausing
      (4 keep-alive connections pausing 0.3 s between sends), newconn (4 workers, a new
      connection per send, 0.1 s between sends).

Each send's text ends with TAG-flood, or TAG-KIND (bench_cap.py counts what was stored). Each
prints one line 'CAPJSON {...}'. A pooled connection found closed before a send (the
gateway took it while it was idle) is opened again first, as an HTTP client's pool does
(urllib3, aiohttp): that send is not lost, and it is counted as "reopened". A send is lost
when its connection is cut before the answer (reset, EOF), when it is answered 503 or
anything but 200, or when no connection could be made for it.
"""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import uvloop

HOST = "127.0.0.1"
ANSWER_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 3.0
MAX_OPEN = 8000  # flood sockets open at once, at most (the gateway closes them far sooner)
WORKERS = 4
PAUSES = {"pool": 0.0, "pausing": 0.3, "newconn": 0.1}
TEXT = "Votre code de confirmation est 482913."


def send_request(key: str, sender: str, n: int, tag: str) -> bytes:
    """A send whose text carries ``tag``: bench_cap.py counts the messages stored per tag."""
    message = f"{TEXT} {tag}"
    body = json.dumps(
        {"apiKey": key, "to": f"06{n % 100000000:08d}", "from": sender, "message": message}
    ).encode()
    head = (
        f"POST /v1/vn/send HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def parse_answer(buffer: bytearray) -> tuple[int, bool, int] | None:
    """The first whole answer in ``buffer``: its status, whether the gateway closes the
    connection after it, and its length in bytes; None while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    length, close = 0, False
    for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"connection" and b"close" in value.lower():
            close = True
    if len(buffer) < end + 4 + length:
        return None
    return int(buffer[: buffer.index(b" ") + 4].split()[1]), close, end + 4 + length


class Cut(Exception):
    """The connection was closed or reset before the whole answer arrived."""


class Exchange(asyncio.Protocol):
    """One connection, its bytes read as they come: an answer whose bytes arrived is
    answered, even when a reset follows at once (asyncio's StreamReader raises a reset
    before handing over an answer already in its buffer: a client reading as it comes,
    aiohttp's or curl's, has the answer)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bool]] | None = None
        self.gone: asyncio.Future[None] = loop.create_future()

    @property
    def closed(self) -> bool:
        return self.gone.done() or self.transport is None or self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def eof_received(self) -> bool:
        return False  # the transport closes: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        self._check()

    def _check(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        answer = parse_answer(self.buffer)
        if answer is not None:
            del self.buffer[: answer[2]]
            waiter.set_result(answer[:2])
        elif self.closed:
            waiter.set_exception(Cut())

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Send ``request``; its answer's status and whether the gateway closes after it."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(request)
        except RuntimeError as closed:  # uvloop: closed since the caller looked
            raise Cut() from closed
        self._check()
        return await asyncio.wait_for(self.waiter, ANSWER_TIMEOUT_S)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(port: int, addr: str, tls: ssl.SSLContext | None) -> Exchange:
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(Exchange, HOST, port, local_addr=(addr, 0), ssl=tls),
        CONNECT_TIMEOUT_S,
    )
    return protocol


# -- the flood ------------------------------------------------------------------------------


async def flood(
    kind: str, port: int, addr: str, rate: float, seconds: float, request: bytes
) -> dict[str, object]:
    counts: Counter[str] = Counter()
    open_now: set[Exchange] = set()
    over = False

    async def one() -> None:
        try:
            conn = await connect(port, addr, None)
        except (OSError, TimeoutError):
            counts["connect_failed"] += 1
            return
        if over:  # connected as it was cancelled (wait_for can let that through)
            conn.abort()
            return
        counts["connected"] += 1
        open_now.add(conn)
        try:
            if kind == "onereq":
                counts["sent"] += 1
                try:
                    status, _ = await conn.exchange(request)
                except TimeoutError:
                    counts["unanswered"] += 1
                except (Cut, OSError):
                    counts["cut"] += 1
                else:
                    counts["200" if status == 200 else "503" if status == 503 else "other"] += 1
            await conn.gone  # silent from here: until the gateway closes it
            counts["closed_by_gateway"] += 1
        finally:
            open_now.discard(conn)
            conn.abort()  # a reset: no TIME_WAIT left for each flood port

    tasks: set[asyncio.Task[None]] = set()
    t0 = time.monotonic()
    print("FLOOD started", flush=True)
    for n in range(int(rate * seconds)):
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(open_now) >= MAX_OPEN:
            counts["skipped_too_many_open"] += 1
            continue
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
    wall = time.monotonic() - t0
    connected = counts["connected"]
    open_at_end = len(open_now)
    over = True
    for conn in list(open_now):
        conn.abort()  # their tasks see the close and end
    for task in list(tasks):
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    return say(
        {
            "kind": kind,
            "addr": addr,
            "rate_asked": rate,
            "rate_achieved": round(connected / wall, 1),
            "open_at_end": open_at_end,
            **counts,
        }
    )


# -- the clients ----------------------------------------------------------------------------


@dataclass
class Tally:
    attempted: int = 0
    ok: int = 0
    cut: int = 0  # the connection reset or closed before the answer
    refused: int = 0  # 503
    other: int = 0  # another status, no answer in time, or no connection for it
    reopened: int = 0  # a pooled connection found closed before a send, opened again
    first_sent: int = 0  # sends that were their connection's first request
    first_cut: int = 0
    latencies: list[float] = field(default_factory=list)


class Client:
    def __init__(self, port: int, addr: str, tls: ssl.SSLContext | None, request: bytes) -> None:
        self.port, self.addr, self.tls, self.request = port, addr, tls, request

    async def send(self, tally: Tally, conn: Exchange, first: bool) -> bool:
        """One send on ``conn``; True when the connection may be used again."""
        tally.attempted += 1
        tally.first_sent += first
        started = time.monotonic()
        try:
            status, close = await conn.exchange(self.request)
        except TimeoutError:
            tally.other += 1
            return False
        except (Cut, OSError):
            tally.cut += 1
            tally.first_cut += first
            return False
        tally.latencies.append(time.monotonic() - started)
        if status == 200:
            tally.ok += 1
        elif status == 503:
            tally.refused += 1
        else:
            tally.other += 1
        return status == 200 and not close

    async def pooled(self, tally: Tally, pause: float, end: float) -> None:
        conn: Exchange | None = None
        first = False
        while time.monotonic() < end:
            if conn is not None and conn.closed:
                tally.reopened += 1
                conn = None
            if conn is None:
                try:
                    conn, first = await connect(self.port, self.addr, self.tls), True
                except (OSError, TimeoutError):
                    tally.attempted += 1
                    tally.other += 1
                    await asyncio.sleep(0.05)
                    continue
            if not await self.send(tally, conn, first):
                conn.abort()
                conn = None
            first = False
            if pause:
                await asyncio.sleep(pause)
        if conn is not None:
            conn.abort()

    async def one_per_connection(self, tally: Tally, pause: float, end: float) -> None:
        while time.monotonic() < end:
            try:
                conn = await connect(self.port, self.addr, self.tls)
            except (OSError, TimeoutError):
                tally.attempted += 1
                tally.other += 1
            else:
                await self.send(tally, conn, True)
                if conn.transport is not None:
                    conn.transport.close()
            await asyncio.sleep(pause)


async def clients(
    kinds: list[str],
    port: int,
    addr: str,
    seconds: float,
    request: Callable[[str], bytes],
    tls: bool,
) -> dict[str, object]:
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the bench's own throwaway certificate
    end = time.monotonic() + seconds
    tallies = {kind: Tally() for kind in kinds}
    work = []
    for kind in kinds:
        client = Client(port, addr, context, request(kind))
        run = client.one_per_connection if kind == "newconn" else client.pooled
        work += [run(tallies[kind], PAUSES[kind], end) for _ in range(WORKERS)]
    await asyncio.gather(*work)
    out: dict[str, object] = {}
    for kind, tally in tallies.items():
        lat = sorted(tally.latencies)
        figures: dict[str, object] = {k: v for k, v in vars(tally).items() if k != "latencies"}
        figures["p99_ms"] = round(lat[int(0.99 * (len(lat) - 1))] * 1000, 1) if lat else None
        out[kind] = figures
    return say(out)


def say(result: dict[str, object]) -> dict[str, object]:
    """The figures, printed as soon as they are known (not after the loop's shutdown)."""
    print("CAPJSON " + json.dumps(result), flush=True)
    return result


def main(argv: list[str]) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    role = argv[0]
    if role == "flood":
        kind, port, addr, rate, seconds, key, sender, tag = argv[1:9]
        uvloop.run(
            flood(
                kind,
                int(port),
                addr,
                float(rate),
                float(seconds),
                send_request(key, sender, 1, f"{tag}-flood"),
            )
        )
    elif role == "clients":
        kinds, port, addr, seconds, key, sender, tag = argv[1:8]
        uvloop.run(
            clients(
                kinds.split(","),
                int(port),
                addr,
                float(seconds),
                lambda kind: send_request(key, sender, 2, f"{tag}-{kind}"),
                "--tls" in argv[8:],
            )
        )
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
