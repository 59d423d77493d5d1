"""Stopping, failing to start and clock steps never send a part the SMSC already took twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
from pathlib import Path

import aiohttp
import orjson
import pytest

from smsrelay import runtime
from smsrelay.errors import TransientError
from smsrelay.service.clock import FixedClock
from smsrelay.service.retention import RetentionSweeper
from smsrelay.store.lock import DatabaseInUse
from smsrelay.webhooks.sender import WebhookSender
from tests.support import (
    SMSRELAY,
    ServeProcess,
    eventually,
    gateway_settings,
    start_gateway,
    start_serve,
    start_smsc,
)

pytestmark = pytest.mark.asyncio


def _parts(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM parts GROUP BY state").fetchall())


async def _send_many(serve: ServeProcess, count: int) -> None:
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            body = {"apiKey": serve.api_key, "from": serve.number, "to": "0612345678"}
            body["message"] = f"m{i}"
            async with session.post(serve.base_url + "/v1/vn/send", data=orjson.dumps(body)) as r:
                assert (await r.json(content_type=None))["success"]


async def test_sigterm_while_the_smsc_answers_late_sends_nothing_twice(tmp_path: Path) -> None:
    smsc = await start_smsc("--delivery-rate", "1.0", "--resp-delay-ms", "1500")
    data = tmp_path / "data"
    try:
        serve = await start_serve(data, "--smsc", smsc.url)
        await _send_many(serve, 20)

        async def all_submitted() -> bool:
            return len(await smsc.submits()) >= 20

        await eventually(all_submitted)
        serve.process.send_signal(signal.SIGTERM)  # their answers are still 1.5 s away
        assert await asyncio.wait_for(serve.process.wait(), 30) == 0
        after_stop = _parts(data / "smsrelay.db")  # every outcome stored, none left "sending"
        assert set(after_stop) <= {"submitted", "delivered"} and sum(after_stop.values()) == 20

        serve = await start_serve(data, "--smsc", smsc.url)
        await eventually(lambda: _parts(data / "smsrelay.db") == {"delivered": 20}, timeout=20)
        serve.process.terminate()
        await serve.process.wait()
        assert len(await smsc.submits()) == 20
    finally:
        await smsc.stop()


async def _queue_while_no_smsc_listens(data: Path, count: int) -> None:
    """``count`` messages accepted by a serve whose SMSC is unreachable: left queued."""
    serve = await start_serve(data, "--smsc", "smpp://a:b@127.0.0.1:1")  # nothing listens
    await _send_many(serve, count)
    serve.process.terminate()
    await serve.process.wait()


async def test_a_serve_that_cannot_start_sends_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _queue_while_no_smsc_listens(data, 10)
    smsc = await start_smsc("--delivery-rate", "1.0")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        for _ in range(2):  # a supervisor restarting it
            process = await asyncio.create_subprocess_exec(
                SMSRELAY,
                "serve",
                "--data-dir",
                str(data),
                "--port",
                str(taken.getsockname()[1]),
                "--smsc",
                smsc.url,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "SMSRELAY_LOG_LEVEL": "WARNING"},
            )
            _, err = await asyncio.wait_for(process.communicate(), 30)
            assert process.returncode != 0 and b"in use" in err
        assert await smsc.submits() == [] and _parts(data / "smsrelay.db") == {"queued": 10}
    finally:
        taken.close()
        await smsc.stop()


async def test_a_start_that_fails_late_has_sent_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The callback sender's first write fails (a CLI command holds the database): serve
    # does not start, and the messages waiting in the queue have not left meanwhile.
    data = tmp_path / "data"
    await _queue_while_no_smsc_listens(data, 3)
    smsc = await start_smsc("--delivery-rate", "1.0")

    async def locked(self: WebhookSender) -> None:
        async def sent() -> bool:
            return bool(await smsc.submits())

        # Had the dispatcher been started already, parts would leave now: give them the time.
        with contextlib.suppress(AssertionError):
            await eventually(sent, timeout=1.0)
        raise TransientError("database commit failed: database is locked")

    monkeypatch.setattr(WebhookSender, "start", locked)
    try:
        settings = gateway_settings(tmp_path, smsc=smsc.url)
        with pytest.raises(TransientError):
            await runtime.start(settings, lambda line: None)
        assert await smsc.submits() == [] and _parts(data / "smsrelay.db") == {"queued": 3}
    finally:
        await smsc.stop()


async def test_a_wall_clock_step_does_not_release_a_part_still_with_the_smsc(
    tmp_path: Path,
) -> None:
    # An NTP step or a resumed VM moves the wall clock past the lease while the SMSC is
    # answering: the part is still this process's, and must not be claimed and sent again.
    smsc = await start_smsc("--delivery-rate", "1.0", "--resp-delay-ms", "6000")
    settings = gateway_settings(tmp_path, smsc=smsc.url, fixed_clock="2026-03-03T10:00:00+01:00")
    gw = await start_gateway(settings)
    try:
        _, answer = await gw.send(message="once")

        async def submitted() -> bool:
            return len(await smsc.submits()) == 1

        await eventually(submitted)
        clock = gw.running.gateway.clock
        assert isinstance(clock, FixedClock)
        clock.set(clock.now() + 120)  # past the 60 s lease; the sweeper runs every 5 s

        async def recorded() -> bool:
            message = await gw.store.get_message(answer["message_id"])
            return message is not None and message.parts[0].state != "sending"

        await eventually(recorded, timeout=15)
        assert len(await smsc.submits()) == 1
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_without_the_demo_no_account_is_made_and_no_key_printed(tmp_path: Path) -> None:
    smsc = await start_smsc()
    lines: list[str] = []
    running = await runtime.start(
        gateway_settings(tmp_path, smsc=smsc.url, demo=False), lines.append
    )
    try:
        assert not any("apiKey" in line for line in lines)
        assert await running.gateway.store.list_accounts() == []
    finally:
        await runtime.stop(running)
        await smsc.stop()


@pytest.mark.parametrize("days", [0, 90])
async def test_serve_purges_history_itself_only_when_retention_days_is_set(
    tmp_path: Path, days: int
) -> None:
    smsc = await start_smsc()
    settings = gateway_settings(tmp_path, smsc=smsc.url, retention_days=days)
    running = await runtime.start(settings, lambda line: None)
    try:
        sweepers = [s for s in running.services if isinstance(s, RetentionSweeper)]
        assert len(sweepers) == (1 if days else 0)
    finally:
        await runtime.stop(running)  # the sweeper stops with serve
        await smsc.stop()


async def test_a_symlinked_database_serves_and_is_still_served_only_once(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    first_link, second_link = tmp_path / "one.db", tmp_path / "two.db"
    first_link.symlink_to(tmp_path / "real" / "smsrelay.db")
    second_link.symlink_to(tmp_path / "real" / "smsrelay.db")
    first = await start_gateway(gateway_settings(tmp_path, database_url=f"sqlite:///{first_link}"))
    try:
        status, _ = await first.send()
        assert status == 200
        with pytest.raises(DatabaseInUse):  # the same file by another name
            await runtime.start(
                gateway_settings(tmp_path, database_url=f"sqlite:///{second_link}"), print
            )
    finally:
        await runtime.stop(first.running)


async def test_serve_says_which_numbers_use_a_connector_it_does_not_have(tmp_path: Path) -> None:
    # A connector renamed or removed from the settings: its numbers' messages were accepted,
    # charged and waited for ever, with no word at start (the config review).
    settings = gateway_settings(tmp_path)
    gw = await start_gateway(settings)
    await gw.store.add_number("demo", "+33757000022", "bravo", 0.0)
    await runtime.stop(gw.running)

    again = await start_gateway(settings)
    try:
        said = [line for line in again.lines if "connector 'bravo'" in line]
        assert said and said[0].startswith("warning: 1 number(s) use connector 'bravo'")
        assert not [line for line in again.lines if "connector 'default'" in line]
    finally:
        await runtime.stop(again.running)


async def test_a_ci_job_gives_the_demo_account_its_own_key_and_is_told_when_it_is_too_late(
    tmp_path: Path,
) -> None:
    # A CI job had to parse the printed key; and demo settings given on a later start (a
    # cached ./data) were ignored without a word.
    key = "ci-known-key-0123456789"
    gw = await start_gateway(gateway_settings(tmp_path, demo_api_key=key, demo_credit_eur="5"))
    try:
        assert gw.api_key == key
        # given on the start that made it, a setting is applied, not said to be ignored
        assert not [line for line in gw.lines if line.startswith("note: demo_")]
        status, answer = await gw.send()
        assert status == 200, answer
    finally:
        await runtime.stop(gw.running)
    lines: list[str] = []
    later = gateway_settings(
        tmp_path, demo_api_key="another-key-0123456789", demo_quiet_hours=True, demo_credit_eur="5"
    )
    running = await runtime.start(later, lines.append)
    try:
        notes = [line for line in lines if line.startswith("note: demo_")]
        assert notes == [
            "note: demo_api_key (the demo account has another key: accounts rotate-key) "
            "applies only when serve makes the demo account: ignored",
            "note: demo_credit_eur (accounts credit demo +EUR) "
            "applies only when serve makes the demo account: ignored",
        ]
    finally:
        await runtime.stop(running)


async def test_a_stop_waits_for_a_refusing_database_as_long_as_its_budget_allows() -> None:
    # It gave up at 15 s whatever the stop had left: a PostgreSQL back at 20 s found 24 parts
    # the SMSC had taken unrecorded, and they were sent again after the restart.
    assert runtime.dispatcher_grace(5.0, broken=False) == runtime.STOP_BUDGET - 5.0
    assert runtime.dispatcher_grace(45.0, broken=False) == runtime.STOP_GRACE  # at least
    assert runtime.dispatcher_grace(5.0, broken=True) == 0.0  # an fsync failed: nothing stores
