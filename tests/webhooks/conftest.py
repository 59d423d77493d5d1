"""Shared pieces for the webhook tests: a real SQLite store, real HTTP receivers, a sender."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from smsrelay.domain.backoff import BackoffPolicy
from smsrelay.service.clock import Clock, SystemClock
from smsrelay.store.message_ops import insert_callback
from smsrelay.store.records import Account
from smsrelay.store.sqlite_store import SqliteStore
from smsrelay.webhooks.sender import WebhookSender

POLL_INTERVAL = 0.005  # how often a wait-for-condition loop looks again

TINY_BACKOFF = BackoffPolicy(first=0.01, factor=2.0, cap=0.05)


async def eventually(cond: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll ``cond`` (a function, or an async function) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout} s")
        await asyncio.sleep(POLL_INTERVAL)


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes


Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """A real HTTP server. It answers ``script`` statuses in turn, then ``default``;
    ``behaviour`` replaces that for tests that need a slow or rude receiver."""

    host: str = "127.0.0.1"
    port: int = 0
    script: list[int] = field(default_factory=list)
    default: int = 200
    behaviour: Behaviour | None = None
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def hang(self, request: web.Request) -> web.StreamResponse:
        """A receiver stuck until the test (or teardown) releases it."""
        await self.release.wait()
        return web.Response(status=200)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(dict(request.headers), await request.read()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.behaviour is not None:
                return await self.behaviour(request)
            status = self.script.pop(0) if self.script else self.default
            return web.Response(status=status, text="ok")
        finally:
            self.in_flight -= 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    db = SqliteStore(f"sqlite:///{tmp_path / 'smsrelay.db'}")
    await db.open()
    yield db
    await db.close()


@pytest.fixture
async def account(store: SqliteStore) -> Account:
    return await store.create_account("acme", "key-hash", 0, time.time())


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def make(**options: Any) -> Receiver:
        receiver = await Receiver(**options).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def senders(store: SqliteStore) -> AsyncIterator[Callable[..., Awaitable[WebhookSender]]]:
    started: list[WebhookSender] = []

    async def make(clock: Clock | None = None, *, on: Any = None, **options: Any) -> WebhookSender:
        """A started sender on the test store (or ``on``: a store that misbehaves)."""
        settings: dict[str, Any] = {
            "timeout": 2.0,
            "backoff": TINY_BACKOFF,
            "give_up_after": 60.0,
            "concurrency_per_host": 4,
            "allow_private": True,
        }
        sender = WebhookSender(on or store, clock or SystemClock(), **(settings | options))
        await sender.start()
        started.append(sender)
        return sender

    yield make
    for sender in started:
        await sender.stop(grace=0.1)


async def add_callback(
    store: SqliteStore,
    account: Account,
    url: str,
    *,
    kind: str = "dlr",
    body: bytes = b'{"messageId": 1, "status": "Delivered"}',
    uuid: str | None = None,
    now: float | None = None,
    order_key: str | None = None,
) -> int:
    """Store one callback row the way a receipt or reply does."""
    stored_at = time.time() if now is None else now
    return await store.db.write(
        partial(
            insert_callback,
            uuid=uuid or f"cb-{time.monotonic_ns()}",
            account_id=account.id,
            kind=kind,
            url=url,
            body=body,
            now=stored_at,
            order_key=order_key,
        )
    )
