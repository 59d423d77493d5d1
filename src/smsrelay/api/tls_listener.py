"""https for the API's server: its own accept loop, so that a connection counts against the
connection cap from its accept, through its TLS handshake.

With the handshake done by the listener (``create_server(ssl=...)``), the protocol learns of
a connection only once its handshake is over: sockets that connect and never say hello were
not counted, and a flood of them took the descriptors kept for the database, the SMSC links
and the callbacks (the cap's whole point). Here a socket over the cap is closed at accept,
and one in its handshake holds its place until the handshake ends, TLS_HANDSHAKE_TIMEOUT at
most. At the cap, a newcomer takes the place of an idle connection or of a handshake under
way, in the order ``_room_for_one`` gives (the server's passes, with handshakes between them:
an old one is most likely a socket that never says hello, a young one a real client's); only
when none makes room is it closed at accept. The context is read at each handshake: a
certificate reload replaces ``tls``.

A client that speaks plain HTTP to the port (``curl http://…:8443``) got an empty reply and
no hint. OpenSSL recognises an HTTP request where its handshake should be (and sends no alert),
so such a client is answered 400 "this port speaks https" in clear text, on a second
descriptor of the connection kept through each handshake (a dup and a close: the cheaper
way; peeking at the first octet before the handshake cost a loop turn per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from smsrelay.api.client_shares import ClientShares, Holder
from smsrelay.logs import SparseLine

TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a client has to finish its TLS handshake
# A handshake younger than this is cut for a newcomer only after every connection that has
# answered: a client's handshake takes a few round trips, and cut first (ahead of a
# one-request flood's connections in their grace) most new clients were locked out (the
# re-test: 50 of 166); older, it is a socket that says no hello, cut first.
HANDSHAKE_SPARED_S = 1.0
# How far a newcomer's place may come from (HttpServer._to_reclaim's passes): the idle only,
# those in their grace that answered a single request too, or every one in its grace
IDLE, ANSWERED_ONCE, GRACED = 1, 2, 3
ACCEPT_RETRY_S = 0.1  # after an accept that failed for want of descriptors or memory
ACCEPT_WARNING_EVERY_S = 10.0
ACCEPT_BATCH = 64  # connections taken from the listen queue at once, past the awaited one
PLAIN_LINGER_S = 1.0  # after the plain-HTTP answer, its request is read and dropped so long
PLAIN_SAID_EVERY_S = 1.0  # plain-HTTP clients are logged a line a second at most
WALK_AT_MOST = 256  # clients looked at for a handshake to cut: a newcomer's cost stays bounded
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
log = logging.getLogger("smsrelay.api")


class TlsListener:
    def __init__(
        self,
        tls: ssl.SSLContext,
        make_protocol: Callable[[Callable[[], None]], asyncio.Protocol],
        make_room: Callable[[int, int, str], bool],
        turn_away: Callable[[], None],
        plain_http_answer: Callable[[], bytes],
        reclaimed: Callable[[], None],
        shares: ClientShares[Any],
    ) -> None:
        self.tls = tls
        self._plain_http_answer = plain_http_answer
        # given what its connection_made calls: the handshake is over, the connection is
        # the server's (no longer one a newcomer may cut short)
        self._make_protocol = make_protocol
        # given the handshakes under way, how far the passes may go (see IDLE) and the
        # newcomer's address: may one more begin (idle connections closed for it)?
        self._make_room = make_room
        # the places each client holds (a handshake is one), the server's connections too:
        # a handshake cut for a newcomer is first the heaviest client's
        self._shares = shares
        self._holder_of: dict[asyncio.Task[None], Holder[Any]] = {}
        self._turn_away = turn_away  # one was refused over the cap (counted, warned)
        self._reclaimed = reclaimed  # a handshake was cut short for a newcomer (counted, said)
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        # each with when it began, the oldest first
        self._handshakes: OrderedDict[asyncio.Task[None], float] = OrderedDict()
        self._last_warning = float("-inf")  # when an accept's failure was last logged
        self._plain_http = SparseLine(  # a burst's end is told when its second ends
            log, "api.plain_http_on_https_port", PLAIN_SAID_EVERY_S, "count", logging.INFO
        )

    @property
    def handshaking(self) -> int:
        return len(self._handshakes)

    async def start(self, host: str, port: int, backlog: int) -> int:
        """Listen on every address ``host`` names (as ``create_server`` does); the port."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            port = self._listen(infos, port, backlog)
        except BaseException:
            for listening in self._sockets:  # a port in use: nothing left open
                listening.close()
            raise
        self._accepting = [
            loop.create_task(self._accept(listening), name="api-tls-accept")
            for listening in self._sockets
        ]
        return port

    def _listen(self, infos: list[tuple[Any, ...]], port: int, backlog: int) -> int:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            listening = socket.socket(family, kind, proto)
            self._sockets.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            where = (address[0], port, *address[2:])
            try:
                listening.bind(where)
            except OSError as exc:  # as create_server says it: with the address
                message = f"error while attempting to bind on address {where[:2]!r}: {exc.strerror}"
                raise OSError(exc.errno, message) from exc
            listening.listen(backlog)
            listening.setblocking(False)
            port = port or int(listening.getsockname()[1])  # port 0: the others take the first's
        return port

    async def close(self) -> None:
        """Stop accepting; handshakes under way are cut short."""
        tasks = [*self._accepting, *self._handshakes]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for listening in self._sockets:
            listening.close()

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, address = await loop.sock_accept(listening)
            except OSError as exc:
                await self._accept_failed(exc)
                continue
            self._take(client, loop, str(address[0]))
            # the others already waiting, without a wait on the loop each (a reader added
            # and removed per accept cost a tenth of the connections a second)
            for _ in range(ACCEPT_BATCH):
                try:
                    client, address = listening.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    await self._accept_failed(exc)
                    break
                self._take(client, loop, str(address[0]))

    def _take(
        self, client: socket.socket, loop: asyncio.AbstractEventLoop, peer: str | None = None
    ) -> None:
        """Begin ``client``'s handshake if there is room; ``peer``: its address, as accept
        gave it (asked of the socket when not given)."""
        if peer is None:
            peer = _peer_of(client)
        if not self._room_for_one(peer):
            client.close()
            self._turn_away()
            return
        client.setblocking(False)
        handshake = loop.create_task(self._handshake(client))
        holder = self._holder_of[handshake] = self._shares.join(peer)
        self._handshakes[handshake] = holder.handshakes[handshake] = time.monotonic()
        handshake.add_done_callback(self._handshake_over)

    def _handshake_over(self, handshake: asyncio.Task[None]) -> None:
        """No longer a handshake under way (over, cut short, or its connection the
        server's): its place no longer counted as one, for the cap or its client."""
        if self._handshakes.pop(handshake, None) is None:
            return
        holder = self._holder_of.pop(handshake)
        del holder.handshakes[handshake]
        self._shares.leave(holder)

    def _room_for_one(self, peer: str) -> bool:
        """At the cap, a newcomer takes the place of: an idle connection; a handshake older
        than HANDSHAKE_SPARED_S (a socket that says no hello); a connection in its grace that
        answered one request; a younger handshake; any connection in its grace (see
        HttpServer._to_reclaim). A silent flood of sockets closed a client's pooled
        connections between two sends, and a one-request flood's connections outlived real
        clients' handshakes (50 of 166 new clients got in)."""
        make_room = self._make_room
        return (
            make_room(len(self._handshakes), IDLE, peer)
            or self._reclaim_handshake(HANDSHAKE_SPARED_S, peer)
            or make_room(len(self._handshakes), ANSWERED_ONCE, peer)
            or self._reclaim_handshake(0.0, peer)
            or make_room(len(self._handshakes), GRACED, peer)
        )

    def _reclaim_handshake(self, older_than: float, peer: str) -> bool:
        """Cut a handshake short for the newcomer from ``peer`` (see ``_handshake_to_cut``);
        whether that made room (it frees two descriptors, one newcomer's due)."""
        chosen = self._handshake_to_cut(older_than, peer)
        if chosen is None:
            return False
        self._handshake_over(chosen)  # no longer counted from now
        chosen.cancel()  # its socket closes on the loop's next turn
        self._reclaimed()
        return self._make_room(len(self._handshakes), GRACED, peer)

    def _handshake_to_cut(self, older_than: float, peer: str) -> asyncio.Task[None] | None:
        """The oldest handshake that began ``older_than`` seconds ago, unless a client
        holding more places than its client has one, the heaviest such first (as the
        server chooses among its connections: HttpServer._to_reclaim)."""
        now = time.monotonic()
        first = _oldest(self._handshakes, older_than, now)
        shares = self._shares
        if not self._handshakes or shares.clients <= 1:
            return first
        newcomer = shares.holder(peer)
        weight = 0
        if first is not None:
            holder = self._holder_of[first]
            weight = holder.held + (holder is newcomer)
        for looked, holder in enumerate(shares.heavier_than(weight, newcomer)):
            heavier = _oldest(holder.handshakes, older_than, now)
            if heavier is not None:
                return heavier
            if looked >= WALK_AT_MOST:
                break
        return first

    async def _accept_failed(self, exc: OSError) -> None:
        """Out of descriptors or memory: wait a little, the next try may find some; a client
        gone before its accept (ECONNABORTED): go on at once. Logged once in a while."""
        now = time.monotonic()
        if now - self._last_warning >= ACCEPT_WARNING_EVERY_S:
            self._last_warning = now
            log.warning("api.accept.failed", extra={"error": str(exc)})
        if exc.errno in OUT_OF_RESOURCES:
            await asyncio.sleep(ACCEPT_RETRY_S)

    async def _handshake(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        # a second descriptor of the connection, kept through the handshake: when the client
        # spoke plain HTTP, the transport has closed its own, and the answer goes by this one
        # (the cap counts a handshake twice for it; with none to spare, no answer, that's all)
        spare: socket.socket | None = None
        with contextlib.suppress(OSError):
            spare = client.dup()
        this = asyncio.current_task()
        made = False

        def over() -> None:
            """The protocol is made: until this task ends (a loop turn later), a newcomer
            cancelling it would close a connection the server has taken, a request in hand."""
            nonlocal made
            made = True
            if this is not None:
                self._handshake_over(cast("asyncio.Task[None]", this))

        try:
            await loop.connect_accepted_socket(
                lambda: self._make_protocol(over),
                client,
                ssl=self.tls,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            )
        except asyncio.CancelledError:  # its place given to a newcomer, or the server closing
            if not made:  # cut in the turn its connection was made: the socket is the server's
                client.close()
            raise
        except Exception as exc:  # a failed or slow handshake, a client gone
            log.debug("api.tls.handshake_failed", extra={"error": str(exc)})
            client.close()
            plain_http = getattr(exc, "reason", None) == "HTTP_REQUEST"  # as OpenSSL saw it
            if plain_http and spare is not None:
                await self._answer_plain_http(loop, spare)
        finally:
            if spare is not None:
                spare.close()

    def _say_plain_http(self, client: socket.socket) -> None:
        """Who spoke plain HTTP here: a line a second at most (a misconfigured client or a
        scanner may do it hundreds of times a second) with the latest one's address and how
        many it stands for; the rest of a burst is told when its second ends."""
        peer = "?"
        with contextlib.suppress(OSError, IndexError, TypeError):
            address = client.getpeername()
            peer = f"{address[0]}:{address[1]}"
        self._plain_http.note({"peer": peer})

    async def _answer_plain_http(
        self, loop: asyncio.AbstractEventLoop, client: socket.socket
    ) -> None:
        """The answer in clear text, then the request read and dropped until the client goes
        (closing with it unread would reset the connection before the client read the 400).
        The caller closes ``client``."""
        self._say_plain_http(client)
        with contextlib.suppress(OSError):  # TimeoutError among them: the linger is over
            client.send(self._plain_http_answer())  # small: the socket's buffer takes it
            client.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(PLAIN_LINGER_S):
                while await loop.sock_recv(client, 65536):
                    pass


def _oldest(
    handshakes: OrderedDict[asyncio.Task[None], float], older_than: float, now: float
) -> asyncio.Task[None] | None:
    """The oldest of ``handshakes`` if it began ``older_than`` seconds ago."""
    for handshake, began in handshakes.items():
        return handshake if now - began >= older_than else None
    return None


def _peer_of(client: socket.socket) -> str:
    """The address of an accepted socket's client ("" if it has none: a Unix socket)."""
    try:
        address = client.getpeername()
    except OSError:
        return ""
    return str(address[0]) if isinstance(address, tuple) else ""
