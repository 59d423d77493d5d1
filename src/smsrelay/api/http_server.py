"""The API's HTTP/1.1 server: httptools (llhttp, the parser uvicorn uses) on an asyncio protocol.

Why not aiohttp's server, which this replaced: on the same host, wrk posting a small JSON body
to a handler that decodes it and answers JSON gets 26k answers/s from aiohttp (38 µs of the core
per request) and 104k/s from this shape (10 µs). The gateway's accept runs on one core, so those
28 µs were a quarter of each accepted message. The server does what the API needs and no more:
keep-alive and pipelining (answers in order), ``Expect: 100-continue``, size limits, an idle
timeout and a body timeout, and errors answered through the application's own error shape.
Request bodies are handed over whole (the API's are at most 64 KiB).

At the connection cap, a newcomer takes the place of the connection idle the longest (nginx's
idea): one with no request being handled, a keep-alive between requests or one that has not
completed a request (a slowloris). Refusing the newcomer instead let one client that kept
re-opening idle connections hold every slot, and answer 503 to everyone, for as long as it
liked. Only when every connection has a request in hand is the newcomer refused.

A connection that answered a request less than GRACE_S ago is taken only after the idle
ones (and, over https, after handshakes that say no hello): under a flood of idle
connections, "idle the longest" was a client's pooled connection between two sends, closed
as its next POST was on its way (80 of 160 pooled sends lost at a cap of 200), while the
flood's own connections, younger, were kept. A newcomer whose request waits in its socket,
unread yet, is never taken. In each step, the heaviest client's connection goes first (the
address holding the most: ``client_shares``), so a flood from one address gives up its own.
The order in full: ``HttpServer._to_reclaim`` and ``TlsListener._room_for_one``; from one
address (a proxy in front) or many, it is a set of heuristics, not a guarantee (README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from itertools import islice
from typing import Any, cast
from urllib.parse import unquote

import httptools

from smsrelay.api.client_shares import ClientShares, Holder
from smsrelay.api.http_types import Request, Response
from smsrelay.api.tls_listener import ANSWERED_ONCE, GRACED, TlsListener
from smsrelay.logs import SparseLine

Handler = Callable[[Request], Awaitable[Response]]
# (status, what went wrong, the query if the request line was read) -> the answer to send.
ErrorAnswer = Callable[[int, str, str], Response]

MAX_URL = 8190  # aiohttp's and most servers' request-line limit
MAX_HEADER_BYTES = 32 * 1024
# The parser joins a header's pieces until its line ends, so a line that never ends grows in
# memory unchecked by MAX_HEADER_BYTES (counted per complete header): the bytes read while a
# request's head is unfinished are bounded too.
MAX_HEAD_BYTES = MAX_URL + MAX_HEADER_BYTES + 16 * 1024
MAX_QUEUED = 16  # pipelined requests waiting for their turn before reading pauses
# Over the connection cap: the 503 is written, then what the client still sends is read and
# dropped for this long (closing with unread data would reset the connection, and the client
# would see a reset instead of the answer). At most MAX_LINGERING such at once; past that,
# turned-away connections are closed at once.
LINGER_S = 2.0
MAX_LINGERING = 64
FULL_WARNING_EVERY_S = 10.0
RECLAIMED_SAID_EVERY_S = 1.0  # idle connections closed for newcomers: a line a second at most
# A connection that answered a request this recently gives its place only when no other can:
# a client sending through a pool reuses a connection within a fraction of a second (a send
# takes milliseconds), and 2 s covers that with room for its own pauses and a slow network.
# Longer would shelter a client that sends one request per connection and then goes silent:
# each of its connections is protected for GRACE_S after its answer, then is among the longest
# silent, so to keep its slots it must keep making requests, as a real client does.
GRACE_S = 2.0
WALK_AT_MOST = 256  # entries a pass over a line looks at: a newcomer's cost stays bounded
log = logging.getLogger("smsrelay.api")


class HttpServer:
    """Listens, keeps the connections, and closes them gracefully."""

    def __init__(
        self,
        handle: Handler,
        error_answer: ErrorAnswer,
        *,
        max_body: int,
        idle_timeout: float,
        body_timeout: float,
        max_connections: int = 10_000,
    ) -> None:
        self.handle = handle
        self.error_answer = error_answer
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        # the connections with no request in hand, the longest idle first: the ones a
        # newcomer at the cap may take the place of (ordered: O(1) to add, drop, take)
        self.idle: OrderedDict[Connection, None] = OrderedDict()
        # those with no request in hand that answered one less than GRACE_S ago, with when,
        # the oldest answer first: taken only when no idle one can be (see _to_reclaim)
        self.graced: OrderedDict[Connection, float] = OrderedDict()
        # the places each client (address) holds, and its own idle and graced lines: at the
        # cap, the heaviest client's connection gives way first (see _pick)
        self.shares: ClientShares[Connection] = ClientShares()
        self.lingering: set[Connection] = set()  # turned away over the cap, being let go
        self.turned_away = 0  # connections refused over the cap since the start
        self.reclaimed = 0  # idle connections closed for a newcomer at the cap since the start
        self._reclaimed_said = SparseLine(
            log, "api.connections.reclaimed", RECLAIMED_SAID_EVERY_S, "count"
        )
        self._last_full_warning = -FULL_WARNING_EVERY_S
        self.closing = False
        self._listener: asyncio.Server | None = None
        self._tls_listener: TlsListener | None = None  # https: its own accept loop
        self.loop: asyncio.AbstractEventLoop | None = None  # set by start(); connections use it
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = min(1.0, idle_timeout / 4, body_timeout / 4)
        self._all_closed = asyncio.Event()

    def admit(self, connection: Connection) -> bool:
        """Keep the connection (at the cap, in place of the longest idle), or (every one busy
        with a request) answer it 503 and let it go."""
        if self.closing:  # accepted as the listener closed (a handshake ending): unanswered
            connection.abort()
            return False
        at_cap = len(self.connections) >= self.max_connections
        if not at_cap or self.reclaim_idle(newcomer=connection.peer):
            self.connections.add(connection)
            holder = connection.holder = self.shares.join(connection.peer)
            self.idle[connection] = holder.idle[connection] = None  # no request yet
            return True
        self._count_turned_away()
        if len(self.lingering) >= MAX_LINGERING:
            connection.abort()
        else:
            self.lingering.add(connection)
            detail = f"too many connections (at most {self.max_connections}): retry later"
            connection.turn_away(self.error_answer(503, detail, ""))
        return False

    def reclaim_idle(self, reach: int = GRACED, newcomer: str = "") -> bool:
        """Close the connection idle the longest, for a newcomer (from address ``newcomer``)
        to take its place (see ``_to_reclaim``); False when none may be closed."""
        chosen = self._to_reclaim(1, reach, newcomer)
        if not chosen:
            return False
        self._reclaim(chosen[0])
        return True

    def _reclaim(self, connection: Connection) -> None:
        self.not_reclaimable(connection)
        self._drop(connection)  # its slot is the newcomer's from now
        connection.abort()  # its descriptor closes at once (a TLS close could wait for the peer)
        self._count_reclaimed()

    def _to_reclaim(self, count: int, reach: int, newcomer: str = "") -> list[Connection]:
        """Up to ``count`` connections to close for newcomers (from address ``newcomer``), by
        passes as far as ``reach``: (1) the idle, in their line's order (silent the longest
        first); then those in their grace, the oldest answer first, (2) the ones that
        answered a single request (a one-request flood's) before (3) the others (a client's
        pool: with the flood's in their grace too, a pool pausing 0.3 s between sends lost
        42 % of them). In each pass, the heaviest client's first (see ``_pick``). Never a
        newcomer whose request already waits in its socket (cutting it would leave a POST
        unanswered): when only such are left, the newcomer is the one refused."""
        self._end_graces(time.monotonic())
        passes: list[tuple[_Line, bool]] = [(_idle_line, False)]
        if reach >= ANSWERED_ONCE:
            passes.append((_graced_line, True))
        if reach >= GRACED:
            passes.append((_graced_line, False))
        pick = _Pick(self, newcomer)
        for line, once in passes:
            while len(pick.chosen) < count and pick.one(line, once):
                pass
        return list(pick.chosen)

    def _end_graces(self, now: float) -> None:
        """Those whose answer is GRACE_S old join the idle: the ones silent since, at its
        head (silent that long, among the longest), the ones sending their next request
        (a slow upload) at its tail, as just heard from."""
        silent: list[Connection] = []
        while self.graced:
            connection, answered = next(iter(self.graced.items()))
            if now - answered < GRACE_S:
                break
            del self.graced[connection]
            holder = connection.holder
            assert holder is not None  # (only the server's connections are in its lines)
            del holder.graced[connection]
            if connection.heard_since_answer:
                self.idle[connection] = holder.idle[connection] = None
            else:
                silent.append(connection)
        for connection in reversed(silent):  # the oldest answer first in line
            holder = connection.holder
            assert holder is not None
            self.idle[connection] = holder.idle[connection] = None
            self.idle.move_to_end(connection, last=False)
            holder.idle.move_to_end(connection, last=False)

    def _count_reclaimed(self) -> None:
        """One more connection closed for a newcomer: a line a second at most (a flood makes
        hundreds a second), with how many since the last."""
        self.reclaimed += 1
        self._reclaimed_said.note({"max_connections": self.max_connections})

    def load(self) -> dict[str, int]:
        """What /health shows of the front door: clients connected, the cap, how many were
        turned away over it since the start (a count that grows means a cap too low, or
        clients that do not reuse their connections), and how many idle connections were
        closed to make room for newcomers."""
        return {
            "connections": len(self.connections),
            "max_connections": self.max_connections,
            "turned_away": self.turned_away,
            "reclaimed": self.reclaimed,
        }

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The certificate https handshakes use (None: plain http)."""
        return self._tls_listener.tls if self._tls_listener else None

    @tls.setter
    def tls(self, context: ssl.SSLContext) -> None:  # a reloaded certificate, for what comes
        if self._tls_listener is None:
            raise RuntimeError("this server listens for plain http")
        self._tls_listener.tls = context

    def _make_room(self, handshaking: int, reach: int, newcomer: str) -> bool:
        """May one more TLS handshake begin (from address ``newcomer``)? At the cap, idle
        connections are closed for it (only when that makes room: none closed for a newcomer
        refused anyway), as far as ``reach`` goes (see ``_to_reclaim``; tls_listener puts
        handshakes between the passes)."""
        # a TLS handshake holds two descriptors (tls_listener keeps a spare through it)
        over = len(self.connections) + 2 * handshaking - self.max_connections + 1
        if self.closing:
            return False
        if over <= 0:  # below the cap: nothing to choose (no clock read, no peek)
            return True
        chosen = self._to_reclaim(over, reach, newcomer)
        if len(chosen) < over:  # none closed for a newcomer refused anyway
            return False
        for connection in chosen:
            self._reclaim(connection)
        return True

    def _count_turned_away(self) -> None:
        self.turned_away += 1
        self._warn_full()

    def _warn_full(self) -> None:
        now = time.monotonic()
        if now - self._last_full_warning >= FULL_WARNING_EVERY_S:  # not once per connection
            self._last_full_warning = now
            log.warning(
                "api.connections.full",
                extra={"max_connections": self.max_connections, "turned_away": self.turned_away},
            )

    def became_idle(self, connection: Connection, reusable: bool, now: float) -> None:
        """No request in hand now, its answers given: in its grace if it may take another
        request, else the youngest idle (one already gone is not kept)."""
        holder = connection.holder
        if connection not in self.connections or holder is None:
            return
        if reusable:
            self.graced[connection] = now
            holder.graced[connection] = None
        else:
            self.idle[connection] = holder.idle[connection] = None

    def not_reclaimable(self, connection: Connection) -> None:
        """A request in hand, or gone: not one to close for a newcomer."""
        self.idle.pop(connection, None)
        self.graced.pop(connection, None)
        holder = connection.holder
        if holder is not None:
            holder.idle.pop(connection, None)
            holder.graced.pop(connection, None)

    def _drop(self, connection: Connection) -> None:
        """No longer one of the server's connections: its place, and its client's, freed."""
        if connection in self.connections:
            self.connections.discard(connection)
            if connection.holder is not None:
                self.shares.leave(connection.holder)

    def forget(self, connection: Connection) -> None:
        self.lingering.discard(connection)
        self._drop(connection)
        self.not_reclaimable(connection)
        if self.closing and not self.connections:
            self._all_closed.set()

    async def start(
        self, host: str, port: int, backlog: int = 1024, tls: ssl.SSLContext | None = None
    ) -> int:
        """Listen (https with ``tls``: see ``tls_listener``); returns the port (the one chosen
        when ``port`` is 0)."""
        loop = self.loop = asyncio.get_running_loop()  # kept: a getpid syscall per ask on 3.11
        if tls is not None:
            listener = TlsListener(
                tls,
                lambda on_made: Connection(self, on_made),
                self._make_room,
                self._count_turned_away,
                self._plain_http_answer,
                self._count_reclaimed,
                self.shares,
            )
            port = await listener.start(host, port, backlog)
            self._tls_listener = listener
        else:
            self._listener = await loop.create_server(
                lambda: Connection(self), host, port, backlog=backlog
            )
            port = int(self._listener.sockets[0].getsockname()[1])
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)
        return port

    def _plain_http_answer(self) -> bytes:
        """For a client that spoke plain HTTP to the https port (``curl http://``)."""
        detail = "this port speaks https: use an https:// URL"
        return encoded(self.error_answer(400, detail, ""), b"Connection: close\r\n")

    async def close(self, grace: float = 8.0) -> None:
        """Stop listening, answer the requests already read, then close every connection."""
        self.closing = True
        if self._listener is not None:
            self._listener.close()
        if self._tls_listener is not None:
            await self._tls_listener.close()
        for connection in list(self.connections):
            connection.close_when_idle()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._all_closed.wait()
        for connection in list(self.connections) + list(self.lingering):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()

    def _sweep(self) -> None:
        """One timer for every connection's timeouts, instead of one per request."""
        now = time.monotonic()
        for connection in list(self.connections) + list(self.lingering):
            connection.check_deadline(now)
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)


