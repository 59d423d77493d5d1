"""The API's server over TLS: a connection counts against the cap from its accept."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from smsrelay.api import http_server, tls_listener
from smsrelay.api.app import MAX_BODY, protocol_error
from smsrelay.api.http_server import HttpServer
from smsrelay.api.http_types import Request, Response
from tests.support import eventually

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
Start = Callable[[int], Awaitable[tuple[HttpServer, int]]]


class Hello:
    """Answers ``{"ok":true}``; a request to ``/slow`` first waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow = 0  # requests to /slow being handled

    async def __call__(self, request: Request) -> Response:
        if request.path == "/slow":
            self.slow += 1
            await self.release.wait()
        return Response(200, b'{"ok":true}', "application/json")


@pytest.fixture
async def start(certificate: tuple[str, str]) -> AsyncIterator[Start]:
    servers: list[HttpServer] = []

    async def run(max_connections: int) -> tuple[HttpServer, int]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
        server = HttpServer(
            Hello(),
            protocol_error,
            max_body=MAX_BODY,
            idle_timeout=75,
            body_timeout=30,
            max_connections=max_connections,
        )
        port = await server.start("127.0.0.1", 0, tls=context)
        servers.append(server)
        return server, port

    yield run
    for server in servers:
        await server.close(grace=0.1)


