"""A small HTTP/1.1 client for callbacks: keep-alive POSTs and their status, nothing else.

Under load the general-purpose client (aiohttp's) cost about a sixth of the gateway's event loop
per callback: sessions, cookie jars, tracing hooks, redirect and proxy machinery. A callback needs
one POST on a reused connection, the answer's status, and the answer drained so the connection
can serve the next one. Responses are parsed by httptools (llhttp, the parser uvicorn uses);
addresses are checked with :mod:`address_safety` on every new connection, against the address
actually connected to. Redirects are not followed (the caller judges the status).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import httptools
from yarl import URL

from smsrelay.quick_init import quick_init
from smsrelay.webhooks.address_safety import ensure_safe_literal, resolve_safe
from smsrelay.webhooks.lookup_slots import LookupSlots
from smsrelay.webhooks.name_cache import NameCache

BODY_READ_LIMIT = 64 * 1024  # a larger answer is not drained: its connection is closed
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_IDLE_TOTAL = 128  # idle keep-alive connections, all receivers together
TIMEOUT_GRACE = 0.1  # a deadline fails after one more read of the sockets (see _time_out)
# Connections open at once, posting or idle, all receivers together: inside the 256 open files
# the API's connection cap leaves to the database, the SMPP links and the callbacks. Without
# it, 100 receivers' slots (16 each) ran the process out of files and SQLite could not open
# its own (the operations review).
MAX_OPEN_TOTAL = 160
MAX_LOOKUPS = 8  # name lookups running at once: libuv resolves on 4 threads, more only queue
MAX_LOOKUPS_PER_NAME = 2  # so one name that resolves slowly leaves the others room


class HttpClientError(Exception):
    """A POST that got no usable answer; the text says why."""


class InvalidTarget(HttpClientError):
    """The URL cannot be posted to at all (retrying cannot help)."""


class ConnectFailed(HttpClientError):
    pass


class Disconnected(HttpClientError):
    """The receiver closed the connection before its answer was complete."""


class BadResponse(HttpClientError):
    pass


@quick_init
@dataclass(frozen=True)
class Target:
    """Where a callback URL points, split once: what to connect to and what to send."""

    scheme: str
    host: str  # to connect to: a name, or an IP literal without brackets
    port: int
    host_header: str
    path: str  # the request target: encoded path and query
    authorization: str | None  # Basic credentials from the URL's user info, as browsers do

    @property
    def pool_key(self) -> tuple[str, str, int, str | None]:
        return (self.scheme, self.host, self.port, self.authorization)

    @property
    def receiver(self) -> str:
        """Whom the post goes to, for per-receiver limits: the host and port (two ports of
        one host are two receivers, and one that hangs must not take the other's slots)."""
        return f"{self.host.lower()}:{self.port}"

    @staticmethod
    @functools.lru_cache(maxsize=1024)  # callbacks go to a few URLs again and again
    def parse(url: str) -> Target:
        try:
            parsed = URL(url)
            host, port = parsed.raw_host, parsed.port
        except (ValueError, TypeError) as exc:
            raise InvalidTarget(f"invalid callback URL: {exc}") from exc
        if parsed.scheme not in DEFAULT_PORTS or not host or port is None:
            raise InvalidTarget("invalid callback URL")
        default = DEFAULT_PORTS[parsed.scheme]
        shown = f"[{host}]" if ":" in host else host
        return Target(
            scheme=parsed.scheme,
            host=host,
            port=port,
            host_header=shown if port == default else f"{shown}:{port}",
            path=parsed.raw_path_qs or "/",
            authorization=_basic_auth(parsed),
        )


def _basic_auth(url: URL) -> str | None:
    if url.raw_user is None:
        return None
    pair = f"{unquote(url.raw_user)}:{unquote(url.raw_password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def request_bytes(target: Target, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}"]
    if target.authorization:
        lines.append(f"Authorization: {target.authorization}")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _NoCallbacks:
    """What a spent connection's parser reports to: nothing (it is never fed again)."""


