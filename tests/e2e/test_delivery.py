"""Accepted -> submit_sm at a separate SMSC process -> receipt -> status, over loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from smsrelay import runtime
from smsrelay.domain.text import encode_gsm7
from smsrelay.errors import TransientError
from smsrelay.settings import SettingsError
from tests.support import (
    RunningGateway,
    SmscProcess,
    eventually,
    gateway_settings,
    start_gateway,
    start_smsc,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def linked(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Start an SMSC process with the given options and a gateway pointed at it."""
    started: list[tuple[SmscProcess, RunningGateway]] = []

    async def start(*smsc_args: str) -> tuple[SmscProcess, RunningGateway]:
        smsc = await start_smsc("--delivery-rate", "1.0", *smsc_args)
        gateway = await start_gateway(gateway_settings(tmp_path, smsc=smsc.url))
        started.append((smsc, gateway))
        return smsc, gateway

    yield start
    for smsc, gateway in started:
        await runtime.stop(gateway.running)
        await smsc.stop()


async def _final_status(gw: RunningGateway, message_id: int, wanted: str = "Delivered") -> dict:
    async def done() -> dict | None:
        status = await gw.status(message_id)
        return status if status["statut"] == wanted else None

    return await eventually(done, timeout=15)


async def test_short_message_leaves_from_the_long_number_and_is_delivered(linked) -> None:
    smsc, gw = await linked()
    _, answer = await gw.send(message="Hello world", to="0612345678")
    status = await _final_status(gw, answer["message_id"])
    assert status["stat"] == "DELIVRD" and status["parts"][0]["carrierId"]
    [submit] = await smsc.submits()
    assert submit["source"] == gw.number and submit["destination"] == "33612345678"
    assert submit["data_coding"] == 0 and submit["esm_class"] == 0
    assert submit["registered_delivery"] == 1
    assert submit["validity_period"] == "000002000000000R"  # 48 h, relative
    assert bytes.fromhex(submit["short_message"]) == encode_gsm7("Hello world")


async def test_three_part_message_uses_udh_concatenation(linked) -> None:
    smsc, gw = await linked()
    text = "".join(chr(ord("a") + i % 26) for i in range(400))
    _, answer = await gw.send(message=text)
    assert answer["nb_sms"] == 3
    await _final_status(gw, answer["message_id"])
    submits = await eventually(lambda: _nonempty(smsc), timeout=5)
    bodies = sorted(bytes.fromhex(s["short_message"]) for s in submits)
    assert len(bodies) == 3 and all(s["esm_class"] & 0x40 for s in submits)
    refs = {b[3] for b in bodies}
    assert len(refs) == 1
    assert [b[:6][4:] for b in bodies] == [bytes([3, 1]), bytes([3, 2]), bytes([3, 3])]
    assert b"".join(b[6:] for b in bodies) == encode_gsm7(text)


async def _nonempty(smsc: SmscProcess) -> list | None:
    submits = await smsc.submits()
    return submits if len(submits) >= 3 else None


async def test_ucs2_and_emoji_are_sent_as_utf16_big_endian(linked) -> None:
    smsc, gw = await linked()
    _, answer = await gw.send(message="Привет 😀")
    await _final_status(gw, answer["message_id"])
    [submit] = await smsc.submits()
    assert submit["data_coding"] == 8
    assert bytes.fromhex(submit["short_message"]) == "Привет 😀".encode("utf-16-be")


