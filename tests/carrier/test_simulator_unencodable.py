"""What no deliver_sm can carry never hangs the simulator (nor a serve that runs it)."""

from __future__ import annotations

import asyncio

import pytest

from smsrelay.smpp.errors import LocalProtocolError
from tests.carrier.conftest import Inbox, MakeConnector, MakeSimulator

pytestmark = pytest.mark.asyncio


async def test_a_reply_from_an_address_past_its_field_is_refused_and_the_simulator_goes_on(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    # The interop review: retried at once for ever, it spun the event loop (serve's too:
    # /health, sends and SIGTERM went unanswered).
    simulator = await make_simulator()
    inbox = Inbox()
    await make_connector(simulator, inbox)
    async with asyncio.timeout(5):
        with pytest.raises(LocalProtocolError):
            await simulator.inject_reply("3" * 28, "33757000001", "Oui")
        assert await simulator.inject_reply("33612345678", "33757000001", "Oui") == [0]
    assert [item.source for item in inbox.items] == ["33612345678"]
