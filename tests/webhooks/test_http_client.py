"""The callback HTTP client against raw TCP servers that answer exactly the bytes a test wants."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import shutil
import socket
import ssl
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from smsrelay.webhooks import http_client, name_cache
from smsrelay.webhooks.address_safety import UnsafeAddress
from smsrelay.webhooks.http_client import (
    BadResponse,
    CallbackClient,
    ConnectFailed,
    Disconnected,
    InvalidTarget,
    Target,
    tls_context,
)
from tests.support import eventually

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
Answer = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]  # False: close


@dataclass
class RawServer:
    """Reads whole requests (headers + Content-Length body); ``answer`` writes the reply."""

    answer: Answer
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answer(len(self.requests), request, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def plain_ok(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(OK)
    return True


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(answer: Answer = plain_ok, tls: ssl.SSLContext | None = None) -> RawServer:
        raw = RawServer(answer)
        raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=tls)
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        assert raw.server is not None
        raw.server.close()


@pytest.fixture
async def client() -> AsyncIterator[CallbackClient]:
    made = CallbackClient(allow_private=True, max_idle=4, keepalive=30.0)
    yield made
    await made.close()


def target(server: RawServer, path: str = "/cb") -> Target:
    return Target.parse(f"http://127.0.0.1:{server.port}{path}")


async def test_posts_reuse_one_connection_and_send_what_they_say(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    server = await serve()
    for n in range(3):
        assert await client.post(target(server, "/cb?x=1"), {"X-N": str(n)}, b'{"n":1}') == 200
    assert server.connections == 1
    head, body = server.requests[2].split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /cb?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"X-N: 2" in lines and b"Content-Length: 7" in lines
    assert body == b'{"n":1}'


async def test_idle_connections_are_kept_up_to_a_total_for_all_receivers(
    serve: Callable[..., Awaitable[RawServer]],
    client: CallbackClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 200 receivers kept 2,000 idle sockets, out of the open files the API leaves over
    monkeypatch.setattr(http_client, "MAX_IDLE_TOTAL", 2)
    servers = [await serve() for _ in range(3)]
    for n in (0, 1, 2, 2, 1, 0):
        assert await client.post(target(servers[n]), {}, b"{}") == 200
    # the third's made room by closing the first's (idle longest); the third and second
    # reused theirs; the first needed a new one
    assert [server.connections for server in servers] == [2, 1, 1]


async def test_a_chunked_answer_is_read_to_its_end_and_the_connection_kept(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    async def chunked(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"3\r\nabc\r\n0\r\n\r\n")
        return True

    server = await serve(chunked)
    assert [await client.post(target(server), {}, b"x") for _ in range(2)] == [202, 202]
    assert server.connections == 1


async def test_an_interim_answer_is_skipped_for_the_real_one(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    async def continue_first(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        return True

    server = await serve(continue_first)
    assert [await client.post(target(server), {}, b"x") for _ in range(2)] == [201, 201]
    assert server.connections == 1


async def test_bytes_after_a_complete_answer_are_not_read_as_the_next_answer(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    # The stray began a second answer; the next callback's 500 completed it as a 200, and that
    # callback (another account's, on the same host) was recorded as delivered.
    async def stray_then_500(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            writer.write(OK + b"HTTP/1.1 200 OK\r\nX-A: ")
        else:
            writer.write(b"HTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n")
        return True

    server = await serve(stray_then_500)
    assert [await client.post(target(server), {}, b"x") for _ in range(2)] == [200, 500]
    assert server.connections == 2  # the first connection was not reused


async def test_an_answer_ended_by_closing_gives_its_status_and_a_new_connection_next(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    async def close_delimited(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.0 500 Oops\r\n\r\nno length, ends with the connection")
        return False

    server = await serve(close_delimited)
    assert [await client.post(target(server), {}, b"x") for _ in range(2)] == [500, 500]
    assert server.connections == 2


async def test_a_large_answer_is_not_drained_and_its_connection_is_dropped(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    async def huge(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        size = 1_000_000
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size)
        return True

    server = await serve(huge)
    assert [await client.post(target(server), {}, b"x") for _ in range(2)] == [200, 200]
    assert server.connections == 2


async def test_a_receiver_closing_an_idle_connection_as_we_write_gets_the_post_again(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    async def forget_second(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            return False  # closes without answering, as a keep-alive timeout would
        writer.write(OK)
        return True

    server = await serve(forget_second)
    assert await client.post(target(server), {}, b"first") == 200
    assert await client.post(target(server), {}, b"second") == 200
    assert [r.split(b"\r\n\r\n")[1] for r in server.requests] == [b"first", b"second", b"second"]
    assert server.connections == 2


async def test_no_answer_on_a_fresh_connection_is_a_disconnect(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    async def hang_up(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    server = await serve(hang_up)
    with pytest.raises(Disconnected, match="server disconnected"):
        await client.post(target(server), {}, b"x")


async def test_a_malformed_answer_is_reported(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    async def garbage(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        return True

    server = await serve(garbage)
    with pytest.raises(BadResponse, match="malformed answer"):
        await client.post(target(server), {}, b"x")


async def test_a_refused_connection_says_so(client: CallbackClient) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(ConnectFailed, match="connection failed"):
        await client.post(Target.parse(f"http://127.0.0.1:{port}/"), {}, b"x")


async def test_private_addresses_are_refused_before_connecting(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    server = await serve()
    strict = CallbackClient(allow_private=False, max_idle=4, keepalive=30.0)
    for url in (f"http://127.0.0.1:{server.port}/", f"http://localhost:{server.port}/"):
        with pytest.raises(UnsafeAddress):
            await strict.post(Target.parse(url), {}, b"x")
    assert server.connections == 0


async def test_a_cancelled_post_does_not_leave_its_connection_for_the_next(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    first_answer = asyncio.Event()  # the first request is answered only when the test says

    async def slow_first(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            await first_answer.wait()
        writer.write(OK)
        return True

    server = await serve(slow_first)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.post(target(server), {}, b"x")
    assert await client.post(target(server), {}, b"y") == 200
    assert server.connections == 2
    first_answer.set()  # lets the first handler end (its connection is already gone)


@pytest.mark.parametrize("reused", [False, True], ids=["new-connection", "kept-connection"])
async def test_a_post_given_a_timeout_gives_up_by_itself_and_drops_its_connection(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient, reused: bool
) -> None:
    release = asyncio.Event()  # the timed-out request is answered only when the test says
    silent = 2 if reused else 1

    async def silent_once(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == silent:
            await release.wait()
        writer.write(OK)
        return True

    server = await serve(silent_once)
    if reused:
        assert await client.post(target(server), {}, b"warm", timeout=5.0) == 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await client.post(target(server), {}, b"x", timeout=0.2)
    assert 0.15 <= loop.time() - started < 3.0  # by its own timer, not the test's deadline
    assert await client.post(target(server), {}, b"y", timeout=5.0) == 200
    assert server.connections == 2  # the timed-out connection was not handed out again
    release.set()


def test_targets_split_the_url_once() -> None:
    ipv6 = Target.parse("http://[::1]:8080/a%20b?c=d")
    assert (ipv6.host, ipv6.port, ipv6.host_header, ipv6.path) == (
        "::1",
        8080,
        "[::1]:8080",
        "/a%20b?c=d",
    )
    tls = Target.parse("https://Example.COM/")
    assert (tls.host, tls.port, tls.host_header) == ("example.com", 443, "example.com")
    assert Target.parse("http://example.com").path == "/"
    for bad in ("ftp://example.com/", "http:///nohost", "not a url"):
        with pytest.raises(InvalidTarget):
            Target.parse(bad)


async def test_user_info_in_the_url_becomes_basic_credentials(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient
) -> None:
    server = await serve()
    url = f"http://app:s%40cret@127.0.0.1:{server.port}/cb"
    assert await client.post(Target.parse(url), {}, b"x") == 200
    expected = base64.b64encode(b"app:s@cret")
    assert b"Authorization: Basic " + expected in server.requests[0]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
async def test_https_posts_to_a_trusted_certificate_and_refuses_an_untrusted_one(
    serve: Callable[..., Awaitable[RawServer]], certificate: tuple[str, str]
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = await serve(tls=server_tls)
    url = Target.parse(f"https://127.0.0.1:{server.port}/cb")
    trusting = CallbackClient(
        allow_private=True, max_idle=4, keepalive=30.0, tls=ssl.create_default_context(cafile=cert)
    )
    assert [await trusting.post(url, {}, b"x") for _ in range(2)] == [200, 200]
    assert server.connections == 1
    await trusting.close()
    default = CallbackClient(allow_private=True, max_idle=4, keepalive=30.0)
    with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await default.post(url, {}, b"x")
    assert len(server.requests) == 2


async def test_the_system_cas_are_loaded_once_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Loading the system's CA store takes tens of ms: on the loop it would stall every send.
    loaded_in: list[str] = []

    def recording_tls_context(extra_ca: str | None = None) -> ssl.SSLContext:
        loaded_in.append(threading.current_thread().name)
        return tls_context(extra_ca)

    monkeypatch.setattr(http_client, "tls_context", recording_tls_context)
    # A server that hangs up at once: the handshake fails after the context is loaded.
    server = await asyncio.start_server(lambda _, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = CallbackClient(allow_private=True, max_idle=4, keepalive=30.0)
    for _ in range(2):
        with pytest.raises(ConnectFailed):
            await client.post(Target.parse(f"https://127.0.0.1:{port}/cb"), {}, b"x")
    server.close()
    assert len(loaded_in) == 1 and loaded_in[0] != threading.main_thread().name


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
async def test_an_extra_ca_is_trusted_besides_the_system_ones(
    serve: Callable[..., Awaitable[RawServer]], certificate: tuple[str, str], tmp_path: Path
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = await serve(tls=server_tls)
    extra = tls_context(cert)
    assert len(extra.get_ca_certs()) == len(tls_context().get_ca_certs()) + 1
    client = CallbackClient(allow_private=True, max_idle=4, keepalive=30.0, tls=extra)
    assert await client.post(Target.parse(f"https://127.0.0.1:{server.port}/"), {}, b"x") == 200
    await client.close()
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(ssl.SSLError):
        tls_context(str(not_pem))


async def test_a_closed_connection_is_freed_at_once_not_at_a_full_collection() -> None:
    # Its parser held its callbacks and it held the parser: under load ~10,000 closed
    # connections and their transports waited for the collector's rare full passes.
    connection = http_client._Connection(asyncio.get_running_loop())
    gc.disable()
    try:
        connection.connection_lost(None)
        gone = weakref.ref(connection)
        del connection
        assert gone() is None
    finally:
        gc.enable()


@pytest.fixture
def looked_up(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each name the stdlib loop's resolver is asked for, in order (still resolved)."""
    names: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def counting(host: str, *args: Any, **kwargs: Any) -> Any:
        names.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    return names


