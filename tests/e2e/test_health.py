"""GET /health: up while the API accepts; each SMSC session's bind state for monitoring."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from smsrelay import runtime
from tests.support import (
    RunningGateway,
    eventually,
    gateway_settings,
    start_gateway,
    start_smsc,
)


async def test_the_built_in_smsc_keeps_a_bounded_record_of_submits(gw: RunningGateway) -> None:
    # it lives in serve's process: keeping every submit (a million by default) grew the
    # gateway ~30 MB a minute under load
    assert gw.running.simulator is not None
    assert gw.running.simulator.options.max_records == runtime.BUILTIN_MAX_RECORDS <= 10_000


async def test_health_shows_the_built_in_smsc_bound(gw: RunningGateway) -> None:
    async def bound() -> object:
        status, body = await gw.get("/health", {"require": "smsc"})
        return body if status == 200 else None

    body = await eventually(bound)
    assert body["ok"] is True and body["smsc"] == {"default": {"transceiver": True}}
    # the front door: this probe's own connection (at least), the cap serve derived, no refusal
    assert body["http"]["connections"] >= 1 and body["http"]["turned_away"] == 0
    assert body["http"]["max_connections"] == gw.running.http.max_connections >= 16


async def test_an_smsc_going_away_shows_per_session_and_fails_only_when_required(
    tmp_path: Path,
) -> None:
    smsc = await start_smsc("--delivery-rate", "1.0")
    both = quote("transmitter+receiver")
    gw = await start_gateway(
        gateway_settings(tmp_path, smsc=f"{smsc.url}?bind_mode={both}&reconnect_min=0.05")
    )
    try:

        def binds_are(bound: bool) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                status, body = await gw.get("/health")
                assert status == 200
                return bool(body["smsc"]["default"] == {"transmitter": bound, "receiver": bound})

            return check

        assert await eventually(binds_are(True))
        await smsc.stop()
        assert await eventually(binds_are(False))
        status, body = await gw.get("/health")  # the API still accepts: messages queue
        assert (status, body["ok"]) == (200, True)
        status, body = await gw.get("/health", {"require": "smsc"})
        assert (status, body["ok"]) == (503, False)
        status, _ = await gw.send()
        assert status == 200
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()