@pytest.mark.parametrize(
    ("coding", "codec", "fits", "lacks"),
    [(3, "latin-1", "café à 2£ É ß", "Prix 5:euro: Δ"), (1, "ascii", "cafe [1]", "café")],
)
async def test_an_smsc_whose_alphabet_is_narrower_gets_text_it_lacks_as_ucs2_never_question_marks(
    tmp_path: Path, coding: int, codec: str, fits: str, lacks: str
) -> None:
    # On a connector with gsm_data_coding 1 (IA5) or 3 (Latin-1), a GSM character that
    # alphabet lacks was re-encoded as "?" at submit time, priced and answered as GSM.
    smsc = await start_smsc("--delivery-rate", "1.0")
    url = f"{smsc.url}?gsm_data_coding={coding}"
    gw = await start_gateway(gateway_settings(tmp_path, smsc=url))
    try:
        _, plain = await gw.send(message=fits)
        _, wider = await gw.send(message=lacks)
        await _final_status(gw, plain["message_id"])
        await _final_status(gw, wider["message_id"])
        submits = {
            s["data_coding"]: bytes.fromhex(s["short_message"]) for s in await smsc.submits()
        }
        expected_fits = fits.replace("[", "(").replace("]", ")")  # SMS Partner's table
        expected_lacks = lacks.replace(":euro:", "€")
        assert submits == {
            coding: expected_fits.encode(codec),
            8: expected_lacks.encode("utf-16-be"),
        }
        assert (plain["nb_sms"], wider["nb_sms"]) == (1, 1)
        long_lacking = await gw.send(message=lacks + "x" * 70)  # UCS-2: 70 per SMS, priced so
        assert long_lacking[1]["nb_sms"] == 2
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_undelivered_receipt_reads_not_delivered(tmp_path: Path) -> None:
    smsc = await start_smsc("--delivery-rate", "0.0")
    gw = await start_gateway(gateway_settings(tmp_path, smsc=smsc.url))
    try:
        _, answer = await gw.send()
        status = await _final_status(gw, answer["message_id"], "Not delivered")
        assert status["stat"] == "UNDELIV"
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_a_part_whose_validity_ends_before_delivery_expires_at_the_carrier(
    tmp_path: Path,
) -> None:
    """The connector's validity_hours reaches the SMSC, which lets the part expire there."""
    smsc = await start_smsc("--delivery-rate", "1.0", "--receipt-delay-ms", "1500")
    url = smsc.url + "?validity_hours=0.0003"  # 1.08 s, sent as 1 s
    try:
        gw = await start_gateway(gateway_settings(tmp_path, smsc=url))
        try:
            _, answer = await gw.send()
            status = await _final_status(gw, answer["message_id"], "Not delivered")
            assert status["stat"] == "EXPIRED"
            [submit] = await smsc.submits()
            assert submit["validity_period"] == "000000000001000R"
        finally:
            await runtime.stop(gw.running)
    finally:
        await smsc.stop()


async def test_rejected_destination_is_not_delivered_with_reason(linked) -> None:
    smsc, gw = await linked("--reject-rate", "1.0")
    _, answer = await gw.send()
    await _final_status(gw, answer["message_id"], "Not delivered")
    message = await gw.store.get_message(answer["message_id"])
    assert message.state == "rejected" and "ESME_RINVDSTADR" in message.parts[0].last_error


async def test_receipt_before_submit_resp_is_kept_and_matched(linked) -> None:
    smsc, gw = await linked("--receipt-before-resp")
    _, answer = await gw.send()
    await _final_status(gw, answer["message_id"])


async def test_hex_receipt_id_matches_decimal_submit_id(linked) -> None:
    smsc, gw = await linked("--id-style", "decimal", "--receipt-id-style", "hex")
    ids = [(await gw.send())[1]["message_id"] for _ in range(5)]
    for message_id in ids:
        await _final_status(gw, message_id)


async def test_reply_is_stored_and_linked_to_the_last_message(linked) -> None:
    smsc, gw = await linked()
    _, answer = await gw.send(to="0612345678")
    await _final_status(gw, answer["message_id"])
    await smsc.reply("33612345678", gw.number, "Oui merci")

    async def stored() -> list | None:
        rows = await gw.store.db.read(
            lambda c: c.execute("SELECT msisdn, text, keyword, message_id FROM replies").fetchall()
        )
        return rows or None

    [(msisdn, text, keyword, linked_id)] = await eventually(stored)
    assert (msisdn, text, keyword, linked_id) == (
        "+33612345678",
        "Oui merci",
        "OUI",
        answer["message_id"],
    )