# a line of connections a newcomer may take: the server's (all clients') or a client's own
_Line = Callable[["HttpServer | Holder[Connection]"], "OrderedDict[Connection, Any]"]


def _idle_line(owner: HttpServer | Holder[Connection]) -> OrderedDict[Connection, Any]:
    return owner.idle


def _graced_line(owner: HttpServer | Holder[Connection]) -> OrderedDict[Connection, Any]:
    return owner.graced


class _Pick:
    """The connections chosen to give way to a newcomer, one at a time (see ``one``)."""

    def __init__(self, server: HttpServer, newcomer: str) -> None:
        self.server = server
        self.chosen: dict[Connection, None] = {}  # (ordered; a later pass meets earlier ones)
        self.taken: dict[Holder[Connection], int] = {}  # chosen, by client
        # the newcomer's client, when it holds places already: it is to hold one more
        self.newcomer = server.shares.holder(newcomer)

    def one(self, line: _Line, once: bool) -> bool:
        """Choose the next in the pass over ``line`` (``once``: only those that answered a
        single request): the first in the server's line (silent the longest, or the oldest
        answer), unless a client holding more places than its client has one in its own
        line, the heaviest such first. Clients told apart, a flood from one address gives
        up its own connections before another client's; from one client alone (or behind
        a proxy: one address), the choice is the server line's, as it was. Each walk looks
        at WALK_AT_MOST entries at most."""
        server_line = line(self.server)
        first = self._first_free(server_line, WALK_AT_MOST, once)
        # none free in the whole line: none in a client's (a part of it), not worth a walk
        if self.server.shares.clients > 1 and (
            first is not None or len(server_line) > WALK_AT_MOST
        ):
            heavier = self._from_heavier(line, once, first)
            first = heavier or first
        if first is None:
            return False
        self.chosen[first] = None
        holder = first.holder
        if holder is not None:
            self.taken[holder] = self.taken.get(holder, 0) + 1
        return True

    def _from_heavier(self, line: _Line, once: bool, first: Connection | None) -> Connection | None:
        """The first one free in the line of the heaviest client heavier than ``first``'s
        that has one; None if none (within WALK_AT_MOST clients and entries in all)."""
        weight = 0 if first is None else self._weight(first.holder)
        budget = WALK_AT_MOST
        shares = self.server.shares
        for holder in shares.heavier_than(weight, self.newcomer, self.taken):
            found = self._first_free(line(holder), budget, once)
            if found is not None:
                return found
            budget -= len(line(holder)) + 1  # (an over-count past the walk's end: no matter)
            if budget <= 0:
                return None
        return None

    def _weight(self, holder: Holder[Connection] | None) -> int:
        if holder is None:
            return 0
        return holder.held + (holder is self.newcomer) - self.taken.get(holder, 0)

    def _first_free(
        self, line: OrderedDict[Connection, Any], at_most: int, once: bool = False
    ) -> Connection | None:
        for connection in islice(line, at_most):
            if once and connection.answers != 1:
                continue
            if connection not in self.chosen and not connection.request_waiting():
                return connection
        return None


