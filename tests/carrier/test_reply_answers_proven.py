"""A reply's answer is saved as proven read once the SMSC answered a request written after it
(the store tells an SMSC's re-send from the person writing twice by it)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest

from smsrelay.carrier.connector import MAY_BE_STORED, InboundSm
from smsrelay.carrier.simulator import Simulator
from smsrelay.smpp.pdu import CommandStatus
from tests.carrier.conftest import Inbox, MakeConnector, MakeSimulator, eventually

pytestmark = pytest.mark.asyncio


class _SlowStore(Inbox):
    """Stores a reply only when the test says (its resp waits for the commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.commit = asyncio.Event()

    async def handle_many(self, inbounds: Sequence[InboundSm]) -> list[int]:
        await self.commit.wait()
        return await super().handle_many(inbounds)


async def test_a_replys_answer_is_proven_only_after_the_smsc_answered_a_later_request(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator: Simulator = await make_simulator(delivery_rate=1.0)
    inbox = _SlowStore()
    await make_connector(simulator, inbox, enquire_link_interval=0.05)
    [server_side] = simulator.server.links
    reply = asyncio.create_task(simulator.inject_reply("33612345678", "33757000001", "Oui"))
    await eventually(lambda: simulator.stats.mo_sent == 1, what="the reply sent")
    # keepalives answered while the reply waits for its commit prove nothing of it
    seen = server_side.enquire_links_received
    await eventually(lambda: server_side.enquire_links_received >= seen + 3, what="keepalives")
    assert inbox.proven == {}
    inbox.commit.set()
    assert await reply == [0]
    [stored] = inbox.items
    assert stored.bind_seq >= 1 and stored.bind_id
    await eventually(lambda: inbox.proven.get(stored.bind_id, 0) >= stored.bind_seq)


async def test_receipts_alone_save_no_proof(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    # a flow of receipts is no reason for a write a second
    from tests.carrier.test_smpp_connector import part

    simulator = await make_simulator(delivery_rate=1.0)
    inbox = Inbox()
    connector = await make_connector(simulator, inbox, enquire_link_interval=0.05)
    [server_side] = simulator.server.links
    assert (await connector.submit(part())).status == 0
    await eventually(lambda: len(inbox.receipts) == 1)
    link = connector._links["transceiver"]
    assert link is not None
    receipts_proven = link.proof.arrivals
    await eventually(lambda: link.proof.proven >= receipts_proven, what="receipt answers read")
    assert not connector.proofs.due and inbox.proven == {}  # none due: none will be saved


async def test_the_unbind_at_a_stop_proves_and_saves_what_was_answered(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(delivery_rate=1.0)
    inbox = Inbox()
    connector = await make_connector(simulator, inbox, enquire_link_interval=30.0)
    assert await simulator.inject_reply("33612345678", "33757000001", "Oui") == [0]
    [stored] = inbox.items
    await connector.stop()
    assert inbox.proven == {stored.bind_id: stored.bind_seq}


async def test_a_reply_on_a_link_busy_with_deliveries_is_proven_all_the_same(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    # A receiver link writes no request but enquire_link, and only after its interval of
    # silence: deliveries every 0.1 s kept it from going out, and the reply stayed unproven
    # for the link's life (the person's same text on the next bind then dropped for an hour).
    simulator = await make_simulator(delivery_rate=1.0)
    inbox = Inbox()
    connector = await make_connector(
        simulator, inbox, bind_mode="transmitter+receiver", enquire_link_interval=0.5
    )
    await eventually(lambda: all(connector.binds().values()), what="both bound")
    assert await simulator.inject_reply("33612345678", "33757000001", "Oui") == [0]
    [reply] = inbox.items

    async def others() -> None:  # deliveries back to back: the link is never silent
        for i in itertools.count():
            await simulator.inject_reply(f"336{i % 10**8:08d}", "33757000001", "other")

    traffic = asyncio.create_task(others())
    try:
        await eventually(lambda: inbox.proven.get(reply.bind_id, 0) >= reply.bind_seq)
    finally:
        traffic.cancel()


@pytest.mark.parametrize(
    ("refusal", "proves_the_next"),
    [(CommandStatus.ESME_RX_T_APPN, True), (MAY_BE_STORED, False)],
    ids=["not stored", "may be stored"],
)
async def test_a_reply_refused_while_the_database_is_out_stops_no_later_proof(
    make_simulator: MakeSimulator,
    make_connector: MakeConnector,
    refusal: int,
    proves_the_next: bool,
) -> None:
    # One reply refused during a 1-s PostgreSQL outage stopped every later proof on its link
    # until it reconnected: a person's repeat on another bind was dropped (the PostgreSQL
    # review). Only a refusal whose write may have committed must stop it.
    simulator = await make_simulator(delivery_rate=1.0)
    inbox = Inbox()
    inbox.statuses = [refusal]
    connector = await make_connector(simulator, inbox, enquire_link_interval=0.05)
    wire = await simulator.inject_reply("33612345678", "33757000001", "Oui")
    assert wire == [CommandStatus.ESME_RX_T_APPN]  # the SMSC sends it again either way
    assert await simulator.inject_reply("33612345679", "33757000001", "Non") == [0]
    [later] = inbox.items
    link = connector._links["transceiver"]
    assert link is not None
    [server_side] = simulator.server.links
    seen = server_side.enquire_links_received
    await eventually(lambda: server_side.enquire_links_received >= seen + 3, what="keepalives")
    assert (link.proof.proven >= later.bind_seq) is proves_the_next