async def test_dropped_connection_mid_window_loses_and_duplicates_nothing(linked) -> None:
    smsc, gw = await linked("--drop-after", "40")
    ids = [(await gw.send(message=f"msg {i}"))[1]["message_id"] for i in range(120)]
    for message_id in ids:
        await _final_status(gw, message_id)
    submits = await smsc.submits()
    acked = [s for s in submits if s["status"] == 0 and s["message_id"]]
    texts = [bytes.fromhex(s["short_message"]) for s in acked]
    # Every message reached the SMSC; none that the SMSC acknowledged was sent again.
    assert len(set(texts)) == 120
    assert len(texts) == len(set(texts))


async def test_an_smsc_answering_after_the_timeout_gets_each_message_once(
    tmp_path: Path,
) -> None:
    # The SMSC answers in 2.5 s, five times our 0.5 s timeout (and later than a retry would
    # go): it has the messages all the same. They are not sent again while its answer may
    # still come (six timeouts), and the late ids are recorded, so the receipts match.
    smsc = await start_smsc("--delivery-rate", "1.0", "--resp-delay-ms", "2500")
    url = smsc.url + "?response_timeout=0.5"
    gw = await start_gateway(gateway_settings(tmp_path, smsc=url))
    try:
        ids = [(await gw.send(message=f"slow {i}"))[1]["message_id"] for i in range(3)]
        for message_id in ids:
            status = await _final_status(gw, message_id)
            assert status["parts"][0]["carrierId"]
        submits = await smsc.submits()
        assert sorted(bytes.fromhex(s["short_message"]) for s in submits) == [
            f"slow {i}".encode() for i in range(3)
        ]
        assert {s["message_id"] for s in submits} == {
            (await gw.status(i))["parts"][0]["carrierId"] for i in ids
        }
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_a_link_that_keeps_dropping_loses_and_duplicates_nothing(linked) -> None:
    # The SMSC closes the connection at every 53rd submit_sm (having sent what it answered):
    # a dozen reconnects mid-window, receipts re-delivered on the next bind.
    smsc, gw = await linked("--drop-every", "53")
    ids = [(await gw.send(message=f"flaky {i}"))[1]["message_id"] for i in range(400)]
    for message_id in ids:
        await _final_status(gw, message_id, "Delivered")
    assert (await smsc.stats())["dropped_connections"] >= 7
    acked = [s for s in await smsc.submits() if s["status"] == 0 and s["message_id"]]
    texts = [bytes.fromhex(s["short_message"]) for s in acked]
    assert sorted(texts) == sorted(f"flaky {i}".encode() for i in range(400))


async def test_throttling_smsc_slows_us_without_errors(linked) -> None:
    smsc, gw = await linked("--throttle", "100")
    # at once, so they reach the SMSC faster than 100/s however busy this machine is (sent
    # one by one, a loaded CI machine once stayed under the SMSC's limit)
    answers = await asyncio.gather(*(gw.send(message=f"t {i}") for i in range(150)))
    ids = [answer["message_id"] for _, answer in answers]
    for message_id in ids:
        await _final_status(gw, message_id)
    messages = [await gw.store.get_message(i) for i in ids]
    assert {m.state for m in messages} == {"delivered"}
    throttled = [s for s in await smsc.submits() if s["status"] == 0x58]
    assert throttled, "the simulator should have throttled some submits"
    # It is followed, not hammered: the first refusals set a pace (once 870 refusals for
    # these 150 messages, as each retry wave hit the SMSC's limit again). At most the window
    # that was out when the first refusal came (100), and a few while the pace settles.
    assert len(throttled) <= 130