class _Refused(Exception):
    """Raised from a parser callback to stop reading the request; the answer is decided."""


class _NoCallbacks:
    """What a closed connection's parser reports to: nothing (it is never fed again)."""


_SPENT_PARSER = httptools.HttpRequestParser(_NoCallbacks())


class Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them one at a time, in order."""

    def __init__(self, server: HttpServer, on_made: Callable[[], None] | None = None) -> None:
        self._server = server
        self._on_made = on_made  # https: its handshake is over (no longer the listener's)
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[tuple[Request | Response, bool]] = deque()
        self._serving = False
        self._reading_paused = False
        self._writing_paused = False
        self._last = False  # nothing more is read: answer what is queued, then close
        self._deadline: float | None = None  # idle: hang up; mid-body: answer 408
        self._unsent_seen: int | None = None  # answers unsent at the last deadline (bytes)
        self._mid_body = False
        self._in_request = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_read = False  # a field now is a chunked body's trailer, not a header
        self._header_bytes = 0
        self._head_bytes = 0  # read since the last head was complete (see MAX_HEAD_BYTES)
        self._letting_go = False  # answered for good: reading and dropping until the client closes
        self._upgrade_with_body = False  # the parser skipped a body to upgrade: read it anyway
        self._replayed = False  # this connection's parser was replaced once for that
        self._body: list[bytes] = []
        self._body_size = 0
        self._refusal: tuple[int, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._peer = ""  # the client's address, read once per connection
        self.holder: Holder[Connection] | None = None  # its client's share, once admitted
        self.heard_since_answer = False  # bytes came after its last answer (see GRACE_S)
        self.read_any = False  # bytes from the client read yet (see request_waiting)
        self.answers = 0  # requests answered on it (see _to_reclaim)

    # --- the connection

    @property
    def peer(self) -> str:
        return self._peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._peer = _peer_address(transport)
        if self._on_made is not None:
            self._on_made()
        if self._server.admit(self):
            self._deadline = time.monotonic() + self._server.idle_timeout

    def turn_away(self, response: Response) -> None:
        """Answer before reading anything, send FIN, drop whatever still comes (see LINGER_S)."""
        self._last = True  # data_received ignores everything from here
        self._deadline = time.monotonic() + LINGER_S
        transport = self._transport
        if transport is None:
            return
        transport.write(self._encoded(response, keep_alive=False, head_only=False))
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        self._deadline = None
        self._queue.clear()
        self._forget_unfinished_request()
        # The parser holds our callbacks, we hold it: a cycle that kept each closed
        # connection until the collector's next full pass. It is never fed again.
        self._parser = _SPENT_PARSER

    def _forget_unfinished_request(self) -> None:
        if self._in_request:  # the client left mid-request: nobody to answer, nothing wrong
            log.info("api.client_gone", extra={"path": self._path_for_log()})
            self._end_request()

    def _end_request(self) -> None:
        """Nothing is being read: no request in hand, no body or idle deadline running."""
        self._in_request = False
        self._mid_body = False
        self._deadline = None

    def data_received(self, data: bytes) -> None:
        if self._letting_go or (self._last and not self._in_request):
            return  # answered for good (a request half-read then is dropped), or refused,
            # upgraded, shutting down
        self.heard_since_answer = self.read_any = True
        idle = self._server.idle
        if self in idle:  # the longest silent is the one reclaimed: an upload going on is not
            idle.move_to_end(self)
            if self.holder is not None:
                self.holder.idle.move_to_end(self)
        if not self._mid_body:
            self._head_bytes += len(data)  # reset by each head completed in this read
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._upgrade_with_body:
                self._read_on_without_upgrade(data[upgrade.args[0] :])
                return
            self._last = True  # we speak no other protocol: answer the request, then close
        except httptools.HttpParserCallbackError:
            self._refuse(*(self._refusal or (500, "internal error")))
        except httptools.HttpParserError as exc:
            if not self._url and not self._headers:  # in the request line of a new message
                self._refuse_cut_short()
            if not self._url:  # refused before its URL was read (a method llhttp does not
                self._url = _url_of_request_line(data)  # know): its ?_format still counts
            self._refuse(400, f"malformed HTTP request: {_reason(exc)}")
        else:
            if self._head_bytes > MAX_HEAD_BYTES and not self._mid_body:
                self._refuse(400, f"malformed HTTP request: headers over {MAX_HEADER_BYTES} bytes")
        self._update_reading()

    def eof_received(self) -> bool:
        """The client shut its sending side (``nc -N``, some HTTP/1.0 tools): answer what it
        sent, then close; an unfinished request gets nothing more."""
        if self._letting_go:
            return False  # it has all it will get: close
        self._last = True
        self._forget_unfinished_request()
        # True keeps the transport open for the answers; a TLS one cannot stay half-open
        # (it closes whatever this says, and asyncio warns if it says True)
        transport = self._transport
        return self._serving and transport is not None and transport.can_write_eof()

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    def close_when_idle(self) -> None:
        self._last = True
        if not self._serving and not self._in_request and self._transport is not None:
            self._transport.close()

    @property
    def unsent_at_deadline(self) -> int | None:
        """Bytes of answers still unsent at the last deadline that found some (None: none
        did since the last request began)."""
        return self._unsent_seen

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def request_waiting(self) -> bool:
        """A newcomer's first bytes wait in its socket, unread only because the loop has not
        come to them yet: a loop turn admits a whole batch of accepted connections before
        reading any, and a request on its way to being read is no idle connection's. Only a
        connection never read yet is asked: bytes left unread behind a client that does not
        read its answers (reading paused) are no request on its way, and counting them would
        let such a client keep its place against everyone (the diff review)."""
        if self.read_any:
            return False
        transport = self._transport
        held = transport.get_extra_info("socket") if transport is not None else None
        # closed under its transport (asyncio's TLS one, by a handshake cut as it completed):
        # no descriptor, and a ValueError from socket() out of the accept loop
        if held is None or held.fileno() < 0:
            return False
        try:  # the transport's socket object cannot recv: a second object on its descriptor
            peek = socket.socket(fileno=held.fileno())
        except OSError:
            return False
        try:
            return bool(peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # nothing waiting (EAGAIN), or the client gone
            return False
        finally:
            peek.detach()  # the descriptor stays the transport's

    def check_deadline(self, now: float) -> None:
        if self._deadline is None or now < self._deadline or self._transport is None:
            return
        self._deadline = None
        if self._mid_body:  # a client that stalls mid-body must not hold its socket for ever
            self._refuse(408, f"the body did not arrive within {self._server.body_timeout:g} s")
        elif unsent := self._transport.get_write_buffer_size():
            self._still_unsent(unsent, now)
        else:  # no complete request for that long (keep-alive idle), or the linger is over
            self._transport.close()

    def _still_unsent(self, unsent: int, now: float) -> None:
        """Answers are still to go at a deadline: a slow reader gets another idle timeout
        while it reads some; one that read nothing for a whole one is hung up on (a close
        waited for its answers to drain for ever: the connection and its buffers kept, and
        counted against the cap)."""
        if self._unsent_seen is not None and unsent >= self._unsent_seen:
            self.abort()
            return
        self._unsent_seen = unsent
        self._deadline = now + self._server.idle_timeout

    # --- httptools callbacks (called from feed_data)

    def on_message_begin(self) -> None:
        self._in_request = True
        self._unsent_seen = None
        self._url = b""
        self._headers = {}
        self._head_read = False
        self._header_bytes = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL:
            self._stop(400, f"malformed HTTP request: the URL is longer than {MAX_URL} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._stop(400, f"malformed HTTP request: headers over {MAX_HEADER_BYTES} bytes")
        if self._head_read:  # a trailer is not merged into the head (RFC 9110 6.5.1): one
            return  # after X-Forwarded-For would name the client in its proxy's stead
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else previous + ", " + text

    def on_headers_complete(self) -> None:
        self._head_read = True
        self._head_bytes = 0
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.max_body:
            self._stop(413, f"the body is larger than {self._server.max_body} bytes")
        expect = self._headers.get("expect")
        if expect is not None:
            self._expect(expect.strip().lower())
        self._mid_body = True
        self._deadline = time.monotonic() + self._server.body_timeout

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._server.max_body:
            self._stop(413, f"the body is larger than {self._server.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        upgrade = self._parser.should_upgrade() and self._parser.get_method() != b"CONNECT"
        if upgrade and self._has_body() and not self._replayed:
            # curl --http2 on http:// asks for h2c on its POST: llhttp skips the body of an
            # upgrade, and the request would be read without its parameters.
            self._upgrade_with_body = True
            return
        self._end_request()
        request = self._request()
        keep_alive = self._parser.should_keep_alive()
        if request is None:
            self._queue.append((self._error(400, "malformed HTTP request: unreadable URL"), False))
        else:
            self._queue.append((request, keep_alive))
        self._start_serving()

    # --- reading

    def _has_body(self) -> bool:
        length = self._headers.get("content-length", "0").strip()
        return "transfer-encoding" in self._headers or length not in ("", "0")

    def _read_on_without_upgrade(self, rest: bytes) -> None:
        """Ignore the upgrade (RFC 9110 lets a server): parse the request again from its
        head without it, then its body and what follows, with a fresh parser."""
        self._upgrade_with_body = False
        self._replayed = True  # once: a head that still asks to upgrade is answered as it is
        method = self._parser.get_method()
        lines = [b"%s %s HTTP/%s" % (method, self._url, self._parser.get_http_version().encode())]
        for name, value in self._headers.items():
            if name not in ("upgrade", "connection", "http2-settings"):
                lines.append(f"{name}: {value}".encode("latin-1"))
        self._parser = httptools.HttpRequestParser(self)
        self._head_bytes = 0
        self.data_received(b"\r\n".join(lines) + b"\r\n\r\n" + rest)

    def _request(self) -> Request | None:
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            return None
        path = url.path.decode("utf-8", "replace") if url.path else "/"
        if "%" in path:
            path = unquote(path)
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        return Request(
            method=self._parser.get_method().decode("ascii", "replace"),
            path=path,
            raw_query=url.query.decode("latin-1") if url.query else "",
            headers=self._headers,
            body=body,
            peer=self._peer,
        )

    def _expect(self, expectation: str) -> None:
        if expectation != "100-continue":
            self._stop(417, f"Expect: {expectation} is not supported (only 100-continue)")
        # curl waits for this (1 s at most) before sending a body over 1 KiB. Not to an
        # HTTP/1.0 client (RFC 9110 10.1.1), nor ahead of answers still owed on the connection.
        owing = self._serving or bool(self._queue)
        if self._parser.get_http_version() == "1.0" or owing or not self._has_body():
            return
        if self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _stop(self, status: int, detail: str) -> None:
        self._refusal = (status, detail)
        raise _Refused

    def _refuse_cut_short(self) -> None:
        """The request read just before, still unanswered, had a body, and what follows it is
        no request: its body ran past its Content-Length (SMS Partner's Node example counts it
        in UTF-16 units), so that body is cut short. Refused, not handled: a form cut short
        still reads (a message sent without its last letters), and the rest would be answered
        as a broken next request, which a keep-alive client takes for its next send's."""
        if not self._queue:
            return
        request = self._queue[-1][0]
        if isinstance(request, Request) and request.body:
            detail = (
                "the body runs past its Content-Length (counted in characters, not bytes?): "
                "the request was not handled"
            )
            answer = self._server.error_answer(400, detail, request.raw_query)
            self._queue[-1] = (answer, False)

    def _refuse(self, status: int, detail: str) -> None:
        """Answer an unreadable request (after the answers queued before it) and close."""
        log.info("api.malformed_request", extra={"status": status, "error": detail})
        self._end_request()
        self._last = True
        self._queue.append((self._error(status, detail), False))
        self._start_serving()

    def _error(self, status: int, detail: str) -> Response:
        query = self._url.partition(b"?")[2].partition(b"#")[0].decode("latin-1")
        return self._server.error_answer(status, detail, query)

    def _update_reading(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        done_reading = self._last and not self._in_request and not self._letting_go
        pause = self._writing_paused or done_reading or len(self._queue) >= MAX_QUEUED
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _path_for_log(self) -> str:
        return self._url.partition(b"?")[0].decode("latin-1")[:200]

    # --- answering

    def _start_serving(self) -> None:
        if not self._serving:
            self._serving = True
            self._server.not_reclaimable(self)  # a request in hand
            # kept: the loop holds tasks weakly, and a task must not vanish mid-answer
            loop = self._server.loop or asyncio.get_running_loop()
            self._task = loop.create_task(self._serve())

    async def _serve(self) -> None:
        while self._queue:
            item, keep_alive = self._queue.popleft()
            response = item if isinstance(item, Response) else await self._answer(item)
            head_only = isinstance(item, Request) and item.method == "HEAD"
            keep_alive = keep_alive and not response.close and not self._server.closing
            keep_alive = keep_alive and not (self._last and not self._queue)
            if not self._write(response, keep_alive, head_only):
                break
            self._update_reading()
        self._serving = False
        # answered, nothing queued: reclaimable again (closing too: a TLS close waits for the
        # client's close_notify, 30 s at most, and a close waits for a slow reader), after a
        # grace if it may take another request
        now = time.monotonic()
        transport = self._transport
        open_on = transport is not None and not transport.is_closing()
        self.heard_since_answer = self._in_request  # the next one's start already came
        self.answers += 1
        self._server.became_idle(self, open_on and not self._last and not self._letting_go, now)
        if transport is not None and open_on:
            if self._letting_go:
                self._update_reading()  # reading on, to drop what still comes
            elif self._last and not self._in_request:
                transport.close()
            elif not self._in_request:
                self._deadline = now + self._server.idle_timeout

    async def _answer(self, request: Request) -> Response:
        try:
            return await self._server.handle(request)
        except Exception:  # the application answers its own errors; this is the last guard
            log.exception("api.unexpected_error", extra={"path": request.path})
            return self._server.error_answer(500, "internal error", request.raw_query)

    def _write(self, response: Response, keep_alive: bool, head_only: bool) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing() or self._letting_go:
            return False  # (after our FIN nothing more can go)
        transport.write(self._encoded(response, keep_alive, head_only))
        if not keep_alive:
            self._last = True
            self._let_go(transport)
            return False
        return True

    def _let_go(self, transport: asyncio.Transport) -> None:
        """After the last answer: send FIN, then read and drop what the client still sends
        until it closes (or LINGER_S). Closing with its data unread would reset the
        connection, and a client still sending (a 2 MB body refused with 413) would get the
        reset instead of the answer."""
        if self._server.closing or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._letting_go = True
        self._end_request()  # a pipelined request half-read now gets nothing: it is dropped
        self._deadline = time.monotonic() + LINGER_S  # and the connection closes by then

    def _encoded(self, response: Response, keep_alive: bool, head_only: bool) -> bytes:
        connection = b""
        if not keep_alive:
            connection = b"Connection: close\r\n"
        elif self._parser.get_http_version() == "1.0":
            connection = b"Connection: keep-alive\r\n"
        return encoded(response, connection, head_only)


def encoded(response: Response, connection: bytes, head_only: bool = False) -> bytes:
    """``response`` on the wire, ``connection`` its Connection header line (or b"")."""
    head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s%s\r\n" % (
        _status_line(response.status),
        response.content_type.encode("latin-1"),
        len(response.body),
        response.headers,
        _date_header(),
        connection,
    )
    return head if head_only else head + response.body