_SPENT_PARSER = httptools.HttpResponseParser(_NoCallbacks())


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop  # kept: asking asyncio for it costs a getpid syscall per call on 3.11
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, bool]] | None = None
        self._got_bytes = False
        self._headers_done = False
        self._body_read = 0
        self._timer: asyncio.TimerHandle | None = None
        self.on_lost: Callable[[], None] | None = None  # once, when the socket is gone

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._answer is None:  # bytes nobody asked for: the connection is not reusable
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"malformed answer: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost()
            self.on_lost = None
        if self._headers_done:  # an answer delimited by the close itself
            self._finish(keep_alive=False)
        else:
            self._fail(Disconnected("server disconnected"))
        # The parser holds our callbacks, we hold it: a cycle that kept each closed connection
        # (and its transport) until a full collection, ~10,000 of them under load.
        self._parser = _SPENT_PARSER

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.done():
            # A second answer to one request (begun in the read that ended the first): the
            # parser would take the next request's answer as the rest of it (a 500 read as
            # this stray's 200). The connection is not reused.
            self.closed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body_read += len(body)
        if self._body_read > BODY_READ_LIMIT:
            self._finish(keep_alive=False)
            self.abort()

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._headers_done = False
            self._body_read = 0
            return
        self._finish(keep_alive=self._parser.should_keep_alive())

    # the exchange
    async def exchange(self, request: bytes, within: float | None = None) -> tuple[int, bool]:
        """Send ``request``; the answer's status, and whether the connection can be reused.
        TimeoutError if it has not come ``within`` seconds (one timer, not a Timeout context:
        on 3.11 that asks asyncio for the loop and the task, a getpid syscall each)."""
        assert self.transport is not None
        self._answer = self._loop.create_future()
        self._got_bytes = False
        self._headers_done = False
        self._body_read = 0
        self.transport.write(request)
        if within is not None:
            self._timer = self._loop.call_later(within, self._time_out)
        try:
            return await self._answer
        finally:
            self._answer = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _time_out(self) -> None:
        """The deadline has passed: fail once the loop has read what came meanwhile. After
        the process was paused (SIGSTOP, a frozen VM), timers run before the sockets are
        read, and an answer waiting in the socket was taken for a timeout and posted again."""
        self._timer = self._loop.call_later(TIMEOUT_GRACE, self._fail, TimeoutError())

    @property
    def answered_nothing(self) -> bool:
        return not self._got_bytes

    def _finish(self, keep_alive: bool) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((self._parser.get_status_code(), keep_alive))

    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _left(ends: float | None) -> float | None:
    """Seconds left until ``ends`` (a ``time.monotonic()`` instant); None: no limit."""
    return None if ends is None else ends - time.monotonic()


def tls_context(extra_ca: str | None = None) -> ssl.SSLContext:
    """The system's trusted CAs, plus those of ``extra_ca`` (a PEM file) when given."""
    context = ssl.create_default_context()
    if extra_ca:
        context.load_verify_locations(cafile=extra_ca)
    return context