@pytest.mark.parametrize(("receipt_id", "matched"), [("decimal", True), ("same", False)])
async def test_the_connector_says_how_its_smsc_writes_receipt_ids(
    tmp_path: Path, receipt_id: str, matched: bool
) -> None:
    # submit_sm_resp ids in hex, receipt ids in decimal: with the setting each receipt has one
    # key, so it cannot fit another message's id; a wrong setting matches nothing.
    smsc = await start_smsc(
        "--delivery-rate", "1.0", "--id-style", "hex", "--receipt-id-style", "decimal"
    )
    url = f"{smsc.url}?receipt_id={receipt_id}"
    gw = await start_gateway(gateway_settings(tmp_path, smsc=url))
    try:
        ids = [(await gw.send(message=f"r {i}"))[1]["message_id"] for i in range(5)]

        async def receipts_acked() -> bool:
            return bool((await smsc.stats())["receipts_acked"] >= 5)

        await eventually(receipts_acked)
        for message_id in ids:
            status = await gw.status(message_id)
            assert (status["statut"] == "Delivered") is matched, status
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_message_waits_while_the_smsc_is_down_then_leaves(tmp_path: Path) -> None:
    probe = await start_smsc()
    port = probe.port
    await probe.stop()  # nothing listens on that port now
    url = f"smpp://smsrelay:smsrelay@127.0.0.1:{port}"
    gw = await start_gateway(gateway_settings(tmp_path, smsc=url))
    smsc = None
    try:
        _, answer = await gw.send()
        status = await gw.status(answer["message_id"])
        assert status["statut"] == "Waiting" and status["parts"][0]["state"] == "queued"
        smsc = await start_smsc("--delivery-rate", "1.0", "--port", str(port))
        await _final_status(gw, answer["message_id"])  # the connector reconnected and sent it
        message = await gw.store.get_message(answer["message_id"])
        assert message.parts[0].attempts == 1  # it waited unclaimed: no failed attempts
    finally:
        await runtime.stop(gw.running)
        if smsc is not None:
            await smsc.stop()


