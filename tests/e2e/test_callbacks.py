"""Receipts and replies back to the application: DLR and reply callbacks, STOP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from smsrelay import runtime
from tests.support import (
    Receiver,
    RunningGateway,
    SmscProcess,
    eventually,
    gateway_settings,
    start_gateway,
    start_serve,
    start_smsc,
)

pytestmark = pytest.mark.asyncio
FAST_RETRIES = {
    "allow_private_webhooks": True,
    "webhook_first_retry": 0.05,
    "webhook_max_backoff": 0.2,
}


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[SmscProcess, RunningGateway]]:
    smsc = await start_smsc("--delivery-rate", "1.0")
    gw = await start_gateway(gateway_settings(tmp_path, smsc=smsc.url, **FAST_RETRIES))
    yield smsc, gw
    await runtime.stop(gw.running)
    await smsc.stop()


async def test_delivery_report_reaches_url_dlr_as_documented(setup, receiver) -> None:
    smsc, gw = setup
    _, answer = await gw.send(urlDlr=receiver.url + "/dlr", tag="promo")
    [(headers, body)] = await eventually(lambda: receiver.received or None)
    assert headers[":path"] == "/dlr"
    assert headers["X-Smsrelay-Event"] == "dlr" and headers["X-Smsrelay-Id"]
    assert body["messageId"] == answer["message_id"]
    assert body["phoneNumber"] == "33612345678" and body["status"] == "Delivered"
    assert body["stat"] == "DELIVRD" and body["cost"] == 0.045 and body["tag"] == "promo"
    assert body["date"] and body["parts"][0]["carrierId"]


async def test_long_message_gets_one_report_with_every_part(setup, receiver) -> None:
    smsc, gw = setup
    _, answer = await gw.send(urlDlr=receiver.url, message="x" * 400)
    [(_, body)] = await eventually(lambda: receiver.received or None)
    assert body["nbSms"] == 3 and [p["part"] for p in body["parts"]] == [1, 2, 3]
    assert {p["stat"] for p in body["parts"]} == {"DELIVRD"}


async def test_single_reply_reaches_url_response(setup, receiver) -> None:
    smsc, gw = setup
    await gw.send_and_wait_until_it_left(urlResponse=receiver.url + "/mo")
    await smsc.reply("33612345678", gw.number, "Yes please")
    [(headers, body)] = await eventually(lambda: receiver.received or None)
    assert headers["X-Smsrelay-Event"] == "reply"
    assert body["msisdn"] == "33612345678" and body["to"] == gw.number
    assert body["text"] == "Yes please" and body["keyword"] == "YES"
    assert body["type"] == "text" and body["message-timestamp"]
    assert isinstance(body["messageId"], str) and "concat" not in body


async def test_the_same_reply_sent_twice_by_the_person_is_posted_twice(setup, receiver) -> None:
    # Not the SMSC re-sending (that comes on a later bind): someone answering "Oui" twice.
    smsc, gw = setup
    await gw.send_and_wait_until_it_left(urlResponse=receiver.url + "/mo")
    for _ in range(2):
        await smsc.reply("33612345678", gw.number, "Oui")
    replies = await eventually(lambda: receiver.bodies("/mo")[1:] and receiver.bodies("/mo"))
    assert [r["text"] for r in replies] == ["Oui", "Oui"]
    assert replies[0]["messageId"] != replies[1]["messageId"]


async def test_the_same_reply_on_a_new_bind_once_the_smsc_read_our_answer_is_posted_twice(
    tmp_path: Path, receiver: Receiver
) -> None:
    # "Oui" to one message, the SMSC restarted (a new bind), "Oui" to the next a moment later:
    # the second was taken for the SMSC re-sending the first, and never posted. Our answer to
    # the first had been read: the SMSC answered the next message's submit_sm, written after.
    smsc = await start_smsc("--delivery-rate", "1.0")
    gw = await start_gateway(gateway_settings(tmp_path, smsc=smsc.url, **FAST_RETRIES))
    try:
        await gw.send_and_wait_until_it_left(urlResponse=receiver.url + "/mo")
        await smsc.reply("33612345678", gw.number, "Oui")
        await gw.send_and_wait_until_it_left(urlResponse=receiver.url + "/mo")

        def proven(conn: Any) -> list[tuple[int]]:
            return list(conn.execute("SELECT proven_through FROM binds").fetchall())

        await eventually(lambda: gw.store.db.read(proven))
        await smsc.stop()
        smsc = await start_smsc("--delivery-rate", "1.0", "--port", str(smsc.port))
        await smsc.reply("33612345678", gw.number, "Oui")
        replies = await eventually(lambda: receiver.bodies("/mo")[1:] and receiver.bodies("/mo"))
        assert [r["text"] for r in replies] == ["Oui", "Oui"]
        assert replies[0]["messageId"] != replies[1]["messageId"]
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def test_three_part_reply_is_posted_per_part(setup, receiver) -> None:
    smsc, gw = setup
    await gw.send_and_wait_until_it_left(urlResponse=receiver.url)
    text = "".join(str(i % 10) for i in range(400))
    await smsc.reply("33612345678", gw.number, text)
    received = await eventually(lambda: receiver.bodies() if len(receiver.received) >= 3 else None)
    parts = sorted(received, key=lambda b: int(b["concat-part"]))
    assert [p["concat-part"] for p in parts] == ["1", "2", "3"]
    assert {p["concat"] for p in parts} == {"true"} and {p["concat-total"] for p in parts} == {"3"}
    assert "".join(p["text"] for p in parts) == text


async def test_reassembly_setting_posts_one_callback(setup, receiver) -> None:
    smsc, gw = setup
    await gw.store.update_account("demo", {"reassemble_replies": 1})
    await gw.send_and_wait_until_it_left(urlResponse=receiver.url)
    text = "word " * 80
    await smsc.reply("33612345678", gw.number, text)
    [(_, body)] = await eventually(lambda: receiver.received or None)
    assert body["text"] == text and "concat" not in body


async def test_reply_without_a_message_goes_to_the_default_reply_url(setup, receiver) -> None:
    smsc, gw = setup
    await gw.store.update_account("demo", {"reply_url": receiver.url + "/default"})
    await smsc.reply("33699999999", gw.number, "Hello?")
    [(headers, body)] = await eventually(lambda: receiver.received or None)
    assert headers[":path"] == "/default" and body["msisdn"] == "33699999999"


async def test_an_smsc_delivering_by_data_sm_gets_reports_and_replies_through(
    tmp_path: Path, receiver: Receiver
) -> None:
    # Some SMSCs send receipts and MOs as data_sm (text in message_payload), not deliver_sm.
    smsc = await start_smsc("--delivery-rate", "1.0", "--inbound-pdu", "data_sm")
    gw = await start_gateway(gateway_settings(tmp_path, smsc=smsc.url, **FAST_RETRIES))
    try:
        await gw.send(
            urlDlr=receiver.url + "/dlr", urlResponse=receiver.url + "/mo", message="x" * 400
        )
        [report] = await eventually(lambda: receiver.bodies("/dlr") or None)
        assert report["status"] == "Delivered"
        assert [p["stat"] for p in report["parts"]] == ["DELIVRD"] * 3
        stats = await eventually(lambda: _when(smsc.stats(), lambda s: s["receipts_acked"] == 3))
        assert stats["receipts_refused"] == 0

        long_text = "Réponse un peu longue, " * 12  # 276 GSM characters in one payload
        assert await smsc.reply("33612345678", gw.number, long_text) == {
            "parts": 1,
            "statuses": [0],
        }
        [reply] = await eventually(lambda: receiver.bodies("/mo") or None)
        assert reply["text"] == long_text and "concat" not in reply
        assert reply["msisdn"] == "33612345678" and reply["to"] == gw.number

        await smsc.reply("33612345678", gw.number, "Merci 👍")
        replies = await eventually(lambda: receiver.bodies("/mo")[1:] or None)
        assert replies[0]["text"] == "Merci 👍"
    finally:
        await runtime.stop(gw.running)
        await smsc.stop()


async def _when(read: Any, cond: Any) -> Any:
    value = await read
    return value if cond(value) else None


async def test_receiver_down_then_up_gets_every_callback_once(setup) -> None:
    smsc, gw = setup
    down = Receiver()
    await down.start()
    port = down.port
    await down.stop()  # nothing listens there now
    ids = [
        (await gw.send(urlDlr=f"http://127.0.0.1:{port}/dlr", message=f"m{i}"))[1]["message_id"]
        for i in range(20)
    ]

    async def retried() -> bool:
        rows = await gw.store.list_webhooks(None, 100)
        return len(rows) == 20 and all(w.attempts >= 2 for w in rows)

    await eventually(retried, timeout=20)
    up = Receiver()
    await up.start(port)
    try:
        await eventually(lambda: len(up.received) >= 20, timeout=20)
        got = sorted(b["messageId"] for b in up.bodies())
        assert got == sorted(ids)  # each once
        assert len({h["X-Smsrelay-Id"] for h, _ in up.received}) == 20
    finally:
        await up.stop()


async def test_receiver_answering_500_is_retried_and_recorded(setup, receiver) -> None:
    smsc, gw = setup
    receiver.fail_with = 500
    await gw.send(urlDlr=receiver.url)

    async def failing_twice() -> Any:
        rows = await gw.store.list_webhooks(None, 10)
        return rows and rows[0].attempts >= 2

    await eventually(failing_twice)
    receiver.fail_with = None
    await eventually(lambda: receiver.received or None)
    [hook] = await gw.store.list_webhooks(None, 10)

    async def recorded_delivered() -> Any:
        # the receiver has the POST before the gateway has recorded its answer
        view = await gw.store.get_webhook(hook.id)
        return view if view.state == "delivered" else None

    hook = await eventually(recorded_delivered)
    assert [h[1] for h in hook.history][:2] == [500, 500] and hook.history[-1][1] == 200


async def test_stop_reply_blocks_the_next_send_in_both_formats(setup) -> None:
    smsc, gw = setup
    status, _ = await gw.send(to="0611111111")
    assert status == 200
    await smsc.reply("33611111111", gw.number, "STOP")

    async def blocked() -> Any:
        status, answer = await gw.send(to="0611111111")
        return answer if status == 400 else None

    answer = await eventually(blocked)
    assert answer["code"] == 14
    status, text = await gw.post(
        "/v1/vn/send?_format=xml",
        {"apiKey": gw.api_key, "from": gw.number, "to": "+33611111111", "message": "x"},
    )
    assert status == 400 and "<entry>14</entry>" in text
    status, _ = await gw.send(to="0622222222")
    assert status == 200


async def test_gateway_crash_before_posting_loses_no_callback(tmp_path: Path) -> None:
    smsc = await start_smsc("--delivery-rate", "1.0")
    data = tmp_path / "data"
    env_flags = ("--smsc", smsc.url, "--allow-private-webhooks")
    receiver = Receiver()
    await receiver.start()
    port = receiver.port
    await receiver.stop()  # down: callbacks pile up in the outbox
    try:
        serve = await start_serve(data, *env_flags)
        import aiohttp
        import orjson

        async with aiohttp.ClientSession() as session:
            for i in range(30):
                body = {
                    "apiKey": serve.api_key,
                    "from": serve.number,
                    "to": "0612345678",
                    "message": f"c{i}",
                    "urlDlr": f"http://127.0.0.1:{port}/",
                }
                async with session.post(
                    serve.base_url + "/v1/vn/send", data=orjson.dumps(body)
                ) as resp:
                    assert resp.status == 200

        def stored_callbacks() -> bool:
            import sqlite3

            conn = sqlite3.connect(data / "smsrelay.db")
            try:
                return conn.execute("SELECT COUNT(*) FROM webhooks").fetchone()[0] == 30
            finally:
                conn.close()

        await eventually(stored_callbacks, timeout=20)
        serve.kill()
        await serve.wait()
        await receiver.start(port)
        serve = await start_serve(data, *env_flags)
        await eventually(lambda: len(receiver.received) >= 30, timeout=30)
        assert sorted(b["messageId"] for b in receiver.bodies()) == list(range(1, 31))
        serve.process.terminate()
        await serve.wait()
    finally:
        await receiver.stop()
        await smsc.stop()


async def test_long_reply_parts_arrive_in_order_after_the_receiver_comes_back(setup) -> None:
    smsc, gw = setup
    down = Receiver()
    await down.start()
    port = down.port
    await down.stop()
    await gw.send_and_wait_until_it_left(urlResponse=f"http://127.0.0.1:{port}/mo")
    await smsc.reply("33612345678", gw.number, "".join(str(i % 10) for i in range(400)))

    async def failed_once() -> bool:
        rows = await gw.store.list_webhooks(None, 10)
        return len(rows) == 3 and any(w.attempts >= 1 for w in rows)

    await eventually(failed_once, timeout=20)
    up = Receiver()
    await up.start(port)
    try:
        await eventually(lambda: len(up.received) >= 3, timeout=20)
        assert [b["concat-part"] for b in up.bodies()] == ["1", "2", "3"]
    finally:
        await up.stop()