class CallbackClient:
    """Keep-alive connections per (scheme, host, port), at most ``max_idle`` idle per host
    and ``MAX_IDLE_TOTAL`` in all: idle sockets come out of the open-file limit that the API's
    connection cap leaves to the database, the SMPP links and the callbacks (256), and 200
    receivers kept 2,000 of them open."""

    def __init__(
        self,
        *,
        allow_private: bool,
        max_idle: int,
        keepalive: float,
        tls: ssl.SSLContext | None = None,  # default: the system's trusted CAs
    ) -> None:
        self._allow_private = allow_private
        self._max_idle = max_idle
        self._keepalive = keepalive
        self._idle: dict[tuple[str, str, int, str | None], list[_Connection]] = {}
        self._idle_total = 0
        self._tls = tls
        self._tls_loading: asyncio.Future[ssl.SSLContext] | None = None
        self._lookups = LookupSlots(MAX_LOOKUPS, MAX_LOOKUPS_PER_NAME)
        self._open_count = 0  # connections open now, posting or idle (MAX_OPEN_TOTAL)
        self._room = asyncio.Event()  # set when one closes, or is kept for a waiting post
        self._waiting: Counter[tuple[str, str, int, str | None]] = Counter()  # by receiver
        self._names = NameCache()
        self._swept = time.monotonic()

    async def post(
        self,
        target: Target,
        headers: dict[str, str],
        body: bytes,
        timeout: float | None = None,  # noqa: ASYNC109 (one timer: asyncio.timeout costs 3 getpid)
    ) -> int:
        """POST ``body``; the answer's status. Raises :class:`HttpClientError` (or
        ``UnsafeAddress``), and TimeoutError once ``timeout`` seconds have passed (a cancel by
        the caller also closes the connection)."""
        request = request_bytes(target, headers, body)
        ends = None if timeout is None else time.monotonic() + timeout
        connection = self._reuse(target)
        if connection is not None:
            try:
                return await self._exchange(target, connection, request, _left(ends))
            except Disconnected:
                if not connection.answered_nothing:
                    raise
                # the receiver closed an idle connection as we wrote: the request was not
                # read, so it goes once more on a fresh connection
        async with asyncio.timeout(_left(ends)):  # a new connection (the rare case)
            connection = await self._open_connection(target)
        return await self._exchange(target, connection, request, _left(ends))

    @property
    def waiting_for_room(self) -> int:
        """Posts waiting for a connection under MAX_OPEN_TOTAL now."""
        return sum(self._waiting.values())

    async def _open_connection(self, target: Target) -> _Connection:
        """A connection within MAX_OPEN_TOTAL: a new one while there is room; at the cap, an
        idle one to this receiver, or an idle one to another closed to make room, or it
        waits until a connection to this receiver is free or one closes."""
        key = target.pool_key
        while self._open_count >= MAX_OPEN_TOTAL:
            kept = self._reuse(target)
            if kept is not None:
                return kept
            if self._idle_total:
                self._drop_oldest()  # its room comes back as its socket closes
            self._waiting[key] += 1
            self._room.clear()
            try:
                await self._room.wait()
            finally:
                self._waiting[key] -= 1
                if not self._waiting[key]:
                    del self._waiting[key]
        self._open_count += 1
        try:
            connection = await self._connect(target)
        except BaseException:
            self._closed_one()
            raise
        connection.on_lost = self._closed_one
        return connection

    def _closed_one(self) -> None:
        self._open_count -= 1
        self._room.set()

    def _kept_for_later(self, target: Target) -> bool:
        """At the cap with posts waiting, a finished connection is kept only for a post to
        its own receiver (woken to take it); else closed, its room going to the others.
        Closed every time, it cost a new connection (a TLS handshake) per post."""
        if not self._waiting:
            return True
        if target.pool_key in self._waiting:
            self._room.set()
            return True
        return False

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.abort()
        self._idle.clear()
        self._idle_total = 0

    async def _exchange(
        self, target: Target, connection: _Connection, request: bytes, within: float | None
    ) -> int:
        try:
            status, keep_alive = await connection.exchange(request, within)
        except BaseException:
            connection.abort()
            raise
        if keep_alive and not connection.closed and self._kept_for_later(target):
            self._keep(target, connection)
        else:
            connection.abort()
        return status

    def _reuse(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target.pool_key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_total -= 1
            if not connection.closed and now - connection.idle_since < self._keepalive:
                return connection
            connection.abort()
        return None

    def _keep(self, target: Target, connection: _Connection) -> None:
        now = time.monotonic()
        connection.idle_since = now
        if now - self._swept > self._keepalive or self._idle_total >= MAX_IDLE_TOTAL:
            self._sweep(now)
        idle = self._idle.setdefault(target.pool_key, [])
        if len(idle) >= self._max_idle:
            connection.abort()
            return
        if self._idle_total >= MAX_IDLE_TOTAL:  # the one idle longest makes room: keeping
            self._drop_oldest()  # the first receivers' for good made the others reconnect
        idle.append(connection)
        self._idle_total += 1

    def _drop_oldest(self) -> None:
        key, at = min(
            ((key, at) for key, kept in self._idle.items() for at in range(len(kept))),
            key=lambda place: self._idle[place[0]][place[1]].idle_since,
        )
        self._idle[key].pop(at).abort()
        self._idle_total -= 1

    def _sweep(self, now: float) -> None:
        """Close connections idle too long, forget hosts with none left."""
        self._swept = now
        for key in list(self._idle):
            kept = []
            for connection in self._idle[key]:
                if connection.closed or now - connection.idle_since >= self._keepalive:
                    connection.abort()
                else:
                    kept.append(connection)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        self._idle_total = sum(len(kept) for kept in self._idle.values())

    async def _connect(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = await self._tls_context() if target.scheme == "https" else None
        error: OSError | None = None
        for address in await self._addresses(target):
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    address,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                )
                return connection
            except OSError as exc:
                error = exc
        # none answered: the name may have moved (a failover) since its answer was kept
        self._names.doubt((target.host, target.port))
        detail = (error.strerror or str(error)) if error else "no address"
        raise ConnectFailed(f"connection failed: {detail}")

    async def _addresses(self, target: Target) -> list[str]:
        """The addresses to try, every one of them allowed (UnsafeAddress otherwise)."""
        if ensure_safe_literal(target.host, self._allow_private):
            return [target.host]
        try:
            return await resolve_safe(
                target.host, target.port, self._allow_private, self._lookups, self._names
            )
        except OSError as exc:
            raise ConnectFailed(f"connection failed: {exc.strerror or exc}") from exc

    async def _tls_context(self) -> ssl.SSLContext:
        """The system's CAs, loaded once, off the event loop's thread (tens of ms)."""
        if self._tls is not None:
            return self._tls
        if self._tls_loading is None:
            self._tls_loading = asyncio.ensure_future(asyncio.to_thread(tls_context))
        try:
            self._tls = await asyncio.shield(self._tls_loading)
        except Exception:
            self._tls_loading = None  # the next https callback tries again
            raise
        return self._tls