async def test_a_frozen_smscs_part_counts_its_attempt_the_smsc_has_it(tmp_path: Path) -> None:
    # A frozen SMSC (SIGSTOP) still takes our bytes into its kernel and reads them later:
    # sent again uncounted, the handset got it twice (the diff review). Counted, one
    # attempt allowed: given up, and the SMSC has the one copy.
    smsc = await start_smsc("--delivery-rate", "1.0")
    url = f"{smsc.url}?response_timeout=0.3&enquire_link_interval=0.5&reconnect_min=0.05"
    gw = await start_gateway(gateway_settings(tmp_path, smsc=url, submit_attempts=1))
    try:
        await eventually(lambda: gw.running.gateway.smsc_binds()["default"]["transceiver"])
        os.kill(smsc.process.pid, signal.SIGSTOP)
        _, answer = await gw.send()

        async def given_up() -> bool:
            message = await gw.store.get_message(answer["message_id"])
            return message.state == "failed"

        await eventually(given_up)
        os.kill(smsc.process.pid, signal.SIGCONT)
        message = await gw.store.get_message(answer["message_id"])
        assert "gave up after 1" in (message.parts[0].last_error or "")
        await eventually(lambda: gw.running.gateway.smsc_binds()["default"]["transceiver"])
        assert len(await smsc.submits()) <= 1  # read after SIGCONT, or lost with the link
    finally:
        os.kill(smsc.process.pid, signal.SIGCONT)
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_parts_waiting_behind_a_rate_cap_are_not_sent_twice(tmp_path: Path) -> None:
    # 60 parts at 20/s take 3 s to leave, twice the 1.5 s lease: the dispatcher must renew
    # the leases of what it still holds, or the sweeper hands those parts out again.
    smsc = await start_smsc("--delivery-rate", "1.0")
    settings = gateway_settings(tmp_path, smsc=smsc.url + "?max_per_second=20", lease_seconds=1.5)
    gw = await start_gateway(settings)
    try:
        ids = [(await gw.send(message=f"capped {i}"))[1]["message_id"] for i in range(60)]
        for message_id in ids:
            await _final_status(gw, message_id)
        # A part handed out twice would have been claimed twice (attempts 2) and sent twice.
        attempts = await gw.store.db.read(
            lambda c: c.execute("SELECT attempts, COUNT(*) FROM parts GROUP BY attempts").fetchall()
        )
        assert attempts == [(1, 60)]
        texts = [bytes.fromhex(s["short_message"]) for s in await smsc.submits()]
        assert sorted(texts) == sorted(f"capped {i}".encode() for i in range(60))
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_an_outcome_the_store_briefly_refuses_is_stored_later_not_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database is locked (a CLI command) when the first submit_sm_resp comes back: the
    # outcome must be stored once the lock is gone, not the part re-sent when its lease ends.
    smsc = await start_smsc("--delivery-rate", "1.0")
    gw = await start_gateway(gateway_settings(tmp_path, smsc=smsc.url, lease_seconds=1.5))
    store = gw.running.gateway.store
    real_mark_submitted = store.mark_submitted_many
    refusals = []

    async def locked_twice(*args: object, **kwargs: object) -> list[bool]:
        if len(refusals) < 2:
            refusals.append(args)
            raise TransientError("database commit failed: database is locked")
        return await real_mark_submitted(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "mark_submitted_many", locked_twice)
    try:
        _, answer = await gw.send(message="once only")
        await _final_status(gw, answer["message_id"])
        assert len(refusals) == 2
        # Sweeps run every 0.5 s with a 1.5 s lease: five more are past the lease, and a
        # part whose outcome was lost would have been released and sent again by then.
        dispatcher = gw.running.dispatcher
        swept = dispatcher.sweeps
        await eventually(lambda: dispatcher.sweeps >= swept + 5)
        assert [bytes.fromhex(s["short_message"]) for s in await smsc.submits()] == [b"once only"]
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


