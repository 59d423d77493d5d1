"""Our SmppConnector against our Simulator over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

import aiohttp
import pytest

from smsrelay.carrier import simulator as simulator_module
from smsrelay.carrier import smpp_client
from smsrelay.carrier.connector import Connector, InboundSm, SentIntoSilence, SubmitUnanswered
from smsrelay.carrier.simulator import Simulator
from smsrelay.carrier.smpp_client import SmppConnector, SmppLinkConfig, WindowSlots
from smsrelay.carrier.smpp_link import LATE_ANSWER_LIMIT, SmppLink
from smsrelay.dispatch.inbound import read_receipt
from smsrelay.errors import TransientError
from smsrelay.smpp.codec import PduReader, encode
from smsrelay.smpp.concat import ConcatInfo, ConcatMethod, split_concat
from smsrelay.smpp.pdu import (
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitterResp,
    CommandStatus,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageState,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
)
from smsrelay.smpp.receipts import (
    LEARN_AFTER,
    VOTE_AFTER_RESPS,
    carrier_id_candidates,
    normalise_carrier_id,
    parse_receipt,
)
from smsrelay.smpp.session import Outstanding, Role
from smsrelay.store.receipt_match import EARLY_RECEIPT_WINDOW

from .conftest import (
    DESTINATION,
    POLL_INTERVAL,
    SOURCE,
    Handler,
    Inbox,
    MakeConnector,
    MakeSimulator,
    eventually,
    part,
)


async def test_submit_returns_the_message_id_and_the_receipt_comes_in(
    simulator: Simulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    connector = await make_connector(simulator, inbox)
    outcome = await connector.submit(part(payload=b"hello"))
    assert outcome.status == 0 and outcome.message_id

    [record] = simulator.received
    assert (record.source, record.destination, record.short_message) == (
        SOURCE,
        DESTINATION,
        b"hello",
    )
    assert (record.source_ton, record.source_npi, record.dest_ton, record.dest_npi) == (1, 1, 1, 1)
    assert (record.esm_class, record.registered_delivery, record.message_id) == (
        0,
        1,
        outcome.message_id,
    )

    await eventually(lambda: len(inbox.receipts) == 1, what="receipt")
    [receipt] = inbox.receipts
    assert (receipt.connector, receipt.source, receipt.destination) == ("test", DESTINATION, SOURCE)
    assert receipt.esm_class == 0x04
    assert receipt.tlvs[Tag.RECEIPTED_MESSAGE_ID] == outcome.message_id.encode() + b"\0"
    assert receipt.tlvs[Tag.MESSAGE_STATE][0] in (
        MessageState.DELIVERED,
        MessageState.UNDELIVERABLE,
    )
    text = parse_receipt(receipt.short_message.decode())
    assert text is not None and text.id == outcome.message_id and text.text == "hello"
    await eventually(lambda: simulator.stats.receipts_acked == 1, what="deliver_sm_resp")


async def test_connector_satisfies_the_protocol(simulator: Simulator) -> None:
    async def handler(_: object) -> int:
        return 0

    connector: Connector = SmppConnector(
        "x", SmppLinkConfig("127.0.0.1", simulator.port, "a", "b"), Handler(handler)
    )
    assert not connector.is_up


async def test_sockets_have_tcp_nodelay(
    simulator: Simulator, make_connector: MakeConnector
) -> None:
    connector = await make_connector(simulator)
    links = [link for link in connector._links.values() if link] + list(simulator.server.links)
    assert len(links) == 2
    for link in links:
        sock = link.transport.get_extra_info("socket")  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_submit_when_not_bound_raises_transient(simulator: Simulator) -> None:
    async def handler(_: object) -> int:
        return 0

    connector = SmppConnector(
        "x", SmppLinkConfig("127.0.0.1", simulator.port, "a", "b"), Handler(handler)
    )
    with pytest.raises(TransientError):
        await connector.submit(part())


async def test_a_link_that_cannot_take_a_submit_now_is_transient_not_permanent(
    simulator: Simulator, make_connector: MakeConnector
) -> None:
    # If the link's window and the connector's slots ever disagree, the part waits and goes
    # again: a bookkeeping slip on our side must not fail a customer's message for good.
    connector = await make_connector(simulator)
    link = connector._links["transceiver"]
    assert link is not None
    link.session.window = 0  # the link believes its window is full
    with pytest.raises(TransientError, match="window full"):
        await connector.submit(part())
    link.session.window = 10
    assert (await connector.submit(part())).status == 0


async def test_an_smsc_that_drops_us_right_after_the_bind_is_not_hammered(
    make_connector: MakeConnector,
) -> None:
    # It accepts the bind, then hangs up: the reconnects must back off, not loop at the
    # minimum delay (the bind's success used to reset the backoff).
    binds: list[float] = []

    async def bind_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pdus = PduReader()
        while not (events := pdus.feed(await reader.read(4096))):
            pass
        binds.append(time.monotonic())
        writer.write(encode(BindTransceiverResp(sequence=events[0].sequence, system_id="x")))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(bind_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await make_connector(port, wait=False, reconnect_min=0.02, reconnect_max=5.0)
    await eventually(lambda: len(binds) >= 6, what="six binds", timeout=10)
    server.close()
    gaps = [b - a for a, b in itertools.pairwise(binds)]
    assert gaps[-1] >= 0.15 > gaps[0]  # 0.02 * 2**5 * (50..100 %) vs the first ones


async def test_an_smsc_saying_we_are_not_bound_gets_a_new_bind_and_the_part_is_not_failed(
    make_connector: MakeConnector,
) -> None:
    # The SMSC lost our session (a restart behind a load balancer): its submit_sm_resp says
    # ESME_RINVBNDSTS. That is the link's fault, not the message's: bind again, retry.
    answered_on_first_bind: list[int] = []

    def answer(pdu: SubmitSm, binds: int) -> SubmitSmResp | None:
        if binds > 1:
            return SubmitSmResp(sequence=pdu.sequence, message_id="m1")
        if answered_on_first_bind:
            return None  # the rest of the window: still out when the link drops
        answered_on_first_bind.append(pdu.sequence)
        return SubmitSmResp(sequence=pdu.sequence, status=CommandStatus.ESME_RINVBNDSTS)

    server, binds = await _scripted_smsc(answer)
    connector = await make_connector(server.sockets[0].getsockname()[1])
    results = await asyncio.gather(
        *(connector.submit(part(n)) for n in range(5)), return_exceptions=True
    )
    # The first answer says "not bound"; the rest of the window was refused the same way,
    # not taken: none of them counts as a part that may be at the SMSC.
    assert all(type(r) is TransientError for r in results), results
    assert any("not bound" in str(r) for r in results)
    await eventually(lambda: len(binds) == 2 and connector.is_up, what="a new bind")
    assert (await connector.submit(part())).message_id == "m1"
    server.close()


async def test_a_submit_sent_before_the_not_bound_answer_may_be_taken_and_stays_unanswered(
    make_connector: MakeConnector,
) -> None:
    # Submit 1 is in the SMSC's hands (its answer is slow); submit 2, sent after, is answered
    # "not bound". Only what followed the refusal was refused: submit 1 may be at the SMSC,
    # so it must come back unanswered (its new attempt counts), not as never sent.
    held: list[int] = []

    def answer(pdu: SubmitSm, binds: int) -> SubmitSmResp | None:
        if not held:
            held.append(pdu.sequence)  # taken, not answered yet
            return None
        return SubmitSmResp(sequence=pdu.sequence, status=CommandStatus.ESME_RINVBNDSTS)

    server, _ = await _scripted_smsc(answer)
    connector = await make_connector(server.sockets[0].getsockname()[1])
    first = asyncio.create_task(connector.submit(part(1)))
    await eventually(lambda: bool(held), what="the first submit at the SMSC")
    with pytest.raises(TransientError, match="not bound"):
        await connector.submit(part(2))
    with pytest.raises(SubmitUnanswered):
        await first
    server.close()


async def test_a_generic_nack_saying_we_are_not_bound_gets_a_new_bind_not_endless_resends(
    make_connector: MakeConnector,
) -> None:
    # Some SMSCs refuse a submit with generic_nack rather than submit_sm_resp: "not bound"
    # said that way used to be retried on the same dead session for ever, no attempt counted.
    def answer(pdu: SubmitSm, binds: int) -> Pdu:
        if binds > 1:
            return SubmitSmResp(sequence=pdu.sequence, message_id="m1")
        return GenericNack(sequence=pdu.sequence, status=CommandStatus.ESME_RINVBNDSTS)

    server, binds = await _scripted_smsc(answer)
    connector = await make_connector(server.sockets[0].getsockname()[1])
    with pytest.raises(TransientError):
        await connector.submit(part())
    await eventually(lambda: len(binds) == 2 and connector.is_up, what="a new bind")
    assert (await connector.submit(part())).message_id == "m1"
    server.close()


async def test_a_bind_answered_with_the_wrong_kind_of_resp_is_refused_and_tried_again(
    make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    # A bind_transmitter_resp (status 0) to our bind_transceiver bound nothing, yet the link
    # was kept: it sent nothing, not even enquire_link, and never bound again.
    def wrong_then_right(pdu: BindTransceiver, binds: int) -> Pdu:
        if binds == 1:
            return BindTransmitterResp(sequence=pdu.sequence, system_id="smsc")
        return BindTransceiverResp(sequence=pdu.sequence, system_id="smsc")

    def answer(pdu: SubmitSm, binds: int) -> Pdu:
        return SubmitSmResp(sequence=pdu.sequence, message_id=f"m{binds}")

    server, binds = await _scripted_smsc(answer, bind_answer=wrong_then_right)
    port = server.sockets[0].getsockname()[1]
    connector = await make_connector(port, wait=False, reconnect_min=0.02)
    await eventually(lambda: connector.is_up, what="the second bind")
    assert len(binds) == 2
    assert (await connector.submit(part())).message_id == "m2"
    assert any(getattr(r, "status", None) == "BindTransmitterResp" for r in caplog.records), (
        "the first bind should be logged as refused"
    )
    server.close()


async def test_an_answer_after_the_smscs_unbind_is_still_taken(
    make_connector: MakeConnector,
) -> None:
    # The SMSC unbinds with our submit in its hands, then answers it. We have half-closed by
    # then, but the part was taken: dropping that answer made it unanswered, sent again on the
    # next bind, and the handset got the SMS twice.
    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pdus, submits = PduReader(), []
        while data := await reader.read(4096):
            for pdu in pdus.feed(data):
                if isinstance(pdu, BindTransceiver):
                    writer.write(encode(BindTransceiverResp(sequence=pdu.sequence)))
                elif isinstance(pdu, SubmitSm):
                    submits.append(pdu.sequence)
                    writer.write(encode(Unbind(sequence=900)))
                elif isinstance(pdu, UnbindResp):  # answered and half-closed: now the answer
                    writer.write(encode(SubmitSmResp(sequence=submits[-1], message_id="late-1")))
        writer.close()

    server = await asyncio.start_server(smsc, "127.0.0.1", 0)
    connector = await make_connector(server.sockets[0].getsockname()[1])
    assert (await connector.submit(part())).message_id == "late-1"
    server.close()


def _unreadable_answer(sequence: int) -> bytes:
    """A response PDU (its command_id has the response bit) that no SMPP version defines."""
    return struct.pack(">IIII", 16, 0x80000123, 0, sequence)


async def test_an_unreadable_answer_to_a_submit_leaves_it_waiting_for_a_readable_one(
    make_connector: MakeConnector,
) -> None:
    # It used to fail the submit at once, uncounted: resent a second later, for ever, while
    # the readable answer that followed it was dropped (its request was gone).
    def answer(pdu: SubmitSm, binds: int) -> bytes:
        readable = SubmitSmResp(sequence=pdu.sequence, message_id="m1")
        return _unreadable_answer(pdu.sequence) + encode(readable)

    server, _ = await _scripted_smsc(answer)
    connector = await make_connector(server.sockets[0].getsockname()[1])
    assert (await connector.submit(part())).message_id == "m1"
    server.close()


async def test_a_submit_answered_only_unreadably_is_unanswered_so_its_attempt_counts(
    make_connector: MakeConnector,
) -> None:
    server, _ = await _scripted_smsc(lambda pdu, binds: _unreadable_answer(pdu.sequence))
    connector = await make_connector(server.sockets[0].getsockname()[1], response_timeout=0.2)
    with pytest.raises(SubmitUnanswered):  # the SMSC may have it: not resent uncounted
        await connector.submit(part())
    server.close()


async def _scripted_smsc(
    answer: Callable[[SubmitSm, int], Pdu | bytes | None],
    bind_answer: Callable[[BindTransceiver, int], Pdu] | None = None,
) -> tuple[asyncio.Server, list[int]]:
    """A fake SMSC that binds anyone (or answers binds with ``bind_answer(pdu, binds so far)``)
    and answers each submit_sm with ``answer(pdu, binds so far)`` (bytes: written as they are;
    None: leaves it unanswered); the bind sequences are listed as they come."""
    binds: list[int] = []

    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pdus = PduReader()
        while data := await reader.read(4096):
            for pdu in pdus.feed(data):
                if isinstance(pdu, BindTransceiver):
                    binds.append(pdu.sequence)
                    bound = (
                        bind_answer(pdu, len(binds))
                        if bind_answer
                        else BindTransceiverResp(sequence=pdu.sequence)
                    )
                    writer.write(encode(bound))
                elif isinstance(pdu, SubmitSm) and (resp := answer(pdu, len(binds))):
                    writer.write(resp if isinstance(resp, bytes) else encode(resp))
                elif isinstance(pdu, Unbind):
                    writer.write(encode(UnbindResp(sequence=pdu.sequence)))
        writer.close()

    return await asyncio.start_server(smsc, "127.0.0.1", 0), binds


@pytest.mark.parametrize(
    ("timeout", "interval"),
    [(0.3, 0.5), (0.2, 30.0)],  # given up at its enquire_link, or when the late window ends
    ids=["keepalive", "late-window"],
)
async def test_parts_the_smscs_kernel_never_acknowledged_go_again_uncounted_and_only_once(
    make_connector: MakeConnector, timeout: float, interval: float
) -> None:
    # A path that eats data (an MTU black hole) counted an attempt for every part in the
    # window at each dead link: five dead links failed every queued message the SMSC never
    # saw. The peer here binds, then freezes: what fits in its small receive buffer its
    # kernel acknowledged (it may be the SMSC's: counted), the rest stayed in our queue. When
    # it comes back after we gave up, it must not read those (the abort resets: a closed
    # socket went on sending its queue, and the uncounted resends were second copies).
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    unfreeze = threading.Event()
    read_later: list[bytes] = []

    def frozen_then_reads() -> None:  # a thread: no event loop reads for it
        conn, _ = listener.accept()
        reader = PduReader()
        bind = reader.feed(conn.recv(4096))[0]
        conn.sendall(encode(BindTransceiverResp(sequence=bind.sequence)))
        unfreeze.wait(30)  # frozen: its kernel's buffer fills, then nothing more is taken
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                read_later.extend(
                    pdu.short_message for pdu in reader.feed(data) if isinstance(pdu, SubmitSm)
                )
        conn.close()

    frozen = threading.Thread(target=frozen_then_reads, daemon=True)
    frozen.start()
    # (a long enquire_link_interval counted them into a dead path before its keepalive)
    connector = await make_connector(
        listener.getsockname()[1], response_timeout=timeout, enquire_link_interval=interval
    )
    payloads = [b"%05d" % i + b"x" * 135 for i in range(100)]  # ~19 KB, the window's worth
    parts = [part(i + 1, payload=p) for i, p in enumerate(payloads)]
    outcomes = await asyncio.gather(*connector.submit_many(parts), return_exceptions=True)
    lates = [o.late for o in outcomes if isinstance(o, SubmitUnanswered)]
    assert len(lates) == len(parts), outcomes  # every one left our process
    settled = await asyncio.wait_for(asyncio.gather(*lates, return_exceptions=True), 10)
    never = {payloads[i] for i, s in enumerate(settled) if isinstance(s, SentIntoSilence)}
    counted = [s for s in settled if s is None]
    assert never and counted, settled  # some in its buffer, the rest never left
    assert not any(s.may_have_left for s in settled if isinstance(s, SentIntoSilence))
    unfreeze.set()  # it comes back after we gave up
    await asyncio.to_thread(frozen.join, 10)
    listener.close()
    assert read_later and not never & set(read_later)  # none it read goes again uncounted


@pytest.mark.parametrize("pause", [0.9, None], ids=["answers-late", "never-answers"])
async def test_a_submit_unanswered_on_a_link_that_still_answers(
    make_connector: MakeConnector, pause: float | None
) -> None:
    # An SMSC that pauses (its GC, its own database) for three response timeouts, then
    # answers: its answer is taken, the link kept (the diff review). One that answers its
    # enquire_links but never this submit: the late answer is None and the attempt counts
    # (an SMSC that may well have it).
    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pdus = PduReader()
        while data := await reader.read(4096):
            for pdu in pdus.feed(data):
                if isinstance(pdu, BindTransceiver):
                    writer.write(encode(BindTransceiverResp(sequence=pdu.sequence)))
                elif isinstance(pdu, SubmitSm) and pause is not None:
                    await asyncio.sleep(pause)  # the pause: a fault the peer injects
                    writer.write(encode(SubmitSmResp(sequence=pdu.sequence, message_id="m1")))
                elif isinstance(pdu, EnquireLink):
                    writer.write(encode(EnquireLinkResp(sequence=pdu.sequence)))
        writer.close()

    server = await asyncio.start_server(smsc, "127.0.0.1", 0)
    connector = await make_connector(server.sockets[0].getsockname()[1], response_timeout=0.3)
    with pytest.raises(SubmitUnanswered) as unanswered:
        await connector.submit(part())
    answer = await asyncio.wait_for(unanswered.value.late, 10)
    if pause is None:
        assert answer is None
    else:
        assert answer is not None and answer.message_id == "m1"
    server.close()


async def test_a_response_of_another_command_on_a_submits_number_is_not_its_answer(
    make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    # An enquire_link_resp on the submit's sequence number was taken as its answer
    # (ESME_RSYSERR): the part was sent again, and the SMSC had it twice.
    submits: list[int] = []

    def stray_then_right(pdu: SubmitSm, binds: int) -> bytes:
        submits.append(pdu.sequence)
        stray = encode(EnquireLinkResp(sequence=pdu.sequence))
        return stray + encode(SubmitSmResp(sequence=pdu.sequence, message_id="only-one"))

    server, _ = await _scripted_smsc(stray_then_right)
    port = server.sockets[0].getsockname()[1]
    connector = await make_connector(port)
    outcome = await connector.submit(part())
    assert (outcome.status, outcome.message_id) == (0, "only-one") and len(submits) == 1
    assert any(r.getMessage() == "smpp.response.stray" for r in caplog.records)
    server.close()


async def test_an_answer_to_no_request_is_dropped_and_said(
    make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    # A generic_nack on sequence 0 (the SMSC could not read something) was dropped unsaid.
    def nack_then_answer(pdu: SubmitSm, binds: int) -> bytes:
        nack = encode(GenericNack(sequence=0, status=CommandStatus.ESME_RINVCMDLEN))
        return nack + encode(SubmitSmResp(sequence=pdu.sequence, message_id="kept"))

    server, _ = await _scripted_smsc(nack_then_answer)
    connector = await make_connector(server.sockets[0].getsockname()[1])
    assert (await connector.submit(part())).message_id == "kept"
    [said] = [r for r in caplog.records if r.getMessage() == "smpp.response.unmatched"]
    assert (said.pdu, said.status, said.sequence) == ("GenericNack", "ESME_RINVCMDLEN", 0)  # type: ignore[attr-defined]
    server.close()


async def test_a_stray_response_on_a_late_submits_number_is_not_its_late_answer(
    make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    # Past its timeout a submit waits for a late answer; an enquire_link_resp on its number
    # was taken as that answer (ESME_RSYSERR): the part went again, the real answer dropped.
    writers: list[tuple[asyncio.StreamWriter, int]] = []  # each submit, unanswered in time

    async def smsc_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pdus = PduReader()
        while data := await reader.read(4096):
            for pdu in pdus.feed(data):
                if isinstance(pdu, BindTransceiver):
                    writer.write(encode(BindTransceiverResp(sequence=pdu.sequence)))
                elif isinstance(pdu, SubmitSm):
                    writers.append((writer, pdu.sequence))
                elif isinstance(pdu, Unbind):
                    writer.write(encode(UnbindResp(sequence=pdu.sequence)))
        writer.close()

    late_server = await asyncio.start_server(smsc_late, "127.0.0.1", 0)
    port = late_server.sockets[0].getsockname()[1]
    connector = await make_connector(port, response_timeout=0.2)
    with pytest.raises(SubmitUnanswered) as unanswered:
        await connector.submit(part())
    [(writer, sequence)] = writers
    writer.write(encode(EnquireLinkResp(sequence=sequence)))
    writer.write(encode(SubmitSmResp(sequence=sequence, message_id="real-id")))
    late = await asyncio.wait_for(unanswered.value.late, 5)
    assert late is not None and (late.status, late.message_id) == (0, "real-id")
    assert any(r.getMessage() == "smpp.response.stray" for r in caplog.records)
    late_server.close()


class _StoreAfterTheStop(Inbox):
    """A store whose write finishes when the test says (a commit slower than an unbind)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored = asyncio.Event()

    async def handle_many(self, inbounds: Sequence[InboundSm]) -> list[int]:
        await self.stored.wait()
        return await super().handle_many(inbounds)


