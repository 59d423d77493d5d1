"""The seed's legal rule end to end: a Sunday 15:00 message leaves on Monday at 08:00."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from smsrelay import runtime
from smsrelay.service.accounts import create_account
from tests.support import eventually, gateway_settings, start_gateway, start_smsc

pytestmark = pytest.mark.asyncio
SUNDAY_15H = "2026-03-01T15:00:00+01:00"
MONDAY_0759 = "2026-03-02T07:59:59+01:00"
MONDAY_08H = "2026-03-02T08:00:00+01:00"


async def test_sunday_message_is_held_until_monday_8am(tmp_path: Path) -> None:
    smsc = await start_smsc("--delivery-rate", "1.0")
    settings = gateway_settings(
        tmp_path, smsc=smsc.url, fixed_clock=SUNDAY_15H, demo_quiet_hours=True
    )
    gw = await start_gateway(settings)
    try:
        # serve says so at start, before anyone wonders why the first message waits
        assert (
            "quiet hours: the demo account's messages sent now leave at "
            "2026-03-02T08:00:00+01:00 (smsrelay accounts set demo --quiet-hours off: at once)"
        ) in gw.lines
        gateway = gw.running.gateway
        other = await create_account(gw.store, "transactional", "10", gateway.clock)
        await gw.store.update_account("transactional", {"quiet_hours": 0})
        await gw.store.add_number("transactional", "+33757000009", "default", 0.0)

        _, held = await gw.send(message="Promo du dimanche")
        assert held["success"] is True and held["cost"] == 0.045  # accepted and charged
        status = await gw.status(held["message_id"])
        assert status["statut"] == "Waiting"
        assert status["dueAt"] == "2026-03-02T08:00:00+01:00"

        # A message of an account without the restriction leaves at once: once it has been
        # delivered, the dispatcher has run, and the held one must still be waiting.
        _, sent = await gw.post(
            "/v1/vn/send",
            {
                "apiKey": other.api_key,
                "from": "33757000009",
                "to": "0612345678",
                "message": "Votre code: 1234",
            },
        )
        await eventually(lambda: _statut(gw, sent["message_id"], "Delivered", other.api_key))
        await gw.post("/_test/clock", {"now": MONDAY_0759})
        _, sent2 = await gw.post(
            "/v1/vn/send",
            {
                "apiKey": other.api_key,
                "from": "33757000009",
                "to": "0612345678",
                "message": "Second code",
            },
        )
        await eventually(lambda: _statut(gw, sent2["message_id"], "Delivered", other.api_key))
        assert len(await smsc.submits()) == 2
        assert (await gw.status(held["message_id"]))["statut"] == "Waiting"

        await gw.post("/_test/clock", {"now": MONDAY_08H})
        await eventually(lambda: _statut(gw, held["message_id"], "Delivered"))
        message = await gw.store.get_message(held["message_id"])
        left = datetime.fromisoformat(MONDAY_08H).timestamp()
        assert message.parts[0].submitted_at == left
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


FRIDAY_1959 = "2026-03-06T19:59:30+01:00"
FRIDAY_23H = "2026-03-06T23:00:00+01:00"
SATURDAY_08H = "2026-03-07T08:00:00+01:00"


async def test_a_message_that_could_not_leave_before_20h_waits_for_the_morning(
    tmp_path: Path,
) -> None:
    # Accepted at 19:59:30 (not held), the SMSC down until 23:00: the law restricts when
    # marketing is sent, so it leaves at 08:00, not when the SMSC comes back.
    probe = await start_smsc()
    port = probe.port
    await probe.stop()  # nothing listens on that port now
    url = f"smpp://smsrelay:smsrelay@127.0.0.1:{port}"
    settings = gateway_settings(tmp_path, smsc=url, fixed_clock=FRIDAY_1959, demo_quiet_hours=True)
    gw = await start_gateway(settings)
    smsc = None
    try:
        _, answer = await gw.send(message="Promo -50% ce soir")
        assert (await gw.status(answer["message_id"]))["dueAt"] is None  # may leave now

        await gw.post("/_test/clock", {"now": FRIDAY_23H})
        smsc = await start_smsc("--delivery-rate", "1.0", "--port", str(port))
        await eventually(lambda: _due(gw, answer["message_id"], SATURDAY_08H))
        assert await smsc.submits() == []
        status = await gw.status(answer["message_id"])
        assert status["statut"] == "Waiting" and status["parts"][0]["state"] == "queued"

        await gw.post("/_test/clock", {"now": SATURDAY_08H})
        await eventually(lambda: _statut(gw, answer["message_id"], "Delivered"))
        message = await gw.store.get_message(answer["message_id"])
        left = datetime.fromisoformat(SATURDAY_08H).timestamp()
        assert message.parts[0].submitted_at == left and message.parts[0].attempts == 1
    finally:
        await runtime.stop(gw.running)
        if smsc is not None:
            await smsc.stop()


async def _due(gw, message_id: int, wanted: str) -> bool:
    return (await gw.status(message_id))["dueAt"] == wanted


async def _statut(gw, message_id: int, wanted: str, key: str | None = None) -> bool:
    _, status = await gw.get(
        "/v1/message-status",
        {"apiKey": key or gw.api_key, "messageId": str(message_id), "phoneNumber": "0612345678"},
    )
    assert "statut" in status, status
    return status["statut"] == wanted


async def test_serve_starts_with_a_clock_outside_the_holiday_calendar(tmp_path: Path) -> None:
    # the start's quiet-hours line is a hint: a clock the calendar refuses (2101) must not
    # stop serve; a send answers the calendar's refusal as before (500)
    settings = gateway_settings(
        tmp_path, fixed_clock="2101-01-03T12:00:00+01:00", demo_quiet_hours=True
    )
    gw = await start_gateway(settings)
    try:
        assert not [line for line in gw.lines if line.startswith("quiet hours:")]
        status, answer = await gw.send(message="Promo")
        assert (status, answer["code"]) == (500, 500)
    finally:
        await runtime.stop(gw.running)
