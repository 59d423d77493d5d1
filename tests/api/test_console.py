"""GET /console and /console/data over HTTP: the page is open to anyone and holds nothing;
its figures answer exactly whom /metrics answers."""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest

from smsrelay.api.console import ConsolePage, content_policy
from tests.api.conftest import TUESDAY_MORNING, Api, StartApi

TOKEN = "s3cret-t0ken"
REAL_SMSC = "smpp://id:pw@127.0.0.1:1"  # not the built-in SMSC: not a stand-in


async def answer(api: Api, path: str, token: str | None = None) -> tuple[int, bytes, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with api.session.get(api.base + path, headers=headers) as response:
        return response.status, await response.read(), response.headers


@pytest.mark.parametrize(
    ("settings", "tokens_let_in"),
    [
        ({}, {None, TOKEN, "wrong", ""}),  # a stand-in without a token: anyone
        ({"metrics_token": TOKEN}, {TOKEN}),
        ({"smsc": REAL_SMSC, "metrics_token": TOKEN}, {TOKEN}),
        ({"smsc": REAL_SMSC}, set()),  # a real SMSC and no token: nobody
    ],
)
async def test_the_console_data_answers_exactly_whom_metrics_answers(
    start_api: StartApi, settings: dict[str, Any], tokens_let_in: set[str | None]
) -> None:
    api = await start_api(TUESDAY_MORNING, **settings)
    for token in (None, TOKEN, "wrong", ""):
        status, body, _ = await answer(api, "/console/data", token)
        metrics_status, metrics_body, _ = await answer(api, "/metrics", token)
        assert status == metrics_status == (200 if token in tokens_let_in else 403), token
        if status == 403:
            assert body == metrics_body  # the same refusal, in the same words


async def test_the_console_data_gives_the_figures_and_no_message_or_key(api: Api) -> None:
    await api.send(to="0611223344", text="Secret text")
    await api.send(to="0611223344", text="Secret text")
    status, body, headers = await answer(api, "/console/data")
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    figures = orjson.loads(body)
    assert figures["sinceStart"]["messagesAccepted"] == 2
    assert figures["parts"] == {"queued": 2, "sending": 0, "submitted": 0}  # no SMSC here
    assert figures["store"] == {"ok": True, "trouble": None, "readable": True}
    assert figures["callbacks"]["pending"] == 0
    assert set(figures["http"]) == {"connections", "maxConnections", "turnedAway", "reclaimed"}
    assert isinstance(figures["version"], str) and figures["uptimeSeconds"] >= 0
    for secret in ("611223344", "Secret text", api.key):
        assert secret.encode() not in body


async def test_a_store_that_cannot_be_read_gives_nulls_not_zeros_nor_a_500(
    start_api: StartApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await start_api(TUESDAY_MORNING, smsc=REAL_SMSC, metrics_token=TOKEN)

    async def unreadable(now: float) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(api.store, "store_figures", unreadable)
    monkeypatch.setattr(api.gateway, "smsc_binds", lambda: {"default": {"transceiver": False}})
    status, body, _ = await answer(api, "/console/data", TOKEN)
    assert status == 200
    figures = orjson.loads(body)
    assert figures["store"]["readable"] is False
    assert figures["parts"] is None and figures["callbacks"]["pending"] is None
    assert [(c["name"], c["overdue"], c["sending"]) for c in figures["connectors"]] == [
        ("default", None, None)
    ]
    assert figures["sinceStart"]["messagesAccepted"] == 0  # what the process counts, still


async def test_the_console_page_is_open_holds_nothing_and_locks_itself_down(
    start_api: StartApi,
) -> None:
    api = await start_api(TUESDAY_MORNING, smsc=REAL_SMSC, metrics_token=TOKEN)
    await api.send()
    for path in ("/console", "/console/"):
        status, body, headers = await answer(api, path)  # no token: the page holds no figure
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert body.startswith(b"<!doctype html>")
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"
        policy = headers["Content-Security-Policy"]
        assert policy == content_policy(body.decode())
        assert "default-src 'none'" in policy and "unsafe" not in policy
        assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert TOKEN.encode() not in body
        assert not re.search(rb"\b(src|href)\s*=", body)  # nothing loaded from anywhere
    async with api.session.head(api.base + "/console") as response:
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == policy
        assert await response.read() == b""
    async with api.session.post(api.base + "/console") as response:
        assert response.status == 405


def test_the_policy_lets_run_only_the_pages_own_script_and_style() -> None:
    page = "<style>b { color: red }</style><script>go()</script><script>more()</script>"
    policy = content_policy(page)
    scripts = re.search(r"script-src ([^;]*);", policy)
    assert scripts is not None and len(scripts.group(1).split()) == 2
    assert "'sha256-" in scripts.group(1)
    assert content_policy("<p>no script</p>").startswith(
        "default-src 'none'; script-src 'none'; style-src 'none';"
    )
    assert content_policy(page.replace("go()", "gone()")) != policy


class InlineCode(HTMLParser):
    """Each inline script's and style's text, as a browser's parser reads it (attributes or
    not): an independent reading of what the policy's hashes must name."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.found: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.found:
            self._open = tag
            self.found[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.found[self._open][-1] += data


def hashes_of(page: str) -> dict[str, list[str]]:
    parser = InlineCode()
    parser.feed(page)
    return {
        tag: [base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() for text in texts]
        for tag, texts in parser.found.items()
    }


@pytest.mark.parametrize(
    "page",
    [
        ConsolePage.load().html.decode(),  # the page served
        '<style media="all">b{}</style><script type="module">go()</script>\n<script\n>x</script>',
    ],
)
def test_the_policy_names_the_hash_of_every_inline_script_and_style(page: str) -> None:
    # a tag the policy misses is blocked by the browser, silently: a page without figures
    policy = content_policy(page)
    for tag, digests in hashes_of(page).items():
        assert digests
        named = re.search(rf"{tag}-src ([^;]*);", policy)
        assert named is not None
        assert named.group(1).split() == [f"'sha256-{digest}'" for digest in digests], tag
