"""The SMSC side over a raw socket: binds, refusals, enquire_link, and garbage."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from smsrelay.carrier.simulator import Simulator
from smsrelay.smpp.codec import PduReader, encode
from smsrelay.smpp.pdu import (
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CommandStatus,
    DataSm,
    DataSmResp,
    DeliverSm,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
)

from .conftest import MakeSimulator, eventually


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.pdus = reader, writer, PduReader()

    async def exchange(self, data: bytes | Pdu) -> Pdu:
        self.writer.write(data if isinstance(data, bytes) else encode(data))
        async with asyncio.timeout(5):
            while True:
                events = self.pdus.feed(await self.reader.read(4096))
                if events:
                    [event] = events
                    assert isinstance(event, Pdu)
                    return event

    async def closed_by_peer(self) -> bool:
        async with asyncio.timeout(5):
            return await self.reader.read(4096) == b""


@pytest.fixture
async def secured(make_simulator: MakeSimulator) -> Simulator:
    return await make_simulator(system_id="esme", password="secret")


@pytest.fixture
async def peer(secured: Simulator) -> AsyncIterator[RawPeer]:
    reader, writer = await asyncio.open_connection("127.0.0.1", secured.port)
    yield RawPeer(reader, writer)
    writer.close()


async def test_bind_checks_system_id_then_password(peer: RawPeer) -> None:
    wrong_id = BindTransmitter(sequence=1, system_id="nobody", password="secret")
    assert await peer.exchange(wrong_id) == BindTransmitterResp(
        sequence=1, status=CommandStatus.ESME_RINVSYSID, system_id="smsrelay"
    )
    wrong_password = BindTransmitter(sequence=2, system_id="esme", password="guess")
    resp = await peer.exchange(wrong_password)
    assert resp.status == CommandStatus.ESME_RINVPASWD
    ok = await peer.exchange(BindTransceiver(sequence=3, system_id="esme", password="secret"))
    # with sc_interface_version (SMPP 3.4 5.3.2.25): without it Cloudhopper assumes 3.3
    version = ((Tag.SC_INTERFACE_VERSION, b"\x34"),)
    assert ok == BindTransceiverResp(sequence=3, system_id="smsrelay", tlvs=version)
    again = await peer.exchange(BindTransceiver(sequence=4, system_id="esme", password="secret"))
    assert again.status == CommandStatus.ESME_RALYBND


async def test_a_bind_of_an_smpp_33_esme_gets_no_tlv(peer: RawPeer) -> None:
    bind = BindTransceiver(sequence=1, system_id="esme", password="secret", interface_version=0x33)
    assert await peer.exchange(bind) == BindTransceiverResp(sequence=1, system_id="smsrelay")


async def test_enquire_link_is_answered_even_before_bind(peer: RawPeer) -> None:
    assert await peer.exchange(EnquireLink(sequence=42)) == EnquireLinkResp(sequence=42)


async def test_submit_before_bind_is_refused_with_its_own_response(peer: RawPeer) -> None:
    resp = await peer.exchange(SubmitSm(sequence=5, short_message=b"x"))
    assert resp == SubmitSmResp(sequence=5, status=CommandStatus.ESME_RINVBNDSTS)


async def test_unknown_command_gets_generic_nack_and_the_link_stays(peer: RawPeer) -> None:
    unknown = struct.pack(">IIII", 16, 0x00000003, 0, 9)
    assert await peer.exchange(unknown) == GenericNack(
        sequence=9, status=CommandStatus.ESME_RINVCMDID
    )
    assert await peer.exchange(EnquireLink(sequence=10)) == EnquireLinkResp(sequence=10)


async def test_a_flood_of_unknown_commands_is_answered_each_and_logged_a_line_a_second(
    peer: RawPeer, caplog: pytest.LogCaptureFixture
) -> None:
    # The security re-test: 300,000 unknown command ids wrote a warning each (58 MB of log in
    # 10 s). Each is still answered; the log says it once, then with a count.
    flood = b"".join(struct.pack(">IIII", 16, 0x00000003, 0, n) for n in range(1, 2001))
    peer.writer.write(flood)
    answered = 0
    async with asyncio.timeout(10):
        while answered < 2000:
            answered += len(peer.pdus.feed(await peer.reader.read(65536)))
    lines = [r for r in caplog.records if r.getMessage() == "smpp.pdu.refused"]
    assert len(lines) == 1, len(lines)  # the first at once; the rest at the second's end
    await eventually(
        lambda: (
            sum(
                getattr(r, "since_last_line", 1)
                for r in caplog.records
                if r.getMessage() == "smpp.pdu.refused"
            )
            == 2000
        )
    )


async def test_data_sm_from_an_esme_is_answered_not_supported(peer: RawPeer) -> None:
    await peer.exchange(BindTransceiver(sequence=1, system_id="esme", password="secret"))
    resp = await peer.exchange(DataSm(sequence=2, destination_addr="33612345678"))
    assert resp == DataSmResp(sequence=2, status=CommandStatus.ESME_RINVCMDID)
    assert await peer.exchange(EnquireLink(sequence=3)) == EnquireLinkResp(sequence=3)


async def test_malformed_body_gets_an_error_response(peer: RawPeer) -> None:
    bad_bind = struct.pack(">IIII", 20, 0x00000009, 0, 11) + b"esme"  # no NUL anywhere
    resp = await peer.exchange(bad_bind)
    assert resp.sequence == 11 and resp.status == CommandStatus.ESME_RINVCMDLEN


async def test_hostile_length_gets_generic_nack_then_close(peer: RawPeer) -> None:
    hostile = struct.pack(">IIII", 0xFFFFFFF0, 0x00000004, 0, 12)
    assert await peer.exchange(hostile) == GenericNack(
        sequence=12, status=CommandStatus.ESME_RINVCMDLEN
    )
    assert await peer.closed_by_peer()


async def test_unbind_is_answered_and_the_connection_closed(peer: RawPeer) -> None:
    await peer.exchange(BindTransceiver(sequence=1, system_id="esme", password="secret"))
    assert await peer.exchange(Unbind(sequence=2)) == UnbindResp(sequence=2)
    assert await peer.closed_by_peer()


async def test_a_connection_that_never_binds_is_dropped(make_simulator: MakeSimulator) -> None:
    simulator = await make_simulator(system_id="esme", password="secret", bind_timeout=1.0)

    async def connect() -> RawPeer:
        return RawPeer(*await asyncio.open_connection("127.0.0.1", simulator.port))

    # Connected in this order, so the bound link's deadline comes first and the idle one's last:
    # once the idle link has been dropped, the bound link's deadline is behind us too.
    bound = await connect()
    ok = BindTransceiver(sequence=1, system_id="esme", password="secret")
    assert (await bound.exchange(ok)).status == CommandStatus.ESME_ROK
    refused = await connect()
    wrong = BindTransmitter(sequence=1, system_id="esme", password="guess")
    assert (await refused.exchange(wrong)).status == CommandStatus.ESME_RINVPASWD
    idle = await connect()
    assert await refused.closed_by_peer()  # a refused bind is not a bind
    assert await idle.closed_by_peer()  # within closed_by_peer's 5 s deadline
    assert await bound.exchange(EnquireLink(sequence=2)) == EnquireLinkResp(sequence=2)
    for peer in (idle, refused, bound):
        peer.writer.close()


async def test_a_dropped_link_reads_on_so_a_peer_still_sending_gets_every_answer(
    make_simulator: MakeSimulator,
) -> None:
    # Closing a socket with bytes still unread resets the connection, and a reset can destroy
    # answers already on their way (the ESME's next write fails and its transport stops
    # reading). So a drop sends its answers, then half-closes, and reads on until the peer
    # has closed: a pipelining ESME reads every answer and then a clean end of stream.
    simulator = await make_simulator(drop_every=3)
    reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
    peer = RawPeer(reader, writer)
    await peer.exchange(BindTransceiver(sequence=1, system_id="esme", password="x"))
    writer.write(b"".join(encode(_submit(seq)) for seq in (2, 3, 4)))  # the third is dropped
    await eventually(lambda: simulator.stats.dropped_connections == 1, what="the drop")
    for seq in (5, 6):  # the ESME goes on pipelining before it reads
        writer.write(encode(_submit(seq)))
        await writer.drain()
    async with asyncio.timeout(5):
        answers = peer.pdus.feed(await reader.read())  # to the end of the stream, no reset
    assert [(a.sequence, a.status) for a in answers] == [(2, 0), (3, 0)]
    assert len(simulator.received) == 2  # what came after the drop was neither taken nor recorded
    writer.close()


def _submit(sequence: int) -> SubmitSm:
    return SubmitSm(sequence=sequence, destination_addr="33612345678", short_message=b"hi")


async def _pdus_until(peer: RawPeer, count: int) -> list[Pdu]:
    seen: list[Pdu] = []
    async with asyncio.timeout(5):
        while len(seen) < count:
            seen += [e for e in peer.pdus.feed(await peer.reader.read(4096)) if isinstance(e, Pdu)]
    return seen


def _submit_asking(sequence: int, registered_delivery: int) -> SubmitSm:
    return SubmitSm(
        sequence=sequence,
        source_addr="33757000001",
        destination_addr="33612345678",
        registered_delivery=registered_delivery,
        short_message=b"hi",
    )


@pytest.mark.parametrize(("delivery_rate", "stat"), [(1.0, None), (0.0, "UNDELIV")])
async def test_a_receipt_asked_for_failures_only_comes_for_a_failure(
    make_simulator: MakeSimulator, delivery_rate: float, stat: str | None
) -> None:
    # SMPP 3.4 5.2.17: registered_delivery 2 asks for a receipt on failure only. The first
    # submit asks that way, the second for every outcome: what follows the two answers is the
    # second's receipt, and the first's only if it failed (it would come first).
    simulator = await make_simulator(delivery_rate=delivery_rate)
    reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
    peer = RawPeer(reader, writer)
    try:
        await peer.exchange(BindTransceiver(sequence=1, system_id="a", password="b"))
        writer.write(encode(_submit_asking(2, 2)) + encode(_submit_asking(3, 1)))
        pdus = await _pdus_until(peer, 4 if stat else 3)
        receipts = [p for p in pdus if isinstance(p, DeliverSm)]
        ids = {p.sequence: p.message_id for p in pdus if isinstance(p, SubmitSmResp)}
        expected = [ids[2], ids[3]] if stat else [ids[3]]
        assert [p.short_message.decode().split()[0] for p in receipts] == [
            f"id:{i}" for i in expected
        ]
        assert simulator.stats.receipts_sent == len(expected)
    finally:
        writer.close()


async def test_a_submit_to_an_address_past_its_field_is_refused_not_taken(peer: RawPeer) -> None:
    # Taken with status 0, its receipt could not be encoded (and spun the loop, once): a real
    # SMSC refuses it (SMPP 3.4 5.2.8-9: 21 octets with the NUL)
    await peer.exchange(BindTransceiver(sequence=1, system_id="esme", password="secret"))
    fits = SubmitSm(sequence=2, source_addr="4" * 20, destination_addr="3" * 20)
    assert (await peer.exchange(fits)).status == CommandStatus.ESME_ROK
    for sequence, digit, status in [
        (3, b"3", CommandStatus.ESME_RINVDSTADR),
        (4, b"4", CommandStatus.ESME_RINVSRCADR),
    ]:
        raw = encode(replace(fits, sequence=sequence))  # our codec refuses to write 21
        longer = raw.replace(digit * 20 + b"\x00", digit * 21 + b"\x00")
        longer = (len(longer)).to_bytes(4, "big") + longer[4:]
        assert (await peer.exchange(longer)).status == status


async def test_a_receipt_keeps_the_types_of_number_the_submit_gave(secured: Simulator) -> None:
    # An alphanumeric sender (TON 5) got its receipt addressed TON 1 (the interop review)
    reader, writer = await asyncio.open_connection("127.0.0.1", secured.port)
    pdus = PduReader()
    bind = BindTransceiver(sequence=1, system_id="esme", password="secret")
    submit = SubmitSm(
        sequence=2,
        source_addr_ton=5,
        source_addr_npi=0,
        source_addr="SHOP",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="33612345678",
        registered_delivery=1,
        short_message=b"x",
    )
    received: list[Pdu] = []
    async with asyncio.timeout(5):
        for request, wanted in ((bind, BindTransceiverResp), (submit, DeliverSm)):
            writer.write(encode(request))
            while not any(isinstance(pdu, wanted) for pdu in received):
                received += [e for e in pdus.feed(await reader.read(4096)) if isinstance(e, Pdu)]
    writer.close()
    [receipt] = [pdu for pdu in received if isinstance(pdu, DeliverSm)]
    assert (receipt.dest_addr_ton, receipt.dest_addr_npi, receipt.destination_addr) == (
        5,
        0,
        "SHOP",
    )
    assert (receipt.source_addr_ton, receipt.source_addr) == (1, "33612345678")