async def test_a_delivery_that_comes_while_stopping_is_answered_try_later_not_stored_unanswered(
    make_connector: MakeConnector,
) -> None:
    # With submits waiting for their answers at SIGTERM, the SMSC sent a reply and then the
    # answers: the reply was stored, the link closed after the unbind, and its deliver_sm_resp
    # never went. The SMSC sent it again minutes later, and it was posted twice.
    inbox = _StoreAfterTheStop()
    seen: list[Pdu] = []
    submitted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def smsc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        pdus = PduReader()
        while data := await reader.read(4096):
            for pdu in pdus.feed(data):
                seen.append(pdu)
                if isinstance(pdu, BindTransceiver):
                    writer.write(encode(BindTransceiverResp(sequence=pdu.sequence)))
                elif isinstance(pdu, SubmitSm):
                    submitted.set()  # left unanswered until the stop has begun
                elif isinstance(pdu, Unbind):
                    writer.write(encode(UnbindResp(sequence=pdu.sequence)))
        writer.close()

    server = await asyncio.start_server(smsc, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connector = await make_connector(port, inbox)
    outcome = asyncio.ensure_future(connector.submit(part()))
    await asyncio.wait_for(submitted.wait(), 5)
    stopping = asyncio.ensure_future(connector.stop())
    await eventually(lambda: connector._stopping, what="the stop began")
    [submit] = [pdu for pdu in seen if isinstance(pdu, SubmitSm)]
    reply = DeliverSm(sequence=77, source_addr="33612345678", short_message=b"oui")
    writers[0].write(encode(reply) + encode(SubmitSmResp(sequence=submit.sequence, message_id="1")))
    await asyncio.wait_for(stopping, 10)
    inbox.stored.set()  # the store's commit, taking longer than the unbind
    assert (await outcome).message_id == "1"
    [answer] = [pdu for pdu in seen if isinstance(pdu, DeliverSmResp)]
    assert answer.sequence == 77 and answer.status == CommandStatus.ESME_RX_T_APPN
    assert inbox.calls == 0  # not stored: the SMSC delivers it again on the next bind
    server.close()


async def test_a_submit_on_a_link_being_dropped_never_left_and_is_not_unanswered(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator()
    connector = await make_connector(simulator)
    [link] = [link for link in connector._links.values() if link is not None]
    link.abort()  # an enquire_link timeout, a fatal PDU: the link is going
    with pytest.raises(TransientError) as raised:
        await connector.submit(part(7))
    assert not isinstance(raised.value, SubmitUnanswered)  # its attempt is given back
    await eventually(lambda: connector.is_up, what="a new bind")
    assert simulator.stats.submits == 0


@pytest.mark.parametrize("together", [False, True], ids=["submit", "submit_many"])
async def test_window_bounds_outstanding_submits(
    make_simulator: MakeSimulator, make_connector: MakeConnector, together: bool
) -> None:
    simulator = await make_simulator(resp_delay_ms=30)
    connector = await make_connector(simulator, window=4)
    parts = [part(n, payload=f"p{n}".encode()) for n in range(20)]
    waits = connector.submit_many(parts) if together else [connector.submit(p) for p in parts]
    outcomes = await asyncio.gather(*waits)
    assert all(o.status == 0 for o in outcomes)
    assert len({o.message_id for o in outcomes}) == 20
    assert simulator.stats.max_resp_pending == 4
    if together:  # in line for the window: they leave in the order given
        assert [r.short_message for r in simulator.received] == [p.payload for p in parts]


async def test_window_lets_responses_pipeline(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(resp_delay_ms=100)
    connector = await make_connector(simulator, window=50)
    started = time.monotonic()
    await asyncio.gather(*(connector.submit(part(n)) for n in range(50)))
    assert time.monotonic() - started < 4.0  # 50 sequential round trips would take 5 s
    assert simulator.stats.max_resp_pending == 50


@pytest.mark.parametrize(
    ("method", "reference"),
    [(ConcatMethod.UDH8, 0x34), (ConcatMethod.UDH16, 0x1234), (ConcatMethod.SAR, 0x1234)],
)
async def test_long_message_parts_are_framed_by_the_concat_method(
    simulator: Simulator, make_connector: MakeConnector, method: ConcatMethod, reference: int
) -> None:
    connector = await make_connector(simulator, concat_method=method)
    payloads = [b"A" * 153, b"B" * 153, b"C" * 10]
    for seq, payload in enumerate(payloads, 1):
        outcome = await connector.submit(
            part(seq, payload, ref=0x1234, total=3, seq=seq, data_coding=0)
        )
        assert outcome.status == 0
    for seq, record in enumerate(simulator.received, 1):
        info, body = split_concat(record.esm_class, record.short_message, record.tlvs)
        assert info == ConcatInfo(reference, 3, seq)
        assert body == payloads[seq - 1]


async def test_ucs2_and_gsm_data_coding(
    simulator: Simulator, make_connector: MakeConnector
) -> None:
    connector = await make_connector(simulator, gsm_data_coding=3)
    await connector.submit(part(1, "é€".encode("utf-16-be"), data_coding=8))
    await connector.submit(part(2, b"plain", data_coding=0))
    assert [r.data_coding for r in simulator.received] == [8, 3]


async def test_receipt_before_resp_is_delivered_and_matches_the_id_later(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(receipt_before_resp=True)
    known_ids: set[str] = set()
    early: list[bool] = []

    class Recorder(Inbox):
        async def __call__(self, inbound):  # type: ignore[no-untyped-def]
            receipt = parse_receipt(inbound.short_message.decode())
            assert receipt is not None
            early.append(not set(carrier_id_candidates(receipt.id)) & known_ids)
            return await super().__call__(inbound)

    inbox = Recorder()
    connector = await make_connector(simulator, inbox)
    for n in range(5):
        outcome = await connector.submit(part(n))
        assert outcome.message_id
        known_ids.add(normalise_carrier_id(outcome.message_id))
    await eventually(lambda: len(inbox.receipts) == 5)
    assert early == [True] * 5  # every receipt came before its submit_sm_resp


async def test_hex_submit_id_and_decimal_receipt_id_still_match(
    make_simulator: MakeSimulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    simulator = await make_simulator(id_style="hex", receipt_id_style="decimal")
    connector = await make_connector(simulator, inbox)
    outcome = await connector.submit(part())
    await eventually(lambda: len(inbox.receipts) == 1)
    receipt = parse_receipt(inbox.receipts[0].short_message.decode())
    assert receipt is not None and outcome.message_id is not None
    assert receipt.id != outcome.message_id  # the trap
    assert normalise_carrier_id(outcome.message_id) in carrier_id_candidates(receipt.id)


@pytest.mark.parametrize(
    ("id_style", "receipt_id_style", "form"),
    [("hex", "decimal", "decimal"), ("decimal", "hex", "hex"), ("decimal", None, "same")],
)
async def test_a_connector_left_at_auto_learns_how_its_smsc_writes_receipt_ids(
    make_simulator: MakeSimulator,
    make_connector: MakeConnector,
    inbox: Inbox,
    caplog: pytest.LogCaptureFixture,
    id_style: str,
    receipt_id_style: str | None,
    form: str,
) -> None:
    # At auto every reading of an id is a key, so a receipt that overtakes its resp can be
    # taken by a waiting part whose id is its other reading; once learnt, it has one key.
    caplog.set_level(logging.INFO)
    simulator = await make_simulator(id_style=id_style, receipt_id_style=receipt_id_style)
    connector = await make_connector(simulator, inbox)
    count = LEARN_AFTER * 2
    outcomes = await asyncio.gather(*(connector.submit(part(n)) for n in range(count)))
    await eventually(lambda: len(inbox.receipts) == count)
    reads = [read_receipt(sm, 0.0) for sm in inbox.receipts]
    assert connector.receipt_ids.form == "auto"  # their votes wait for later resps
    more = VOTE_AFTER_RESPS + count
    outcomes += await asyncio.gather(*(connector.submit(part(n)) for n in range(more)))
    await eventually(lambda: len(inbox.receipts) == count + more)
    reads = [read_receipt(sm, 0.0) for sm in inbox.receipts]
    assert connector.receipt_ids.form == form
    assert any(r.getMessage().startswith("smpp.receipt.id_form_learnt") for r in caplog.records)
    last = reads[-1]
    assert last is not None and len(last.candidate_keys) == 1
    assert last.candidate_keys[0] in {normalise_carrier_id(o.message_id or "") for o in outcomes}


async def test_rate_cap_below_the_smsc_throttle_slows_without_errors(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(throttle_per_second=200)
    connector = await make_connector(simulator, max_per_second=100)
    started = time.monotonic()
    outcomes = await asyncio.gather(*(connector.submit(part(n)) for n in range(60)))
    elapsed = time.monotonic() - started
    assert [o.status for o in outcomes] == [0] * 60
    assert simulator.stats.throttled == 0
    assert elapsed >= 0.5  # 60 at 100/s with a burst of 5


async def test_a_stalled_loop_does_not_send_a_rate_caps_booked_slots_at_once(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    # The loop stalls for 0.3 s mid-burst (a busy host, a long batch): the parts waiting for
    # their turn of our 100/s cap must not all leave when it ends, or the SMSC (200/s, a
    # burst of 20) refuses them; booked ahead, 30 left at once.
    simulator = await make_simulator(throttle_per_second=200)
    connector = await make_connector(simulator, max_per_second=100)
    asyncio.get_running_loop().call_later(0.1, time.sleep, 0.3)
    outcomes = await asyncio.gather(*(connector.submit(part(n)) for n in range(60)))
    assert [o.status for o in outcomes] == [0] * 60
    assert simulator.stats.throttled == 0


async def test_a_stop_right_after_paced_parts_were_handed_over_answers_them_at_once(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    # Their turn-waiting tasks had not run a step when stop() cancelled them: their outcomes
    # were never answered (a dispatcher's stop waited its whole grace) and slots leaked.
    simulator = await make_simulator()
    connector = await make_connector(simulator, max_per_second=1)
    outcomes = connector.submit_many([part(n) for n in range(3)])
    await connector.stop()
    done = await asyncio.wait_for(asyncio.gather(*outcomes, return_exceptions=True), 1)
    assert all(isinstance(o, TransientError) and "stopping" in str(o) for o in done), done
    assert simulator.stats.submits == 0


async def test_smsc_throttling_comes_back_as_a_status_not_an_error(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(throttle_per_second=10)
    connector = await make_connector(simulator)
    outcomes = await asyncio.gather(*(connector.submit(part(n)) for n in range(30)))
    statuses = {o.status for o in outcomes}
    assert statuses == {0, CommandStatus.ESME_RTHROTTLED}
    assert all(o.message_id is None for o in outcomes if o.status)


async def test_a_burst_waiting_for_the_window_follows_the_pace_learnt_meanwhile(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    """Parts queued before the SMSC first says "slow down" wait for the pace it teaches, as
    one sent after would: they are not all sent at the window's speed into its refusals."""
    simulator = await make_simulator(throttle_per_second=100)
    connector = await make_connector(simulator, window=10)
    outcomes = await asyncio.gather(*connector.submit_many([part(n) for n in range(300)]))
    throttled = [o for o in outcomes if o.status == CommandStatus.ESME_RTHROTTLED]
    assert len(throttled) + sum(o.status == 0 for o in outcomes) == 300
    assert len(throttled) <= 60, f"{len(throttled)} of 300 refused: the pace was not followed"


async def test_parts_waiting_for_their_turn_of_a_rate_cap_are_refused_at_stop(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator()
    connector = await make_connector(simulator, max_per_second=1)
    outcomes = connector.submit_many([part(n, payload=f"p{n}".encode()) for n in range(4)])
    assert (await outcomes[0]).status == 0  # the cap's first token: at once
    await connector.stop()  # the others wait seconds for theirs: stop() does not
    assert all(waiting.done() for waiting in outcomes[1:])
    for waiting in outcomes[1:]:
        with pytest.raises(TransientError, match="stopping"):
            await waiting
    assert [r.short_message for r in simulator.received] == [b"p0"]


async def test_a_part_given_up_while_it_waits_for_its_turn_never_leaves(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator()
    connector = await make_connector(simulator, max_per_second=20, window=5)
    first, given_up, third = connector.submit_many(
        [part(n, payload=f"p{n}".encode()) for n in range(3)]
    )
    assert (await first).status == 0  # the cap's first token: at once
    given_up.cancel()  # the others hold their slots, each waiting for its token
    assert (await third).status == 0
    assert [r.short_message for r in simulator.received] == [b"p0", b"p2"]
    assert connector._window.free == 5  # every slot came back


async def test_rejected_destination_is_a_status(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(reject_rate=1.0)
    connector = await make_connector(simulator)
    outcome = await connector.submit(part())
    assert (outcome.status, outcome.message_id) == (CommandStatus.ESME_RINVDSTADR, None)


async def test_dropped_connection_fails_outstanding_submits_then_reconnects(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(drop_after=5, resp_delay_ms=50)
    connector = await make_connector(simulator, window=10)
    results = await asyncio.gather(
        *(connector.submit(part(n)) for n in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, TransientError) for r in results)
    # The ones that were written may be at the SMSC: unanswered, not merely failed (so their
    # new attempt counts, and an SMSC that drops every link cannot make endless copies).
    unanswered = [r for r in results if isinstance(r, SubmitUnanswered)]
    assert unanswered and all(r.late.done() and r.late.result() is None for r in unanswered)
    assert simulator.stats.dropped_connections == 1
    await eventually(lambda: connector.is_up, what="reconnect")
    outcome = await connector.submit(part(99))
    assert outcome.status == 0


async def test_response_timeout_raises_transient(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(resp_delay_ms=3000)
    connector = await make_connector(simulator, response_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(SubmitUnanswered, match="SUBMIT_SM_resp in time") as raised:
        await connector.submit(part())
    assert time.monotonic() - started < 2.5  # well before the 3 s answer
    assert isinstance(raised.value, TransientError)
    # The late answer is waited for six timeouts (1.2 s), not for the 3 s it takes.
    assert await asyncio.wait_for(raised.value.late, 2.5) is None
    assert time.monotonic() - started < 2.5


async def test_an_answer_read_right_after_the_timeout_is_not_lost(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    # The resp is read in the loop turn after the timeout fired, before the submitter wakes:
    # it must still reach the submitter as the late answer.
    simulator = await make_simulator(resp_delay_ms=3000)
    connector = await make_connector(simulator, response_timeout=0.2)
    [link] = [link for link in connector._links.values() if link is not None]
    expire = link.session.expire

    def expire_then_answer(now: float) -> list[tuple[int, Outstanding]]:
        expired = expire(now)
        for sequence, _ in expired:
            resp = SubmitSmResp(sequence=sequence, message_id="M1")
            link.loop.call_soon(link._on_response, resp)
        return expired

    link.session.expire = expire_then_answer  # type: ignore[method-assign]
    with pytest.raises(SubmitUnanswered) as raised:
        await connector.submit(part())
    late = await asyncio.wait_for(raised.value.late, 1.0)
    assert late is not None and late.message_id == "M1"


async def test_an_unanswered_submit_keeps_its_window_slot_until_its_late_answer(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    # Timed out is not gone: the SMSC still counts it in its window, so must we.
    simulator = await make_simulator(resp_delay_ms=700)
    connector = await make_connector(simulator, response_timeout=0.2, window=1)
    for n in range(3):
        with pytest.raises(SubmitUnanswered):
            await connector.submit(part(n + 1))
    assert simulator.stats.max_resp_pending == 1


async def test_an_answer_after_the_timeout_is_still_passed_on(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(resp_delay_ms=600)
    connector = await make_connector(simulator, response_timeout=0.2)
    with pytest.raises(SubmitUnanswered) as raised:
        await connector.submit(part())
    late = await asyncio.wait_for(raised.value.late, 2.0)
    assert late is not None and late.status == 0
    assert late.message_id == simulator.received[-1].message_id
    assert connector.is_up  # a slow answer is not a broken link


async def test_a_lost_link_gives_up_on_late_answers(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(resp_delay_ms=3000, drop_after=2)
    connector = await make_connector(simulator, response_timeout=0.2)
    with pytest.raises(SubmitUnanswered) as raised:
        await connector.submit(part())
    with pytest.raises(TransientError, match="lost"):
        await connector.submit(part(2))  # the SMSC drops the connection on this one
    # Answers come on the connection that took the submit or never: no waiting 1.2 s.
    assert await asyncio.wait_for(raised.value.late, 0.5) is None


async def test_wrong_password_is_refused_and_tried_again_minutes_later_not_seconds(
    make_simulator: MakeSimulator,
    make_connector: MakeConnector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # At the reconnect pace (0.5 s doubling to 30 s) a wrong password made 120 failed logins
    # an hour: carriers lock an account for fewer.
    simulator = await make_simulator(system_id="esme", password="right")
    caplog.set_level(logging.ERROR, logger="smsrelay.carrier.smpp")
    connector = await make_connector(
        simulator, password="wrong", wait=False, reconnect_min=0.05, reconnect_max=0.1
    )

    # (the server counts its refusal before the connector reads it: wait for the line)
    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "smpp.bind.refused"]

    await eventually(lambda: bool(refusals()), what="the refusal read")
    [line] = refusals()
    assert simulator.server.refused_binds == 1
    assert line.__dict__["next_try_s"] == smpp_client.CREDENTIALS_RETRY_S == 300.0
    assert not connector.is_up and simulator.stats.binds == 0
    with pytest.raises(TimeoutError):  # the reconnect pace (0.1 s) would have tried again
        async with asyncio.timeout(0.5):
            while simulator.server.refused_binds == 1:
                await asyncio.sleep(POLL_INTERVAL)
    await connector.stop()


async def test_a_refused_password_is_tried_again_after_the_credentials_wait(
    make_simulator: MakeSimulator, make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smpp_client, "CREDENTIALS_RETRY_S", 0.05)
    simulator = await make_simulator(system_id="esme", password="right")
    await make_connector(simulator, password="wrong", wait=False, reconnect_min=0.05)
    await eventually(lambda: simulator.server.refused_binds >= 3, what="three refusals")


async def test_handler_failure_answers_rx_t_appn_and_the_smsc_resends(
    make_simulator: MakeSimulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    simulator = await make_simulator(redeliver_delay_ms=20, delivery_rate=0.5)
    inbox.statuses = [RuntimeError("database is down"), CommandStatus.ESME_RX_T_APPN]
    connector = await make_connector(simulator, inbox)
    await connector.submit(part())
    await eventually(lambda: len(inbox.receipts) == 1, what="third delivery")
    assert inbox.calls == 3
    assert len({m.short_message for m in inbox.seen}) == 1  # the same receipt each time
    assert simulator.stats.receipts_refused == 2 and simulator.stats.receipts_acked == 1


async def _receipt_refused(
    make_simulator: MakeSimulator,
    make_connector: MakeConnector,
    inbox: Inbox,
    refusals: int,
    **options: float,
) -> Simulator:
    """A simulator whose one receipt the gateway refuses (ESME_RX_T_APPN) ``refusals`` times."""
    simulator = await make_simulator(delivery_rate=1.0, **options)
    inbox.statuses = [CommandStatus.ESME_RX_T_APPN] * refusals
    connector = await make_connector(simulator, inbox)
    await connector.submit(part())
    return simulator


async def test_a_receipt_refused_through_an_outage_is_sent_until_it_is_taken(
    make_simulator: MakeSimulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    # The gateway refuses receipts while its database is out: the simulator, like a real
    # SMSC, keeps sending each one with growing waits; it gave up after five.
    simulator = await _receipt_refused(
        make_simulator, make_connector, inbox, 8, redeliver_delay_ms=1
    )
    await eventually(lambda: len(inbox.receipts) == 1, what="the ninth delivery")
    assert inbox.calls == 9 and len({m.short_message for m in inbox.seen}) == 1
    assert (simulator.stats.receipts_refused, simulator.stats.receipts_given_up) == (8, 0)


def test_a_refused_receipts_wait_doubles_to_a_minute_and_never_spins_or_overflows() -> None:
    waits = [simulator_module._redeliver_delay(1000, attempt) for attempt in range(10)]
    assert waits[:3] == [1.0, 2.0, 4.0] and waits[-1] == 60.0
    assert simulator_module._redeliver_delay(0, 0) > 0  # 0 ms would resend in a busy loop
    assert simulator_module._redeliver_delay(0, 5_000) == 60.0  # no 2**5000: an overflow


async def test_a_receipt_refused_for_longer_than_the_smsc_retries_is_given_up(
    make_simulator: MakeSimulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    simulator = await _receipt_refused(
        make_simulator, make_connector, inbox, 100, redeliver_delay_ms=20, redeliver_for_s=0.1
    )
    await eventually(lambda: simulator.stats.receipts_given_up == 1, what="given up")
    # Waits of 20 then 40 ms fit in the 100 ms; the next (80 ms) cannot, however late the
    # timers fire (a loaded machine may give up one try sooner).
    assert simulator.stats.receipts_refused == inbox.calls in (2, 3)
    assert inbox.receipts == []


async def test_deliver_sm_is_acknowledged_only_after_the_handler_returns(
    simulator: Simulator, make_connector: MakeConnector
) -> None:
    release = asyncio.Event()

    async def slow(_: object) -> int:
        await release.wait()
        return 0

    connector = SmppConnector(
        "slow", SmppLinkConfig("127.0.0.1", simulator.port, "a", "b"), Handler(slow)
    )
    await connector.start()
    try:
        await eventually(lambda: connector.is_up)
        await connector.submit(part())
        await eventually(lambda: simulator.stats.receipts_sent == 1)
        await asyncio.sleep(0)  # give a premature ack every chance to be sent
        assert simulator.stats.receipts_acked == 0
        release.set()
        await eventually(lambda: simulator.stats.receipts_acked == 1)
    finally:
        release.set()
        await connector.stop()


async def test_replies_arrive_concatenated(
    simulator: Simulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    await make_connector(simulator, inbox)
    text = "Réponse: " + "ça marche 👍 " * 8  # UCS-2, longer than 70 units
    statuses = await simulator.inject_reply(DESTINATION, SOURCE, text)
    assert statuses == [0, 0]
    parts = [split_concat(m.esm_class, m.short_message, m.tlvs) for m in inbox.items]
    assert [info.seq for info, _ in parts if info] == [1, 2]
    assert all(m.data_coding == 8 and m.source == DESTINATION for m in inbox.items)
    assert b"".join(body for _, body in parts).decode("utf-16-be") == text


async def test_short_gsm_reply(
    simulator: Simulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    await make_connector(simulator, inbox)
    assert await simulator.inject_reply(DESTINATION, SOURCE, "STOP") == [0]
    [reply] = inbox.items
    assert (reply.esm_class, reply.data_coding, reply.short_message) == (0, 0, b"STOP")


async def test_transmitter_and_receiver_binds(
    simulator: Simulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    connector = await make_connector(simulator, inbox, bind_mode="transmitter+receiver")
    await eventually(lambda: len(simulator.server.receivers()) == 1, what="receiver bind")
    assert len(simulator.server.links) == 2
    outcome = await connector.submit(part())
    assert outcome.status == 0
    await eventually(lambda: len(inbox.receipts) == 1)


async def test_idle_link_sends_enquire_link(
    simulator: Simulator, make_connector: MakeConnector
) -> None:
    connector = await make_connector(simulator, enquire_link_interval=0.05)
    [server_side] = simulator.server.links
    await eventually(lambda: server_side.enquire_links_received >= 3, what="enquire_links")
    assert connector.is_up


async def test_stop_unbinds(simulator: Simulator, make_connector: MakeConnector) -> None:
    connector = await make_connector(simulator)
    await connector.submit(part())
    await connector.stop()
    assert not connector.is_up
    await eventually(lambda: not simulator.server.links, what="server side closed")


async def test_control_api(
    simulator: Simulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    connector = await make_connector(simulator, inbox)
    await connector.submit(part(payload=b"first"))
    await connector.submit(part(payload=b"hi"))
    base = f"http://127.0.0.1:{simulator.control_port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/reply", json={"from": DESTINATION, "to": SOURCE, "text": "OK"}
        ) as r:
            assert r.status == 200 and (await r.json())["statuses"] == [0]
        json_type = {"Content-Type": "application/json"}
        async with http.post(f"{base}/reply", data=b"nope", headers=json_type) as r:
            assert r.status == 400
        async with http.get(f"{base}/submits") as r:
            assert [s["short_message"] for s in await r.json()] == [b"first".hex(), b"hi".hex()]
        async with http.get(f"{base}/submits", params={"limit": "1"}) as r:
            [submit] = await r.json()  # the last one
            assert submit["short_message"] == b"hi".hex() and submit["destination"] == DESTINATION
        async with http.get(f"{base}/submits", params={"limit": "0"}) as r:
            assert await r.json() == []
        for bad in ("-1", "²"):  # "²".isdigit(), and int() refuses it
            async with http.get(f"{base}/submits", params={"limit": bad}) as r:
                assert r.status == 400
        async with http.get(f"{base}/stats") as r:
            stats = await r.json()
            assert stats["submits"] == 2 and stats["mo_acked"] == 1
    assert [m.short_message for m in inbox.items if not m.esm_class & 0x04] == [b"OK"]


async def test_the_simulator_keeps_only_its_last_records(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(max_records=4)
    connector = await make_connector(simulator)
    for n in range(10):
        await connector.submit(part(payload=b"%d" % n))
    kept = [record.short_message for record in simulator.received]
    assert 2 <= len(kept) <= 4 and kept == [b"%d" % n for n in range(10 - len(kept), 10)]
    assert simulator.stats.submits == 10


async def test_many_concurrent_submits_all_answered(
    simulator: Simulator, make_connector: MakeConnector
) -> None:
    """3,000 callers through a window of 100: every one answered, none lost (speed is bench/)."""
    connector = await make_connector(simulator, window=100)
    outcomes = await asyncio.gather(*(connector.submit(part(n)) for n in range(3000)))
    assert all(o.status == 0 for o in outcomes)
    assert len({o.message_id for o in outcomes}) == 3000 == len(simulator.received)


def test_window_slots_go_in_line_and_past_a_waiter_that_gives_up() -> None:
    slots = WindowSlots(1)
    order: list[int] = []

    def waiter(n: int, keeps: bool = True) -> Callable[[], bool]:
        def use() -> bool:
            order.append(n)
            return keeps

        return use

    slots.take(waiter(1))  # the free slot, at once
    slots.take(waiter(2, keeps=False))  # given up by the time its turn comes
    slots.take(waiter(3))
    slots.take(waiter(4))
    assert order == [1] and slots.free == 0
    slots.release()
    assert order == [1, 2, 3]  # 2 did not keep it: it went on to 3
    slots.release()
    slots.release()
    assert order == [1, 2, 3, 4] and slots.free == 1  # the last one came back
    slots.take(waiter(5, keeps=False))
    assert slots.free == 1  # taken and given straight back


async def test_cancelled_submits_keep_their_window_slot_until_answered(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(resp_delay_ms=150)
    connector = await make_connector(simulator, window=2)
    first = [asyncio.create_task(connector.submit(part(n))) for n in range(2)]
    await eventually(lambda: len(simulator.received) == 2)
    for task in first:
        task.cancel()
    outcomes = await asyncio.gather(*(connector.submit(part(n)) for n in range(2, 6)))
    assert [o.status for o in outcomes] == [0] * 4
    assert simulator.stats.max_resp_pending == 2


async def test_smsc_respects_its_deliver_window_with_a_slow_esme(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(window=2)
    release = asyncio.Event()
    active, peak, done = 0, 0, 0

    async def slow(_: object) -> int:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1
        done += 1
        return 0

    connector = SmppConnector(
        "slow", SmppLinkConfig("127.0.0.1", simulator.port, "a", "b"), Handler(slow)
    )
    await connector.start()
    try:
        await eventually(lambda: connector.is_up)
        await asyncio.gather(*(connector.submit(part(n)) for n in range(6)))
        await eventually(lambda: active == 2, what="two receipts in the handler")
        release.set()
        await eventually(lambda: done == 6, what="all receipts")
        assert peak == 2
        await eventually(lambda: simulator.stats.receipts_acked == 6)
    finally:
        release.set()
        await connector.stop()


@pytest.mark.parametrize(
    ("coding", "expected"), [(0, b"Caf\x05 \x1be"), (1, b"Caf? ?"), (3, b"Caf\xe9 ?")]
)
async def test_gsm_text_is_reencoded_for_an_smsc_that_wants_ia5_or_latin1(
    simulator: Simulator,
    make_connector: MakeConnector,
    coding: int,
    expected: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The accept path sends such a text as UCS-2; one queued before the connector's alphabet
    # changed still goes, with "?", and the log says so.
    from smsrelay.domain.text import encode_gsm7

    connector = await make_connector(simulator, gsm_data_coding=coding)
    await connector.submit(part(payload=encode_gsm7("Café €")))
    [record] = simulator.received
    assert (record.data_coding, record.short_message) == (coding, expected)
    replaced = [r for r in caplog.records if r.getMessage() == "smpp.text.replaced"]
    assert len(replaced) == (0 if coding == 0 else 1)


async def test_late_answers_are_awaited_within_the_early_receipt_window() -> None:
    # A receipt may come before the late resp: the store keeps it EARLY_RECEIPT_WINDOW, so a
    # late answer cannot come later than that after its submit, whatever the timeout.
    for timeout in (10.0, 30.0, 60.0, 150.0):
        link = SmppLink(
            Role.ESME,
            window=1,
            response_timeout=timeout,
            enquire_link_interval=30.0,
            logger=logging.getLogger("test"),
        )
        assert timeout + link.late_window <= max(timeout, LATE_ANSWER_LIMIT)
    assert LATE_ANSWER_LIMIT < EARLY_RECEIPT_WINDOW


async def test_a_part_given_up_while_it_waits_for_a_slot_never_leaves(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(resp_delay_ms=100)
    connector = await make_connector(simulator, window=1)
    first, given_up, third = connector.submit_many(
        [part(n, payload=f"p{n}".encode()) for n in range(3)]
    )
    given_up.cancel()  # the first holds the only slot: this one has not left
    assert (await first).status == 0 and (await third).status == 0
    assert [r.short_message for r in simulator.received] == [b"p0", b"p2"]


async def test_parts_waiting_for_a_slot_when_the_connector_stops_are_refused_not_sent(
    make_simulator: MakeSimulator, make_connector: MakeConnector
) -> None:
    simulator = await make_simulator(resp_delay_ms=100)
    connector = await make_connector(simulator, window=1)
    first, waiting = connector.submit_many([part(n, payload=f"p{n}".encode()) for n in range(2)])
    await eventually(lambda: len(simulator.received) == 1, what="the first part sent")
    await connector.stop()
    assert (await first).status == 0  # answered during the unbind's grace
    with pytest.raises(TransientError, match="stopping"):
        await waiting
    assert [r.short_message for r in simulator.received] == [b"p0"]


async def test_a_bind_timeout_after_binds_that_worked_is_not_blamed_on_tls(
    make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    # A hung SMSC (its kernel takes the connection, nobody answers the bind) was logged as
    # "if this SMSC speaks TLS, its URL is smpps://", on a URL that had worked all along.
    connections = 0

    async def bound_once_then_hung(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        nonlocal connections
        connections += 1
        first = connections == 1
        pdus = PduReader()
        while data := await reader.read(4096):
            for pdu in pdus.feed(data):
                if isinstance(pdu, BindTransceiver) and first:
                    writer.write(encode(BindTransceiverResp(sequence=pdu.sequence)))
                    await writer.drain()
                    writer.close()  # the link drops; the SMSC then hangs
                    return
        writer.close()

    server = await asyncio.start_server(bound_once_then_hung, "127.0.0.1", 0)
    await make_connector(server.sockets[0].getsockname()[1], response_timeout=0.2, wait=False)

    def failed_binds() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "smpp.bind.failed"]

    await eventually(failed_binds, what="a bind timeout")
    assert "smpps://" not in failed_binds()[0].__dict__["error"]
    server.close()


async def test_a_healthy_links_keepalive_answers_are_not_unmatched_responses(
    make_simulator: MakeSimulator,
    make_connector: MakeConnector,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Our enquire_link is sent untracked: each answer was logged as an unmatched response,
    # a warning at every keepalive of every healthy link (the diff review).
    answers: list[int] = []
    real = SmppLink._on_response

    def counting(self: SmppLink, pdu: Pdu) -> None:
        if isinstance(pdu, EnquireLinkResp):
            answers.append(pdu.sequence)
        real(self, pdu)

    monkeypatch.setattr(SmppLink, "_on_response", counting)
    simulator = await make_simulator()
    await make_connector(simulator, enquire_link_interval=0.05)
    await eventually(lambda: len(answers) >= 3, what="three keepalives answered")
    assert "smpp.response.unmatched" not in [r.getMessage() for r in caplog.records]
