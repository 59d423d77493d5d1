"""The real HTTP server on 127.0.0.1:0 over a real SQLite store, and a client to call it."""

from __future__ import annotations

import contextlib
import itertools
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from smsrelay.api.app import api_server
from smsrelay.service.accounts import ensure_demo
from smsrelay.service.gateway import Gateway, build_gateway
from smsrelay.settings import load_settings, url_host
from smsrelay.store.factory import store_for
from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS

SUNDAY_AFTERNOON = "2026-03-01T15:00:00+01:00"  # quiet hours: held until Monday 08:00
TUESDAY_MORNING = "2026-03-03T10:00:00+01:00"  # sending hours: queued at once
DEMO_NUMBER = "33757000001"


@dataclass
class Api:
    """The running app, its gateway and store, and the demo account's key."""

    base: str
    gateway: Gateway
    store: SqlStore
    key: str
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """JSON answer: (HTTP status, decoded body). ``body``: a dict sent as JSON, or bytes."""
        data = orjson.dumps(body) if isinstance(body, dict) else body
        headers = dict(headers or {})
        if isinstance(body, dict):
            headers["Content-Type"] = "application/json"
        url = self.base + path
        async with self.session.request(
            method, url, params=params, data=data, headers=headers
        ) as response:
            assert response.content_type == "application/json"
            return response.status, orjson.loads(await response.read())

    async def call_xml(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, ET.Element]:
        """XML answer (``_format=xml`` in the query): (HTTP status, the ``result`` root)."""
        query = {**(params or {}), "_format": "xml"}
        data = orjson.dumps(body) if isinstance(body, dict) else body
        async with self.session.request(
            method, self.base + path, params=query, data=data
        ) as response:
            assert response.content_type == "application/xml"
            root = ET.fromstring(await response.read())
            assert root.tag == "result"
            return response.status, root

    async def send(
        self, to: str = "0612345678", text: str = "Hello", tag: str | None = None
    ) -> int:
        body = {"apiKey": self.key, "to": to, "from": DEMO_NUMBER, "message": text}
        if tag is not None:
            body["tag"] = tag
        status, answer = await self.call("POST", "/v1/vn/send", body=body)
        assert status == 200, answer
        return int(answer["message_id"])

    async def me(self) -> dict[str, Any]:
        status, answer = await self.call("GET", "/v1/me", params={"apiKey": self.key})
        assert status == 200, answer
        return dict(answer)


StartApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api(tmp_path: Path) -> AsyncIterator[StartApi]:
    """Start the app; ``fixed_clock`` freezes its clock (and turns /_test/clock on); ``host``:
    the address it listens on; ``database_url``: its store (a SQLite file of its own by
    default); other keywords are settings."""
    runs = itertools.count(1)
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            fixed_clock: str | None = None,
            host: str = "127.0.0.1",
            database_url: str | None = None,
            **settings: Any,
        ) -> Api:
            data_dir = tmp_path / f"run{next(runs)}"
            store = store_for(database_url or f"sqlite:///{data_dir}/t.db")
            await store.open()
            stack.push_async_callback(store.close)
            flags: dict[str, Any] = {
                "data_dir": str(data_dir),
                "fixed_clock": fixed_clock,
                **settings,
            }
            gateway = build_gateway(load_settings(flags, env={}), store, BUILDERS)
            demo = await ensure_demo(store, "100", gateway.clock)
            assert demo is not None and demo.demo_key is not None
            server = api_server(gateway, idle_timeout=75, body_timeout=30, max_connections=1000)
            port = await server.start(host, 0)
            stack.push_async_callback(server.close)
            session = aiohttp.ClientSession()
            stack.push_async_callback(session.close)
            base = f"http://{url_host(host)}:{port}"
            return Api(base, gateway, store, demo.demo_key, session)

        yield start


@pytest.fixture
async def api(start_api: StartApi) -> Api:
    """Clock frozen on a Tuesday morning: messages are queued at once."""
    return await start_api(TUESDAY_MORNING)


@pytest.fixture(params=["sqlite", "postgresql"])
async def api_on_each_engine(request: pytest.FixtureRequest, start_api: StartApi) -> Api:
    """As ``api``, on SQLite, then on a database of its own on the session's PostgreSQL."""
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
    return await start_api(TUESDAY_MORNING, database_url=url)


@pytest.fixture
async def sunday_api(start_api: StartApi) -> Api:
    """Clock frozen on a Sunday afternoon: the demo account's quiet hours hold messages."""
    return await start_api(SUNDAY_AFTERNOON)


@pytest.fixture
async def live_clock_api(start_api: StartApi) -> Api:
    """No fixed_clock setting: the system clock, and no /_test/clock."""
    return await start_api(None)
