"""A reply whose sender the SMSC writes in national form reaches the app and the STOP list
in international form.

The built-in simulator only sends TON 1, so the deliver_sm is handed to the running
gateway's connector as the SMPP link would hand it over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from smsrelay import runtime
from smsrelay.smpp.pdu import DeliverSm
from tests.support import Receiver, RunningGateway, eventually, gateway_settings, start_gateway

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(gateway_settings(tmp_path, allow_private_webhooks=True))
    yield running
    await runtime.stop(running.running)


async def mo_from_national(gw: RunningGateway, source: str, ton: int, text: bytes) -> int:
    connector: Any = gw.running.connectors["default"]
    pdu = DeliverSm(
        sequence=1,
        source_addr_ton=ton,
        source_addr_npi=1,
        source_addr=source,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=gw.number,
        short_message=text,
    )
    return int(await connector.handle_inbound(pdu))


@pytest.mark.parametrize("ton", [2, 0])  # national; unknown with the trunk prefix
async def test_stop_from_a_national_sender_reaches_the_callback_and_blocks_the_next_send(
    gw: RunningGateway, receiver: Receiver, ton: int
) -> None:
    status, answer = await gw.send(to="0612345678", urlResponse=receiver.url + "/mo")
    assert status == 200

    async def left() -> bool:  # a reply answers a message that reached the person
        message = await gw.store.get_message(answer["message_id"])
        return message is not None and message.parts[0].submitted_at is not None

    await eventually(left)
    assert await mo_from_national(gw, "0612345678", ton, b"STOP") == 0

    [(_, body)] = await eventually(lambda: receiver.received or None)
    assert body["msisdn"] == "33612345678" and body["to"] == gw.number
    assert body["text"] == "STOP"
    status, answer = await gw.send(to="+33612345678")
    assert status == 400 and answer["code"] == 14
    status, _ = await gw.send(to="0622222222")
    assert status == 200