def client_tls(certificate: tuple[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificate[0])


async def tls_connection(
    port: int, certificate: tuple[str, str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_tls(certificate), ssl_handshake_timeout=5
    )


async def get_health(port: int, certificate: tuple[str, str]) -> bytes:
    reader, writer = await tls_connection(port, certificate)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer.split(b"\r\n", 1)[0]


async def test_sockets_in_their_handshake_count_against_the_cap(
    start: Start, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the listener doing the handshake, a socket that never said hello was not counted:
    # a flood of them took every descriptor, the ones kept for the database and SMPP too.
    # Each holds two descriptors while it lasts (the spare kept to answer plain HTTP), so it
    # counts twice: three take a cap of six. A newcomer takes the oldest one's place.
    monkeypatch.setattr(tls_listener, "TLS_HANDSHAKE_TIMEOUT", 1.0)
    server, port = await start(6)
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await eventually(lambda: _handshaking(server) == 3)
    assert await get_health(port, certificate) == b"HTTP/1.1 200 OK"
    assert await asyncio.wait_for(silent[0][0].read(), 5) == b""  # cut short for it
    assert (server.turned_away, server.reclaimed) == (0, 1)

    for reader, _ in silent[1:]:  # the others are hung up on when their handshake time is out
        assert await asyncio.wait_for(reader.read(), 5) == b""
    assert await get_health(port, certificate) == b"HTTP/1.1 200 OK"
    for _, writer in silent:
        writer.close()


async def test_at_the_cap_an_idle_connection_gives_its_place_and_a_busy_one_never(
    start: Start, certificate: tuple[str, str]
) -> None:
    # As over plain http: one client re-opening idle connections held every slot, and every
    # other client was closed at accept for as long as it liked.
    server, port = await start(2)
    handler = cast(Hello, server.handle)
    busy = await tls_connection(port, certificate)
    busy[1].write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await eventually(lambda: handler.slow == 1)
    idle = await tls_connection(port, certificate)  # handshaken, no request
    await eventually(lambda: len(server.connections) == 2)

    assert await get_health(port, certificate) == b"HTTP/1.1 200 OK"  # in idle's place
    assert await asyncio.wait_for(idle[0].read(), 5) == b""
    assert (server.turned_away, server.reclaimed) == (0, 1)

    await eventually(lambda: len(server.connections) == 1)  # the newcomer's closed
    second_busy = await tls_connection(port, certificate)
    second_busy[1].write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await eventually(lambda: handler.slow == 2)  # both slots have a request in hand
    with pytest.raises((OSError, ssl.SSLError, asyncio.IncompleteReadError)):
        await get_health(port, certificate)  # closed at accept: nothing to reclaim
    assert (server.turned_away, server.reclaimed) == (1, 1)
    handler.release.set()
    for reader, writer in (busy, second_busy):
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
    idle[1].close()


async def test_a_pooled_keep_alive_client_loses_no_request_to_a_flood_of_idle_sockets(
    start: Start, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As over plain http, and more so: a newcomer took an idle connection's place before a
    # handshake's, so a flood of sockets that never say hello closed a pool's connections
    # between two sends, one per newcomer, while its own sockets waited out their handshake.
    monkeypatch.setattr(http_server, "GRACE_S", 60.0)  # a slow machine's pauses are no matter
    monkeypatch.setattr(tls_listener, "TLS_HANDSHAKE_TIMEOUT", 60.0)  # none ends on its own
    server, port = await start(8)
    pool = [await tls_connection(port, certificate) for _ in range(2)]
    for connection in pool:  # a pool in use: a connection that answered one request alone
        assert [await _reused(connection) for _ in range(2)] == [200, 200]  # is a flood's
    flood: list[Any] = []

    def all_taken() -> bool:  # every socket is a handshake, a connection, reclaimed or refused
        counted = _handshaking(server) + len(server.connections)
        return counted + server.reclaimed + server.turned_away == len(pool) + len(flood)

    lost = []
    for turn in range(3):
        for _ in range(4):  # each counts twice in its handshake: a cap's worth
            flood.append(await asyncio.open_connection("127.0.0.1", port))  # never says hello
        await eventually(all_taken)
        for _ in range(2):
            flood.append(await tls_connection(port, certificate))  # then silent
        await eventually(all_taken)
        for number, connection in enumerate(pool):  # each pooled connection reused
            status = await _reused(connection)
            if status != 200:
                lost.append((turn, number, status))
    assert lost == []
    assert server.turned_away == 0
    for _, writer in [*pool, *flood]:
        writer.close()


async def test_idle_sockets_cannot_lock_out_new_clients_despite_the_grace(
    start: Start, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Newcomers get in past a flood of silent sockets while the pool's connections are in
    # their grace; with every connection in its grace, the oldest answer gives its place.
    monkeypatch.setattr(http_server, "GRACE_S", 60.0)
    server, port = await start(4)
    pool = [await tls_connection(port, certificate) for _ in range(3)]
    for connection in pool:  # in use (see above)
        assert [await _reused(connection) for _ in range(2)] == [200, 200]
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await eventually(lambda: server.reclaimed == 2)  # the first two silent ones cut short
    assert await get_health(port, certificate) == b"HTTP/1.1 200 OK"  # the third's place
    assert await asyncio.wait_for(silent[2][0].read(), 5) == b""
    assert [await _reused(connection) for connection in pool] == [200] * 3  # none gave way

    await eventually(lambda: len(server.connections) == 3)  # /health's connection closed
    pool.append(await tls_connection(port, certificate))
    assert [await _reused(pool[-1]) for _ in range(2)] == [200, 200]
    assert len(server.graced) == 4  # all in their grace: the oldest answer is closed
    assert await get_health(port, certificate) == b"HTTP/1.1 200 OK"
    assert await asyncio.wait_for(pool[0][0].read(), 5) == b""
    assert [await _reused(connection) for connection in pool[1:]] == [200] * 3
    assert (server.turned_away, server.reclaimed) == (0, 4)
    for _, writer in [*pool, *silent]:
        writer.close()


async def test_a_one_request_flood_does_not_cut_a_new_clients_handshake(
    start: Start, certificate: tuple[str, str]
) -> None:
    # Every slot a connection that answered one request, in its grace: a newcomer cut the
    # handshake under way, a real client's, and only 50 of 166 new clients got in (the
    # re-test). A young handshake now goes after the connections that answered one request.
    server, port = await start(6)
    used_once = []
    for _ in range(6):  # each sends one request, reads its answer, then goes silent
        reader, writer = await tls_connection(port, certificate)
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b'{"ok":true}')
        used_once.append((reader, writer))
    client = socket.create_connection(("127.0.0.1", port))  # its hello still to come
    await eventually(lambda: _handshaking(server) == 1)
    silent = socket.create_connection(("127.0.0.1", port))  # says no hello, ever
    await eventually(lambda: _handshaking(server) == 2)
    context = ssl.create_default_context(cafile=certificate[0])
    reader, writer = await asyncio.open_connection(
        sock=client, ssl=context, server_hostname="127.0.0.1", ssl_handshake_timeout=5
    )
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
    assert server.turned_away == 0 and server.reclaimed >= 2  # used-once ones gave way
    silent.close()
    writer.close()
    for _, used in used_once:
        used.close()


async def test_a_flood_from_one_address_takes_its_own_places_not_another_clients_pool_tls(
    start: Start, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As over plain http: a client's pooled connections, the longest idle, gave their
    # places to a flood of silent connections; from another address, the flood's go first.
    monkeypatch.setattr(http_server, "GRACE_S", 0.0)  # the pool's: idle, the longest idle
    cap = 6
    server, port = await start(cap)
    pool = [await _tls_from("127.0.0.3", port, certificate) for _ in range(2)]
    for connection in pool:
        assert await _reused(connection) == 200
    flood: list[Any] = []
    lost = []
    for turn in range(3):
        for _ in range(cap):  # handshaken, then silent
            flood.append(await _tls_from("127.0.0.2", port, certificate))
        await eventually(
            lambda: len(server.connections) + server.reclaimed == len(pool) + len(flood)
        )
        for number, connection in enumerate(pool):
            if (status := await _reused(connection)) != 200:
                lost.append((turn, number, status))
    assert lost == []
    assert (server.turned_away, server.reclaimed) == (0, len(pool) + len(flood) - cap)
    assert await _reused(flood[-1]) == 200  # the flood's newest got in
    for _, writer in [*pool, *flood]:
        writer.close()


async def test_a_handshake_cut_for_a_newcomer_is_the_heaviest_clients(
    start: Start, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The oldest handshake was cut first, whoever's: a real client's, ahead of a flood of
    # sockets that never say hello from another address, opened after it.
    monkeypatch.setattr(tls_listener, "HANDSHAKE_SPARED_S", 0.0)  # every one as old
    monkeypatch.setattr(tls_listener, "TLS_HANDSHAKE_TIMEOUT", 60.0)
    server, port = await start(6)  # three handshakes (each counts twice)
    client = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.3", 0))
    await eventually(lambda: _handshaking(server) == 1)  # its hello still to come
    silent = []
    for count in range(5):  # never say hello
        silent.append(socket.create_connection(("127.0.0.1", port), source_address=_FLOOD))
        await eventually(lambda n=2 + count: _handshaking(server) + server.reclaimed == n)
    context = client_tls(certificate)
    reader, writer = await asyncio.open_connection(
        sock=client, ssl=context, server_hostname="127.0.0.1", ssl_handshake_timeout=5
    )
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
    assert (server.turned_away, server.reclaimed) == (0, 3)  # the flood's own, oldest first
    assert not await _closed(silent[-1]) and await _closed(silent[0])
    writer.close()
    for sock in silent:
        sock.close()


_FLOOD = ("127.0.0.2", 0)


async def _closed(sock: socket.socket) -> bool:
    """The server closed this raw socket (EOF or a reset) within a short wait."""
    sock.setblocking(False)
    try:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 10), 0.3) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


async def _tls_from(
    address: str, port: int, certificate: tuple[str, str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection from ``address`` (Linux routes all of 127/8 to lo): another client."""
    return await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=client_tls(certificate),
        server_hostname="127.0.0.1",
        ssl_handshake_timeout=5,
        local_addr=(address, 0),
    )


async def _reused(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> int | None:
    """A request on a kept-alive connection: its answer's status, None if it was closed."""
    reader, writer = connection
    writer.write(b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\ntext=hi")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await reader.readexactly(len(b'{"ok":true}'))
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        return None
    return int(head.split()[1])


async def test_a_newcomer_never_cuts_short_a_connection_whose_handshake_just_ended(
    start: Start, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The diff review: a connection admitted at the end of its handshake stayed "the oldest
    # handshake" until its task resumed a loop turn later; a newcomer accepted in that turn
    # cancelled it and closed the socket under a connection the server had taken.
    server, port = await start(3)
    handler = cast(Hello, server.handle)
    busy = await tls_connection(port, certificate)
    busy[1].write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await eventually(lambda: handler.slow == 1)
    listener = server._tls_listener
    assert listener is not None
    loop = asyncio.get_running_loop()
    newcomer, its_peer = socket.socketpair()
    admit = server.admit

    def admit_then_a_newcomer_in_the_same_turn(connection: Any) -> bool:
        monkeypatch.setattr(server, "admit", admit)
        loop.call_soon(listener._take, newcomer, loop)  # before the handshake's task resumes
        return admit(connection)

    monkeypatch.setattr(server, "admit", admit_then_a_newcomer_in_the_same_turn)
    reader, writer = await tls_connection(port, certificate)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    assert server.reclaimed == 0
    handler.release.set()
    for _, open_writer in (busy, (reader, writer)):
        open_writer.close()
    its_peer.close()


async def test_a_handshake_under_way_when_the_server_closes_is_not_served(
    start: Start, certificate: tuple[str, str]
) -> None:
    server, port = await start(10)
    plain = socket.create_connection(("127.0.0.1", port))
    await eventually(lambda: _handshaking(server) == 1)
    await server.close(grace=0.1)
    with pytest.raises((OSError, ssl.SSLError)):
        await asyncio.to_thread(_handshake, plain, client_tls(certificate))
    plain.close()


def _handshake(plain: socket.socket, context: ssl.SSLContext) -> None:
    plain.settimeout(5)
    with context.wrap_socket(plain, server_hostname="127.0.0.1") as secured:
        secured.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        if not secured.recv(100):
            raise ConnectionResetError("closed")


def _handshaking(server: HttpServer) -> int:
    assert server._tls_listener is not None
    return server._tls_listener.handshaking


async def test_a_port_in_use_is_refused_with_its_address(
    start: Start, certificate: tuple[str, str]
) -> None:
    _, port = await start(10)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    second = HttpServer(
        Hello(), protocol_error, max_body=MAX_BODY, idle_timeout=75, body_timeout=30
    )
    with pytest.raises(OSError, match=f"'127.0.0.1', {port}") as refused:
        await second.start("127.0.0.1", port, tls=context)
    assert refused.value.errno == errno.EADDRINUSE  # serve's "another smsrelay running?" hint


async def test_plain_http_clients_are_logged_with_their_address_a_line_a_second(
    start: Start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A line per client, with no address: a scanner made hundreds, none saying who.
    monkeypatch.setattr(tls_listener, "PLAIN_SAID_EVERY_S", 60.0)  # a slow machine's second
    caplog.set_level("INFO", logger="smsrelay.api")
    _, port = await start(100)

    async def plain_request() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    for _ in range(3):
        assert b"this port speaks https" in await plain_request()
    lines = [r for r in caplog.records if r.getMessage() == "api.plain_http_on_https_port"]
    assert len(lines) == 1  # the three within the interval
    assert lines[0].__dict__["peer"].startswith("127.0.0.1:") and lines[0].__dict__["count"] == 1


async def test_the_end_of_a_plain_http_burst_is_told_when_its_interval_ends(
    start: Start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Told only with the next client's line, a burst's end could go unsaid for hours.
    monkeypatch.setattr(tls_listener, "PLAIN_SAID_EVERY_S", 2.0)  # the burst fits in it
    caplog.set_level("INFO", logger="smsrelay.api")
    _, port = await start(100)
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"this port speaks https" in await asyncio.wait_for(reader.read(), 10)
        writer.close()

    def told() -> int:
        lines = [r for r in caplog.records if r.getMessage() == "api.plain_http_on_https_port"]
        return sum(line.__dict__["count"] for line in lines)

    await eventually(lambda: told() == 3, timeout=10)


async def test_a_request_over_tls_knows_its_peers_address(certificate: tuple[str, str]) -> None:
    # what an account's allowed addresses are checked against, over https as over http
    async def peer(request: Request) -> Response:
        return Response(200, request.peer.encode(), "text/plain")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = HttpServer(peer, protocol_error, max_body=MAX_BODY, idle_timeout=75, body_timeout=30)
    port = await server.start("127.0.0.1", 0, tls=context)
    try:
        reader, writer = await tls_connection(port, certificate)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await server.close(grace=0.1)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n127.0.0.1")


async def test_a_handshake_cut_in_the_turn_its_connection_is_made_is_closed_cleanly(
    start: Start, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newcomer may cut a handshake in the loop turn its connection is made. The cut task
    # closed the socket itself, under the transport asyncio then closes too: the transport
    # was left unclosed (a descriptor leaked) and asyncio's TLS layer raised on it.
    made = tls_listener.TlsListener._handshake_over
    cut = 0

    def cut_as_made(listener: tls_listener.TlsListener, handshake: asyncio.Task[None]) -> None:
        nonlocal cut
        made(listener, handshake)
        if not cut and not handshake.done():
            cut += 1
            handshake.cancel()  # as a newcomer's cut, in the same turn

    monkeypatch.setattr(tls_listener.TlsListener, "_handshake_over", cut_as_made)
    server, port = await start(10)
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await asyncio.wait_for(get_health(port, certificate), 10)  # its connection is gone
    assert cut == 1
    await eventually(lambda: not server.connections)  # let go by its transport
    assert await asyncio.wait_for(get_health(port, certificate), 10) == b"HTTP/1.1 200 OK"
