"""GET /metrics: the gateway's figures in Prometheus' text format, on the real server."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smsrelay import runtime
from smsrelay.service import monitoring
from tests.support import (
    Receiver,
    RunningGateway,
    eventually,
    gateway_settings,
    start_gateway,
    start_smsc,
)

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(gw: RunningGateway, headers: dict[str, str] | None = None) -> Series:
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.base_url + "/metrics", headers=headers) as response,
    ):
        assert response.status == 200
        text = await response.text()
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    return series[name, tuple(sorted(labels.items()))]


async def test_metrics_follow_messages_from_accept_to_their_callbacks(
    gw: RunningGateway, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await scrape(gw)
    assert value(before, "smsrelay_messages_accepted_total") == 0
    assert value(before, "smsrelay_store_ok") == value(before, "smsrelay_store_readable") == 1
    assert value(before, "process_resident_memory_bytes") > 0
    for text in ("short", "x" * 400):  # 1 part, then 3
        status, _ = await gw.send(urlDlr=receiver.url + "/dlr", message=text)
        assert status == 200

    async def all_reported() -> Series | None:
        series = await scrape(gw)
        return series if value(series, "smsrelay_callbacks_delivered_total") == 2 else None

    monkeypatch.setattr(monitoring, "KEPT_FOR", 0.0)  # each scrape reads the store anew
    after = await eventually(all_reported)
    assert len(receiver.bodies("/dlr")) == 2
    assert value(after, "smsrelay_messages_accepted_total") == 2
    assert value(after, "smsrelay_receipts_received_total") == 4  # one per part
    assert value(after, "smsrelay_replies_received_total") == 0
    simulator = gw.running.simulator
    assert simulator is not None
    assert await simulator.inject_reply("+33612345678", "+" + gw.number, "Merci") == [0]
    assert value(await scrape(gw), "smsrelay_replies_received_total") == 1
    assert value(after, "smsrelay_callbacks_pending") == 0
    assert value(after, "smsrelay_callbacks_oldest_pending_seconds") == 0
    assert value(after, "smsrelay_callbacks_given_up_total") == 0
    assert {
        state: value(after, "smsrelay_parts", state=state)
        for state in ("queued", "sending", "submitted")
    } == {"queued": 0, "sending": 0, "submitted": 0}
    assert value(after, "smsrelay_smsc_bound", connector="default", session="transceiver") == 1
    assert value(after, "smsrelay_parts_overdue", connector="default") == 0
    assert value(after, "smsrelay_parts_sending", connector="default") == 0
    assert value(after, "smsrelay_parts_sending_oldest_seconds", connector="default") == 0
    assert value(after, "smsrelay_submits_total", connector="default", outcome="ok") == 4
    assert value(after, "smsrelay_submits_total", connector="default", outcome="rejected") == 0
    assert value(after, "smsrelay_http_connections") >= 1
    status, _ = await gw.send(sandbox=1)  # priced, never sent: not a message accepted
    assert status == 200
    sandboxed = await scrape(gw)
    assert value(sandboxed, "smsrelay_messages_accepted_total") == 2
    assert value(sandboxed, "smsrelay_sandbox_sends_total") == 1


async def test_a_scraper_asking_for_openmetrics_gets_it(gw: RunningGateway) -> None:
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.base_url + "/metrics", headers=accept) as response,
    ):
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).endswith("# EOF\n")


async def test_metrics_and_the_log_show_an_smsc_that_rejects_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # every part ended rejected, and /metrics, /health, status and the log all looked fine
    smsc = await start_smsc("--reject-rate", "1.0")
    gw = await start_gateway(gateway_settings(tmp_path, smsc=smsc.url, metrics_token="t"))
    try:
        for _ in range(3):
            status, _ = await gw.send()
            assert status == 200

        async def all_rejected() -> Series | None:
            series = await scrape(gw, {"Authorization": "Bearer t"})
            outcome = {"connector": "default", "outcome": "rejected"}
            return series if value(series, "smsrelay_submits_total", **outcome) == 3 else None

        series = await eventually(all_rejected)
        assert value(series, "smsrelay_submits_total", connector="default", outcome="ok") == 0
        said = [r for r in caplog.records if r.getMessage() == "dispatch.part.rejected"]
        assert said and "ESME_RINVDSTADR" in said[0].__dict__["error"]
        assert len(said) < 3  # a line a second at most, not one per part
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_metrics_show_a_link_down_and_what_waits_for_it(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, smsc="smpp://id:pw@127.0.0.1:1", metrics_token="t")
    gw = await start_gateway(settings)
    try:
        for _ in range(2):
            status, _ = await gw.send()
            assert status == 200
        series = await scrape(gw, {"Authorization": "Bearer t"})
        assert value(series, "smsrelay_smsc_bound", connector="default", session="transceiver") == 0
        assert value(series, "smsrelay_parts", state="queued") == 2
        assert value(series, "smsrelay_parts_overdue", connector="default") == 2
        assert value(series, "smsrelay_parts_overdue_seconds", connector="default") >= 0
        assert value(series, "smsrelay_callbacks_pending") == 0
        for name in ("running", "waiting", "refused_total"):  # no heavy read yet
            assert value(series, f"smsrelay_heavy_reads_{name}") == 0
    finally:
        await runtime.stop(gw.running)


async def test_metrics_count_the_links_the_gateway_gave_up_as_silent_and_those_closed(
    tmp_path: Path,
) -> None:
    # A path that eats data lets binds through: /health and smsrelay_smsc_bound said all was
    # well while every link was given up in turn (the network review's MTU black hole).
    smsc = await start_smsc("--delivery-rate", "1.0")
    url = f"{smsc.url}?response_timeout=0.3&enquire_link_interval=0.3&reconnect_min=0.05"
    gw = await start_gateway(gateway_settings(tmp_path, smsc=url, metrics_token="t"))
    auth = {"Authorization": "Bearer t"}
    session = {"connector": "default", "session": "transceiver"}
    try:
        await eventually(lambda: gw.running.gateway.smsc_binds()["default"]["transceiver"])
        series = await scrape(gw, auth)
        assert value(series, "smsrelay_smpp_links_lost_total", how="silent", **session) == 0
        assert value(series, "smsrelay_smpp_links_lost_total", how="closed", **session) == 0
        assert value(series, "smsrelay_smpp_links_lost_total", how="stalled", **session) == 0
        os.kill(smsc.process.pid, signal.SIGSTOP)  # its kernel takes bytes; nothing answers

        async def lost(how: str) -> float:
            series = await scrape(gw, auth)
            return value(series, "smsrelay_smpp_links_lost_total", how=how, **session)

        await eventually(lambda: lost("silent"))
        os.kill(smsc.process.pid, signal.SIGCONT)
        await eventually(lambda: gw.running.gateway.smsc_binds()["default"]["transceiver"])
        await smsc.stop()  # it closes the link
        await eventually(lambda: lost("closed"))
    finally:
        if smsc.process.returncode is None:
            os.kill(smsc.process.pid, signal.SIGCONT)
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_a_store_that_cannot_be_read_still_gets_a_scrape_that_says_so(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreadable(now: float) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(gw.store, "store_figures", unreadable)
    series = await scrape(gw)
    assert value(series, "smsrelay_store_readable") == 0
    assert not [name for name, _ in series if name.startswith("smsrelay_parts")]
    assert value(series, "smsrelay_smsc_bound", connector="default", session="transceiver") in (
        0,
        1,
    )


async def test_scrapes_close_together_share_one_store_read(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /metrics answers without an API key: scrapes at any rate must not each cost a read
    # that grows with a callback backlog, on the thread the API's reads use too.
    reads = 0
    read = gw.store.store_figures

    async def counted(now: float) -> object:
        nonlocal reads
        reads += 1
        return await read(now)

    monkeypatch.setattr(gw.store, "store_figures", counted)
    await asyncio.gather(*(scrape(gw) for _ in range(5)))
    await scrape(gw)
    assert reads == 1


async def test_with_a_metrics_token_a_scrape_needs_it(tmp_path: Path) -> None:
    gw = await start_gateway(gateway_settings(tmp_path, metrics_token="s3cret"))
    try:
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with session.get(gw.base_url + "/metrics", headers=headers) as response:
                    assert response.status == 403
                    assert "metrics_token" in (await response.json())["error"]
        series = await scrape(gw, {"Authorization": "Bearer s3cret"})
        assert value(series, "smsrelay_store_ok") == 1
    finally:
        await runtime.stop(gw.running)


async def test_a_gateway_on_a_real_smsc_answers_no_scrape_without_a_token(tmp_path: Path) -> None:
    # Behind a TLS proxy on the same machine every client comes from loopback: only the
    # token can tell who may see the volumes and connector names.
    gw = await start_gateway(gateway_settings(tmp_path, smsc="smpp://id:pw@127.0.0.1:1"))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(gw.base_url + "/metrics") as response,
        ):
            assert response.status == 403
            assert "set metrics_token" in (await response.json())["error"]
    finally:
        await runtime.stop(gw.running)