class _FullDisk:
    """The store refuses every submit outcome while ``full`` (another process filled the
    disk), as SQLite's 'database or disk is full'."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = True
        for write in ("mark_submitted_many", "mark_submitted", "mark_retry", "mark_part_final"):
            monkeypatch.setattr(store, write, partial(self._refused, getattr(store, write)))

    async def _refused(self, real_write: Any, *args: Any, **kwargs: Any) -> Any:
        if self.full:
            raise TransientError("database commit failed: database or disk is full")
        return await real_write(*args, **kwargs)


async def _thirty_sent_onto_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[SmscProcess, RunningGateway, _FullDisk, list[int], int]:
    """30 messages through a window of 2 onto a full disk: the gateway, and how many parts
    left before sending was withheld (the others wait unsent)."""
    smsc = await start_smsc("--delivery-rate", "1.0", "--resp-delay-ms", "50")
    gw = await start_gateway(gateway_settings(tmp_path, smsc=f"{smsc.url}?window=2"))
    disk = _FullDisk(gw.running.gateway.store, monkeypatch)
    sent = [(await gw.send(message=f"m{i}"))[1]["message_id"] for i in range(30)]
    await eventually(lambda: gw.running.dispatcher.withheld)
    connector = gw.running.connectors["default"]

    async def every_part_answered_or_parked() -> int | None:
        left = len(await smsc.submits())
        return left if left + len(connector._parked) == 30 else None  # type: ignore[attr-defined]

    return smsc, gw, disk, sent, await eventually(every_part_answered_or_parked)


async def test_while_the_store_refuses_outcomes_parts_waiting_for_a_slot_do_not_leave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process filled the disk (the storage review): the dispatcher went on sending
    # the parts it held, whose answers it could not store; a kill -9 then sent 331 of them
    # again, a SIGTERM 325. Only the window's parts are out when the first refusal comes.
    smsc, gw, disk, sent, left_while_full = await _thirty_sent_onto_a_full_disk(
        tmp_path, monkeypatch
    )
    dispatcher = gw.running.dispatcher
    try:
        assert left_while_full <= 4  # the window's two, and two more sent before it said
        # waiting unsent, not failed back to the queue: in flight still, once the parts that
        # left are answered (the simulator counts a submit before its late answer)
        await eventually(
            lambda: all(lane.in_flight == 30 - left_while_full for lane in dispatcher._lanes)
        )
        disk.full = False
        for message_id in sent:
            await _final_status(gw, message_id)
        assert not dispatcher.withheld
        # none went back to the queue unsent (one refusal once bounced every waiting part)
        assert dispatcher.outcomes["default", "not_sent"] == 0
        texts = [bytes.fromhex(s["short_message"]) for s in await smsc.submits()]
        assert sorted(texts) == sorted(f"m{i}".encode() for i in range(30))  # each once
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_a_stop_on_a_full_disk_names_apart_the_parts_that_left_and_those_that_did_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # dispatch.stop.unrecorded said 344 parts "the SMSC may have them": 101 had left
    smsc, gw, _, _, left_while_full = await _thirty_sent_onto_a_full_disk(tmp_path, monkeypatch)
    try:
        caplog.set_level(logging.WARNING, logger="smsrelay.dispatch")
        await gw.running.dispatcher.stop(grace=0.3)

        def said(event: str) -> list[int]:
            return [r.__dict__["parts"] for r in caplog.records if r.getMessage() == event]

        assert said("dispatch.stop.unrecorded") == [left_while_full]
        assert said("dispatch.stop.unsent") == [30 - left_while_full]
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_a_database_a_real_smsc_served_is_not_started_on_the_simulator_by_mistake(
    tmp_path: Path,
) -> None:
    smsc = await start_smsc()
    gw = await start_gateway(gateway_settings(tmp_path, smsc=smsc.url))
    assert f"note: creating a new database at {tmp_path}/data/smsrelay.db" in gw.lines
    await smsc.stop()  # the carrier is down: the message waits for it
    _, answer = await gw.send(message="for the carrier", to="0612345678")
    await runtime.stop(gw.running)
    # its settings forgotten (no smsrelay.toml where serve was started): refused, not sent
    with pytest.raises(SettingsError, match=rf"a real SMSC \(127\.0\.0\.1:{smsc.port}\)"):
        await runtime.start(gateway_settings(tmp_path), lambda line: None)
    on_purpose = await start_gateway(gateway_settings(tmp_path, smsc="builtin"))
    assert not [line for line in on_purpose.lines if line.startswith("note: creating")]
    try:  # asked for by name, the simulator takes what waited
        status = await _final_status(on_purpose, answer["message_id"])
        assert status["stat"] == "DELIVRD"
    finally:
        await runtime.stop(on_purpose.running)


async def test_on_a_real_smsc_no_demo_account_is_made_unless_asked(tmp_path: Path) -> None:
    smsc = await start_smsc()
    try:
        said: list[str] = []
        running = await runtime.start(
            gateway_settings(tmp_path, smsc=smsc.url, demo=None), said.append
        )
        try:  # its printed key, with credit, would send real SMS
            assert not any(line.startswith("demo account:") for line in said)
            assert await running.gateway.store.list_accounts() == []
        finally:
            await runtime.stop(running)
        gw = await start_gateway(gateway_settings(tmp_path, smsc=smsc.url, demo=True))
        await gw.running.gateway.store.update_account("demo", {"disabled": 1})
        await runtime.stop(gw.running)
        said.clear()
        running = await runtime.start(gateway_settings(tmp_path, smsc=smsc.url), said.append)
        await runtime.stop(running)
        assert not any(line.startswith("demo account:") for line in said)  # disabled: no use
    finally:
        await smsc.stop()
