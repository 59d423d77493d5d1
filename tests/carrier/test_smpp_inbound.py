"""What SmppConnector.handle_inbound passes on from a deliver_sm / data_sm."""

from __future__ import annotations

import pytest

from smsrelay.carrier.connector import InboundSm
from smsrelay.carrier.smpp_client import SmppConnector, SmppLinkConfig
from smsrelay.smpp.pdu import DataSm, DeliverSm
from tests.carrier.conftest import Handler

pytestmark = pytest.mark.asyncio


async def _handled(pdu: DeliverSm | DataSm, **config: object) -> InboundSm:
    seen: list[InboundSm] = []

    async def handler(inbound: InboundSm) -> int:
        seen.append(inbound)
        return 0

    link = SmppLinkConfig.from_url("smpp://a:b@127.0.0.1:2775", **config)
    assert await SmppConnector("c", link, Handler(handler)).handle_inbound(pdu) == 0
    [inbound] = seen
    return inbound


@pytest.mark.parametrize("gsm_data_coding", [0, 1, 3])
async def test_the_link_default_alphabet_travels_with_the_message(gsm_data_coding: int) -> None:
    pdu = DeliverSm(sequence=1, source_addr="33612345678", short_message=b"caf\xe9")
    inbound = await _handled(pdu, gsm_data_coding=gsm_data_coding)
    assert inbound.default_alphabet == gsm_data_coding
    assert inbound.data_coding == 0 and inbound.short_message == b"caf\xe9"


@pytest.mark.parametrize("receipt_id", ["auto", "same", "decimal", "hex"])
async def test_the_links_receipt_id_form_travels_with_the_message(receipt_id: str) -> None:
    pdu = DeliverSm(sequence=1, source_addr="33612345678", esm_class=0x04, short_message=b"x")
    inbound = await _handled(pdu, receipt_id=receipt_id)
    assert inbound.receipt_id_form == receipt_id


@pytest.mark.parametrize("pdu_type", [DeliverSm, DataSm])
async def test_the_types_of_number_travel_with_the_message(
    pdu_type: type[DeliverSm] | type[DataSm],
) -> None:
    pdu = pdu_type(
        sequence=1,
        source_addr_ton=2,
        source_addr="0612345678",
        dest_addr_ton=0,
        destination_addr="33757000001",
    )
    inbound = await _handled(pdu)
    assert (inbound.source, inbound.source_ton) == ("0612345678", 2)
    assert (inbound.destination, inbound.destination_ton) == ("33757000001", 0)
