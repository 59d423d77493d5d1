"""Helpers shared by the test suites: waiting on conditions, running the real gateway."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import orjson

from smsrelay import runtime
from smsrelay.settings import Settings, load_settings

SMSRELAY = str(Path(sys.executable).with_name("smsrelay"))


async def eventually(
    condition: Callable[[], Awaitable[Any] | Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)


@dataclass
class RunningGateway:
    base_url: str
    api_key: str
    number: str
    running: runtime.Running
    lines: list[str]

    @property
    def store(self) -> Any:
        return self.running.gateway.store

    async def post(
        self,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = orjson.dumps(body) if isinstance(body, dict) else body
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.base_url + path, data=data, headers=headers or {}) as resp,
        ):
            return resp.status, await _decode(resp)

    async def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.base_url + path, params=params) as resp,
        ):
            return resp.status, await _decode(resp)

    async def send(self, **fields: Any) -> tuple[int, Any]:
        body = {"apiKey": self.api_key, "from": self.number, "to": "0612345678", "message": "Hello"}
        body.update(fields)
        return await self.post("/v1/vn/send", body, {"Content-Type": "application/json"})

    async def send_and_wait_until_it_left(self, **fields: Any) -> int:
        """Send, then wait until the SMSC took it: a reply can only answer a message that
        reached the person."""
        status, answer = await self.send(**fields)
        assert status == 200, answer
        message_id = int(answer["message_id"])

        async def left() -> bool:
            message = await self.running.gateway.store.get_message(message_id)
            return message is not None and all(p.submitted_at for p in message.parts)

        await eventually(left)
        return message_id

    async def status(self, message_id: int) -> dict[str, Any]:
        """``/v1/message-status`` for one of this account's messages (its recipient looked up,
        as a lookup names both)."""
        message = await self.running.gateway.store.get_message(message_id)
        phone = message.recipient if message is not None else "+33612345678"
        lookup = {"apiKey": self.api_key, "messageId": str(message_id), "phoneNumber": phone}
        _, answer = await self.get("/v1/message-status", lookup)
        return dict(answer)


async def _decode(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
    if resp.content_type == "application/json":
        return orjson.loads(raw)
    return raw.decode()


def gateway_settings(tmp_path: Path, **overrides: Any) -> Settings:
    flags: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "port": 0,
        "builtin_smsc_port": 0,
        "builtin_smsc_control_port": 0,
        "log_level": "WARNING",
        "demo_quiet_hours": False,  # tests must pass at 3 AM and on Sundays too
        "demo": True,  # with a separate SMSC process too
    }
    flags.update(overrides)
    return load_settings(flags, env={})


async def start_gateway(settings: Settings) -> RunningGateway:
    lines: list[str] = []
    running = await runtime.start(settings, lines.append)
    demo = next(line for line in lines if line.startswith("demo account:"))
    match = re.search(r"apiKey=(\S+) number=(\S+)", demo)
    assert match, demo
    base = f"http://127.0.0.1:{running.http_port}"
    return RunningGateway(base, match.group(1), match.group(2), running, lines)


@dataclass
class SmscProcess:
    """The simulator as a separate process (`smsrelay smsc`), with its control API."""

    process: asyncio.subprocess.Process
    port: int
    control_url: str

    @property
    def url(self) -> str:
        return f"smpp://smsrelay:smsrelay@127.0.0.1:{self.port}"

    async def submits(self) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.control_url + "/submits") as resp,
        ):
            return list(orjson.loads(await resp.read()))

    async def stats(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.control_url + "/stats") as resp,
        ):
            return dict(orjson.loads(await resp.read()))

    async def reply(self, source: str, destination: str, text: str) -> dict[str, Any]:
        """Inject an MO; the simulator's answer: how many PDUs and the gateway's statuses."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.control_url + "/reply",
                data=orjson.dumps({"from": source, "to": destination, "text": text}),
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            assert resp.status < 300, await resp.text()
            return dict(orjson.loads(await resp.read()))

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


# Every process started here, so a test that fails or times out before stopping its own
# leaves none running (and loading the next tests): see ``kill_leftovers``.
STARTED: list[asyncio.subprocess.Process] = []


def kill_leftovers() -> int:
    """SIGKILL every process started here that still runs; how many there were."""
    killed = 0
    while STARTED:
        process = STARTED.pop()
        if process.returncode is None:
            try:
                os.kill(process.pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:  # ended, not reaped yet
                pass
    return killed


async def start_smsc(*args: str) -> SmscProcess:
    process = await asyncio.create_subprocess_exec(
        SMSRELAY,
        "smsc",
        "--port",
        "0",
        "--control-port",
        "0",
        *args,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    STARTED.append(process)
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), 20)
    match = re.search(rb"listening on ([\d.]+):(\d+) \(control (http://[\d.:]+)\)", line)
    assert match, line
    return SmscProcess(process, int(match.group(2)), match.group(3).decode())


@dataclass
class ServeProcess:
    """`smsrelay serve` as a separate process, to be killed without warning."""

    process: asyncio.subprocess.Process
    base_url: str
    api_key: str
    number: str

    def kill(self) -> None:
        self.process.kill()

    async def wait(self) -> None:
        await self.process.wait()


async def start_serve(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> ServeProcess:
    log = _stderr_file(data_dir)
    process = await asyncio.create_subprocess_exec(
        SMSRELAY,
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SMSRELAY_LOG_LEVEL": "WARNING",
            "SMSRELAY_BUILTIN_SMSC_PORT": "0",
            "SMSRELAY_BUILTIN_SMSC_CONTROL_PORT": "0",
            # The demo account holds marketing at night and on Sundays: these tests must pass
            # at any hour (the quiet-hours tests set their own clock).
            "SMSRELAY_DEMO_QUIET_HOURS": "false",
            "SMSRELAY_DEMO": "true",  # with a separate SMSC process too
            **(env or {}),
        },
    )
    log.close()  # the child holds its own copy
    STARTED.append(process)
    assert process.stdout is not None
    seen: dict[str, str] = {}
    while "base" not in seen:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line, "serve exited before listening"
        note_serve_banner(line, seen)
    # No demo line when the database already has accounts (a second node of a shared one).
    return ServeProcess(process, seen["base"], seen.get("key", ""), seen.get("number", ""))


def _stderr_file(data_dir: Path) -> BinaryIO:
    """Where serve's log goes: kept with its data, for reading when a test fails."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return (data_dir / "serve.stderr").open("ab")


def note_serve_banner(line: str, seen: dict[str, str]) -> None:
    """What a line serve prints at start tells: the demo key and number, then its URL."""
    if match := re.search(r"apiKey=(\S+) number=(\S+)", line):
        seen["key"], seen["number"] = match.groups()
    if match := re.search(r"listening on (https?://\S+)", line):
        seen["base"] = match.group(1)


class Receiver:
    """A real HTTP receiver on loopback that records callbacks; can fail on purpose."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.fail_with: int | None = None
        self.port = 0
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        return [
            body for headers, body in self.received if path is None or headers.get(":path") == path
        ]

    async def start(self, port: int = 0) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            if self.fail_with is not None:
                return web.Response(status=self.fail_with)
            headers = dict(request.headers)
            headers[":path"] = request.path
            self.received.append((headers, orjson.loads(await request.read())))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
