"""A real headless Chromium (Debian's ``chromium``), driven over the DevTools protocol with
aiohttp's websocket client: no browser-automation package. Pages are read by evaluating
JavaScript in them and waited on with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support import eventually

# Nothing but the pages a test opens: no updates, sync, first-run pages or GPU.
FLAGS = (
    "--headless",
    "--no-sandbox",  # as root, in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-port=0",  # a free port, written to DevToolsActivePort
)


def chromium_binary() -> str:
    """Chromium's path; without one a local run skips, CI fails (.ci/run installs it)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
    pytest.skip("the console's browser tests need chromium (apt-get install chromium)")


class Page:
    """One tab, attached in flat mode: its commands carry its session id."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self._browser = browser
        self._session_id = session_id

    async def evaluate(self, expression: str) -> Any:
        answer = await self._browser.command(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self._session_id,
        )
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """The expression's first truthy value (the page loads and refreshes on its own)."""
        return await eventually(lambda: self.evaluate(expression), timeout=timeout, interval=0.05)

    async def type_and_enter(self, selector: str, text: str) -> None:
        """Keystrokes into a field, then Enter: the form is submitted as a person would."""
        focus = "(field => { field.focus(); return document.activeElement === field; })"
        assert await self.evaluate(f"{focus}(document.querySelector({_js(selector)}))")
        await self._browser.command("Input.insertText", {"text": text}, self._session_id)
        for kind in ("keyDown", "keyUp"):
            key = {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
            if kind == "keyDown":
                key["text"] = "\r"
            await self._browser.command("Input.dispatchKeyEvent", key, self._session_id)


class Browser:
    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.ensure_future(self._read())

    async def open(self, url: str) -> Page:
        target = await self.command("Target.createTarget", {"url": url})
        attached = await self.command(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        loaded = "location.href !== 'about:blank' && document.readyState === 'complete'"
        await page.wait_for(loaded)  # before, the tab still shows its first, blank document
        return page

    async def command(
        self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        answer = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        await self._socket.send_str(orjson.dumps(message).decode())
        return await asyncio.wait_for(answer, 15)

    async def _read(self) -> None:
        async for message in self._socket:  # events (no "id") are not needed here
            data = orjson.loads(message.data)
            answer = self._waiting.pop(data.get("id", 0), None)
            if answer is None or answer.done():
                continue
            if "error" in data:
                answer.set_exception(AssertionError(f"DevTools: {data['error']}"))
            else:
                answer.set_result(data.get("result", {}))

    async def close(self) -> None:
        self._reader.cancel()
        await self._socket.close()


@contextlib.asynccontextmanager
async def chromium(folder: Path) -> AsyncIterator[Browser]:
    """A fresh Chromium with its profile in ``folder``; its log in ``folder/chromium.log``."""
    binary = chromium_binary()
    profile = folder / "chromium-profile"
    # Chromium also reads DevTools commands from its fd 3 (--remote-debugging-pipe; none are
    # sent) and quits when that pipe ends: its write end is this process's alone, so a test
    # process killed outright (SIGTERM, SIGKILL, a CI job's timeout) takes its browser with it.
    lifeline, held = os.pipe()
    try:
        process = await _started(binary, folder, lifeline)
    except BaseException:
        os.close(held)
        raise
    finally:
        os.close(lifeline)
    try:
        port, path = await eventually(lambda: _devtools_address(profile), timeout=30)
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as socket,
        ):
            browser = Browser(socket)
            try:
                yield browser
            finally:
                await browser.close()
    finally:
        os.close(held)
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _started(binary: str, folder: Path, lifeline: int) -> asyncio.subprocess.Process:
    """Chromium with ``lifeline`` (a pipe's read end) as its fd 3, its temp files in
    ``folder`` (it leaves its socket's directory behind when it quits)."""
    pipe_as_fd_3 = f'exec "$@" 3<&{lifeline} 4>/dev/null'  # bash: dash takes fds 0-9 only
    with (folder / "chromium.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            *("/bin/bash", "-c", pipe_as_fd_3, "bash", binary),
            *FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={folder / 'chromium-profile'}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(lifeline,),
            env={**os.environ, "TMPDIR": str(folder)},
        )


def _devtools_address(profile: Path) -> tuple[str, str] | None:
    """Chromium writes its port and the browser's websocket path once it listens."""
    try:
        lines = (profile / "DevToolsActivePort").read_text().splitlines()
    except FileNotFoundError:
        return None
    return (lines[0], lines[1]) if len(lines) == 2 else None


def _js(value: Any) -> str:
    """``value`` as a JavaScript literal."""
    return orjson.dumps(value).decode()
