"""GET /console in a real headless Chromium, against the whole gateway on loopback: what an
operator sees, the token prompt, a hostile connector name, and a gateway gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smsrelay import runtime
from tests.browser import Page, chromium
from tests.support import RunningGateway, gateway_settings, start_gateway

TOKEN = "s3cret-t0ken"
# the text of each row of the table under a heading, as lists of cell texts
ROWS_UNDER = """(title => {
  const part = [...document.querySelectorAll("section")]
    .find((s) => s.querySelector("h2").textContent === title);
  return part ? [...part.querySelectorAll("tbody tr")]
    .map((row) => [...row.cells].map((cell) => cell.textContent)) : [];
})"""
FIGURES_SHOWN = "document.querySelectorAll('#figures td').length"
PROMPT_SHOWN = "!document.getElementById('login').hidden"


def figure(name: str) -> str:
    return f"document.querySelector('[data-figure=\"{name}\"]')?.textContent"


async def rows_under(page: Page, title: str) -> Any:
    return await page.evaluate(f"{ROWS_UNDER}({title!r})")


async def test_the_console_shows_each_connectors_binds_and_the_sends_accepted(
    gw: RunningGateway, tmp_path: Path
) -> None:
    for _ in range(3):
        status, _ = await gw.send()
        assert status == 200
    async with chromium(tmp_path) as browser:
        page = await browser.open(gw.base_url + "/console")  # a stand-in: no token asked
        assert await page.wait_for(f"{figure('messagesAccepted')} === '3'")
        bound = f"JSON.stringify({ROWS_UNDER}('SMPP sessions')).includes('\"bound\"')"
        assert await page.wait_for(bound)
        sessions = await rows_under(page, "SMPP sessions")
        assert sessions == [["default", "transceiver", "bound", "0", "0", "0"]]
        assert (await rows_under(page, "Connectors"))[0][0] == "default"
        assert await page.evaluate(PROMPT_SHOWN) is False
        assert await page.evaluate("document.getElementById('banner').hidden")
        assert "version" in await page.evaluate("document.getElementById('version').textContent")
        # its inline style applies: the page's policy names its hash
        style = "getComputedStyle(document.querySelector('table')).borderCollapse"
        assert await page.evaluate(style) == "collapse"
        status, _ = await gw.send()
        assert await page.wait_for(f"{figure('messagesAccepted')} === '4'")  # refreshed itself


async def test_without_the_token_the_console_asks_for_it_and_shows_nothing(
    tmp_path: Path,
) -> None:
    gw = await start_gateway(gateway_settings(tmp_path, metrics_token=TOKEN))
    try:
        async with chromium(tmp_path) as browser:
            page = await browser.open(gw.base_url + "/console")
            assert await page.wait_for(PROMPT_SHOWN)
            assert await page.evaluate(FIGURES_SHOWN) == 0
            assert await page.evaluate("document.getElementById('token').type") == "password"
            why = await page.evaluate("document.getElementById('login-why').textContent")
            assert "metrics_token" in why
            await page.type_and_enter("#token", TOKEN)  # typed, as an operator would
            assert await page.wait_for(f"{figure('messagesAccepted')} === '0'")
            assert await page.evaluate(PROMPT_SHOWN) is False
            assert await page.evaluate("sessionStorage.length") == 1  # this tab's only
            assert await page.evaluate("location.href") == gw.base_url + "/console"

            bookmarked = await browser.open(gw.base_url + f"/console#token={TOKEN}")
            assert await bookmarked.wait_for(f"{figure('messagesAccepted')} === '0'")
            # the fragment leaves the address bar (and the history) at once
            assert await bookmarked.evaluate("location.href") == gw.base_url + "/console"
    finally:
        await runtime.stop(gw.running)


async def test_a_wrong_token_is_said_and_shows_no_figures(tmp_path: Path) -> None:
    gw = await start_gateway(gateway_settings(tmp_path, metrics_token=TOKEN))
    try:
        async with chromium(tmp_path) as browser:
            page = await browser.open(gw.base_url + "/console#token=wrong")
            refused = "document.getElementById('login-why').textContent.includes('refused')"
            assert await page.wait_for(refused)
            assert await page.evaluate(PROMPT_SHOWN) is True
            assert await page.evaluate(FIGURES_SHOWN) == 0

            typed = await browser.open(gw.base_url + "/console")
            assert await typed.wait_for(PROMPT_SHOWN)
            await typed.type_and_enter("#token", TOKEN + "x")
            assert await typed.wait_for(refused)
            assert await typed.evaluate(FIGURES_SHOWN) == 0
    finally:
        await runtime.stop(gw.running)


async def test_a_token_no_header_can_carry_is_refused_not_taken_for_a_gateway_down(
    tmp_path: Path,
) -> None:
    # fetch() throws on a header value outside ISO-8859-1 (a curly quote pasted in): that is
    # a wrong token, to be said so, not a gateway that does not answer, kept over reloads
    gw = await start_gateway(gateway_settings(tmp_path, metrics_token=TOKEN))
    try:
        async with chromium(tmp_path) as browser:
            page = await browser.open(gw.base_url + "/console#token=%E2%80%99" + TOKEN)
            refused = "document.getElementById('login-why').textContent.includes('refused')"
            assert await page.wait_for(refused)
            assert await page.evaluate("document.getElementById('banner').hidden")
            assert await page.evaluate("sessionStorage.length") == 0
            await page.type_and_enter("#token", TOKEN)
            assert await page.wait_for(f"{figure('messagesAccepted')} === '0'")
    finally:
        await runtime.stop(gw.running)


async def test_a_connector_named_like_markup_is_shown_as_text(tmp_path: Path) -> None:
    # a connector's name is the operator's text, and it reaches the page: never as HTML
    name = '<img src=x onerror="window.injected=1">'
    connectors = {name: {"url": "smpp://id:pw@127.0.0.1:1"}}  # never bound
    settings = gateway_settings(tmp_path, metrics_token=TOKEN, connectors=connectors)
    gw = await start_gateway(settings)
    try:
        async with chromium(tmp_path) as browser:
            page = await browser.open(gw.base_url + f"/console#token={TOKEN}")
            assert await page.wait_for(f"{ROWS_UNDER}('SMPP sessions').length === 2")
            sessions = await rows_under(page, "SMPP sessions")
            assert [name, "transceiver", "not bound", "0", "0", "0"] in sessions
            assert name in [row[0] for row in await rows_under(page, "Connectors")]
            assert await page.evaluate("document.querySelectorAll('img').length") == 0
            assert await page.evaluate("window.injected") is None
    finally:
        await runtime.stop(gw.running)


async def test_a_gateway_gone_shows_a_stale_banner_over_the_last_figures(
    tmp_path: Path,
) -> None:
    gw = await start_gateway(gateway_settings(tmp_path))
    stopped = False
    try:
        async with chromium(tmp_path) as browser:
            page = await browser.open(gw.base_url + "/console")
            assert await page.wait_for(f"{figure('messagesAccepted')} === '0'")
            await runtime.stop(gw.running)
            stopped = True
            banner = "document.getElementById('banner')"
            assert await page.wait_for(f"!{banner}.hidden && {banner}.textContent")
            text = await page.evaluate(f"{banner}.textContent")
            assert text.startswith("Stale: the gateway does not answer")
            assert "the figures below are from" in text
            assert await page.evaluate("document.body.classList.contains('stale')")
            assert await page.evaluate(figure("messagesAccepted")) == "0"  # kept, dimmed
    finally:
        if not stopped:
            await runtime.stop(gw.running)