async def test_new_connections_to_a_name_look_it_up_once_in_a_while(
    serve: Callable[..., Awaitable[RawServer]], client: CallbackClient, looked_up: list[str]
) -> None:
    # A receiver that closes each connection cost a resolver round trip per callback.
    async def closes_each(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return False

    server = await serve(closes_each)
    named = Target.parse(f"http://localhost:{server.port}/cb")
    assert [await client.post(named, {}, b"x") for _ in range(3)] == [200, 200, 200]
    assert server.connections == 3 and looked_up == ["localhost"]


async def test_a_name_none_of_whose_addresses_answer_is_kept_only_briefly(
    client: CallbackClient, looked_up: list[str]
) -> None:
    # A receiver's DNS failover: its old address kept for 30 s was 30 s of failed callbacks.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    for _ in range(2):
        with pytest.raises(ConnectFailed):
            await client.post(Target.parse(f"http://localhost:{port}/"), {}, b"x")
    # not one lookup per failed callback (a receiver down): kept as briefly as a failure
    assert looked_up == ["localhost"]
    [(until, _)] = client._names._entries.values()
    assert until - time.monotonic() <= name_cache.KEEP_FAILURE_FOR


def test_an_answer_that_came_while_the_process_was_paused_is_not_a_timeout() -> None:
    # SIGSTOP for 2 minutes: on uvloop the timers ran before the sockets were read, so every
    # post in flight timed out with its 200 waiting in the socket, and was posted again
    import uvloop

    uvloop.run(_post_across_a_pause())


TIMEOUT = 0.3  # the post's own


async def _post_across_a_pause() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    wake, woken = os.pipe()
    pausing, answered, done = threading.Event(), threading.Event(), threading.Event()
    arrived: list[float] = []

    def receiver() -> None:  # its own thread: a paused gateway does not pause its receivers
        connection, _ = listener.accept()
        with connection:
            request = b""
            while not request.endswith(b"{}"):
                request += connection.recv(4096)
            arrived.append(time.monotonic())  # after the post's write: its timer runs out
            os.write(woken, b"x")  # at most TIMEOUT from now; the gateway pauses...
            assert pausing.wait(10)
            connection.sendall(OK)  # ...and the answer comes meanwhile
            answered.set()
            done.wait(10)

    def paused() -> None:  # in the loop's I/O phase, as a SIGSTOP could fall
        os.read(wake, 1)
        pausing.set()
        assert answered.wait(10)  # the answer waits in the socket, unread
        _block_until(arrived[0] + TIMEOUT + 0.05)  # and the post's deadline passes

    thread = threading.Thread(target=receiver, daemon=True)
    thread.start()
    loop = asyncio.get_running_loop()
    loop.add_reader(wake, paused)
    client = CallbackClient(allow_private=True, max_idle=4, keepalive=30.0)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cb"
        assert await client.post(Target.parse(url), {}, b"{}", timeout=TIMEOUT) == 200
    finally:
        done.set()
        loop.remove_reader(wake)
        await client.close()
        thread.join(10)
        listener.close()
        os.close(wake)
        os.close(woken)


def _block_until(instant: float) -> None:
    """Hold this thread (the event loop's, as a SIGSTOP holds it) until the monotonic clock
    has passed ``instant``."""
    while (left := instant - time.monotonic()) > 0:
        time.sleep(left)


async def test_connections_open_at_once_are_capped_for_all_receivers_together(
    serve: Callable[..., Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100 receivers' slots ran the process out of open files: SQLite could not open its own
    monkeypatch.setattr(http_client, "MAX_OPEN_TOTAL", 2)
    release = asyncio.Event()

    async def held(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        writer.write(OK)
        return True

    busy, other = await serve(held), await serve()
    client = CallbackClient(allow_private=True, max_idle=4, keepalive=30.0)
    try:
        posts = [asyncio.ensure_future(client.post(target(busy), {}, b"{}")) for _ in range(10)]
        await eventually(lambda: busy.connections == 2 and client.waiting_for_room == 8)
        assert busy.connections == 2 and not any(post.done() for post in posts)  # 8 wait
        release.set()
        assert await asyncio.gather(*posts) == [200] * 10
        # the waiting posts to the same receiver took the two connections in turn: closing
        # each for room cost a new connection (a TLS handshake) per post (the diff review)
        assert busy.connections == 2
        # two idle sockets to `busy` now: a post elsewhere closes one to make room
        assert await asyncio.wait_for(client.post(target(other), {}, b"{}"), 5) == 200
    finally:
        await client.close()