def _peer_address(transport: asyncio.BaseTransport) -> str:
    """The client's address (an https transport gives its socket's too); "" if none."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _url_of_request_line(data: bytes) -> bytes:
    """The URL of the request line that begins ``data``, if it has one (b"" otherwise)."""
    words = data.split(b"\r\n", 1)[0].split(b" ")
    return words[1][:MAX_URL] if len(words) >= 3 else b""


def _reason(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0].rstrip(" :.") or type(exc).__name__


_STATUS_LINES = {status.value: f"{status.value} {status.phrase}".encode() for status in HTTPStatus}
# Every 503 is a "not now" (over the connection cap, the database locked by a CLI command, an
# SMSC that /health?require=smsc waits for): it says when to try again, for the clients and
# proxies that honour it, in its status line's entry so other answers pay nothing for it.
RETRY_AFTER_S = 1
_STATUS_LINES[503] += b"\r\nRetry-After: %d" % RETRY_AFTER_S


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or f"{status} Unknown".encode()


_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """``Date:`` and ``Server:``, formatted once a second."""
    global _date_cache  # noqa: PLW0603 (a one-entry cache)
    now = int(time.time())
    if _date_cache[0] != now:
        stamp = formatdate(now, usegmt=True)
        _date_cache = (now, f"Date: {stamp}\r\nServer: smsrelay\r\n".encode())
    return _date_cache[1]
