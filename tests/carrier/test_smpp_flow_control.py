"""Flow control on what the peer pipelines: an SMSC flooding deliver_sm (or an ESME flooding
submit_sm) is read no further than the link's mark, over loopback, and everything is answered."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from collections.abc import Iterable, Sequence

import pytest

from smsrelay.carrier import smpp_client, smpp_link
from smsrelay.carrier.connector import InboundSm
from smsrelay.carrier.smpp_client import SmppConnector
from smsrelay.carrier.smpp_link import INBOUND_HIGH_WATER, INBOUND_LOW_WATER, SmppLink
from smsrelay.smpp.codec import PduReader, encode
from smsrelay.smpp.pdu import (
    BindTransceiver,
    BindTransceiverResp,
    CommandStatus,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
)

from .conftest import Inbox, MakeConnector, MakeSimulator, eventually, part

FLOOD = 5_000  # five times the mark, pipelined without waiting for one answer


class _GatedStore(Inbox):
    """A store whose writes wait for ``gate`` (a slow disk); counts what it holds at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.holding = 0
        self.most_held = 0

    async def handle_many(self, inbounds: Sequence[InboundSm]) -> list[int]:
        self.holding += len(inbounds)
        self.most_held = max(self.most_held, self.holding)
        await self.gate.wait()
        self.holding -= len(inbounds)
        return await super().handle_many(inbounds)


class _WedgedStore(Inbox):
    """A store wedged until ``back`` is set (a commit that hangs): a write waits meanwhile,
    then is refused unrun, as the engine refuses the writes queued behind such a commit;
    ``refusal`` says so meanwhile, as the engine's health does."""

    def __init__(self) -> None:
        super().__init__()
        self.back = asyncio.Event()

    def refusal(self) -> str | None:
        return None if self.back.is_set() else "commits stalled"

    async def handle_many(self, inbounds: Sequence[InboundSm]) -> list[int]:
        if not self.back.is_set():
            await self.back.wait()
            return [CommandStatus.ESME_RX_T_APPN] * len(inbounds)  # nothing of it stored
        return await super().handle_many(inbounds)


class _FloodingSmsc:
    """Binds anyone, then writes ``count`` deliver_sm in one go (no window); answers
    enquire_link, submit_sm and unbind at once, and keeps each deliver_sm_resp it reads.
    ``on_enquire_link``: the flood goes on the first bind's first enquire_link, ahead of its
    answer. ``resend``: each later bind gets again, at once, every deliver_sm not answered
    ESME_ROK yet (what a real SMSC keeps). ``tls``: it speaks smpps://. ``deaf_after_unbind``:
    once it has answered an unbind it reads nothing more until ``hear`` is set (its TLS layer
    too: our close_notify is not answered, so our TLS shutdown waits)."""

    def __init__(
        self,
        count: int,
        *,
        on_enquire_link: bool = False,
        tls: ssl.SSLContext | None = None,
        deaf_after_unbind: bool = False,
        resend: bool = False,
    ) -> None:
        self.count = count
        self.resend = resend
        self.on_enquire_link = on_enquire_link
        self.tls = tls
        self.deaf_after_unbind = deaf_after_unbind
        self.hear = asyncio.Event()
        self.binds = 0
        self.unbinds = 0
        self.submits = 0
        self.flooded_at: float | None = None  # the loop's time
        self.answers: dict[int, list[int]] = {}  # deliver_sm sequence -> the statuses it got
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return int(self.server.sockets[0].getsockname()[1])

    def _flood(self, numbers: Iterable[int]) -> bytes:
        return b"".join(
            encode(DeliverSm(sequence=n, source_addr=f"336{n:08d}", short_message=b"mo %d" % n))
            for n in numbers
        )

    def not_taken(self) -> list[int]:
        taken = CommandStatus.ESME_ROK
        return [n for n in range(1, self.count + 1) if taken not in self.answers.get(n, ())]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pdus = PduReader()
        while data := await reader.read(65536):
            for pdu in pdus.feed(data):
                if isinstance(pdu, BindTransceiver):
                    self.binds += 1
                    writer.write(encode(BindTransceiverResp(sequence=pdu.sequence)))
                    if self.binds == 1 and not self.on_enquire_link:
                        self._write_flood(writer)
                    elif self.binds > 1 and self.resend:
                        writer.write(self._flood(self.not_taken()))
                elif isinstance(pdu, DeliverSmResp):
                    self.answers.setdefault(pdu.sequence, []).append(pdu.status)
                elif isinstance(pdu, EnquireLink):
                    if self.binds == 1 and self.on_enquire_link and self.flooded_at is None:
                        self._write_flood(writer)
                    writer.write(encode(EnquireLinkResp(sequence=pdu.sequence)))
                elif isinstance(pdu, SubmitSm):
                    self.submits += 1
                    resp = SubmitSmResp(sequence=pdu.sequence, message_id=f"id{self.submits}")
                    writer.write(encode(resp))
                elif isinstance(pdu, Unbind):
                    self.unbinds += 1
                    writer.write(encode(UnbindResp(sequence=pdu.sequence)))
                    if self.deaf_after_unbind:
                        await self._deaf(writer)
        writer.close()

    async def _deaf(self, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()  # over TLS, what comes stays unread in its BIO
        await self.hear.wait()
        writer.transport.resume_reading()

    def _write_flood(self, writer: asyncio.StreamWriter) -> None:
        writer.write(self._flood(range(1, self.count + 1)))
        self.flooded_at = asyncio.get_running_loop().time()


def _link(connector: SmppConnector) -> SmppLink:
    link = connector._links["transceiver"]
    assert link is not None
    return link


def _reading(link: SmppLink) -> bool:
    return link.transport is not None and link.transport.is_reading()


async def test_an_smsc_flooding_deliver_sm_is_read_no_further_than_the_mark(
    make_connector: MakeConnector,
) -> None:
    # An SMSC pipelining 300,000 deliver_sm without a window grew the gateway to 1.3 GB and
    # stalled its API: every PDU it sent was read, decoded and held until stored.
    store, smsc = _GatedStore(), _FloodingSmsc(FLOOD)
    connector = await make_connector(await smsc.start(), store)
    link = _link(connector)
    await eventually(lambda: not _reading(link), what="reading paused at the mark")
    await eventually(lambda: store.holding == INBOUND_HIGH_WATER, what="the mark's worth handed")
    assert link.unanswered == INBOUND_HIGH_WATER  # the rest waits in the socket, undecoded

    store.gate.set()  # the store catches up: the link reads on, and the SMSC sends nothing new
    await eventually(lambda: len(smsc.answers) == FLOOD, what="every deliver_sm answered")
    assert all(statuses == [CommandStatus.ESME_ROK] for statuses in smsc.answers.values())
    assert sorted(item.short_message for item in store.items) == sorted(
        b"mo %d" % n for n in range(1, FLOOD + 1)
    )  # each stored once
    assert store.most_held <= INBOUND_HIGH_WATER  # 5,000 without flow control
    assert link.unanswered_most == INBOUND_HIGH_WATER
    assert link.reading_pauses >= 2 and _reading(link)  # it read on each time, and still does
    assert smsc.binds == 1  # a well-behaved link all along: no keepalive given up
    assert smsc.server is not None
    smsc.server.close()


async def test_answers_waiting_behind_a_paused_flood_are_in_time(
    make_connector: MakeConnector,
) -> None:
    # Paused at the mark, the link read nothing: the answers to its enquire_link and to a
    # submit, which the SMSC wrote at once behind its flood, waited unread, their deadlines
    # ran out, and the link was given up although the SMSC had answered in time (the submit
    # then unanswered, maybe sent twice; the flood sent again on the next bind).
    timeout = 0.5
    store, smsc = _GatedStore(), _FloodingSmsc(3 * INBOUND_HIGH_WATER, on_enquire_link=True)
    port = await smsc.start()
    connector = await make_connector(
        port, store, enquire_link_interval=0.2, response_timeout=timeout
    )
    link = _link(connector)
    await eventually(lambda: not _reading(link), what="reading paused behind the flood")
    submitted = asyncio.ensure_future(connector.submit(part()))
    await eventually(lambda: smsc.submits == 1, what="the submit taken")  # answered at once
    loop = asyncio.get_running_loop()
    answered_at = loop.time()
    await eventually(lambda: loop.time() > answered_at + 2 * timeout, what="2 timeouts on")
    assert link.is_bound and not submitted.done()  # both answers still unread: no verdict

    store.gate.set()  # the store catches up: the link reads on and finds both answers
    outcome = await asyncio.wait_for(submitted, 5)
    assert (outcome.status, outcome.message_id) == (CommandStatus.ESME_ROK, "id1")
    await eventually(lambda: len(smsc.answers) == smsc.count, what="every deliver_sm answered")
    assert all(statuses == [CommandStatus.ESME_ROK] for statuses in smsc.answers.values())
    assert sorted(item.short_message for item in store.items) == sorted(
        b"mo %d" % n for n in range(1, smsc.count + 1)
    )  # each stored once
    await eventually(lambda: not link.session.outstanding(), what="the enquire_link answered")
    assert smsc.binds == 1 and link.is_bound and not link.given_up_silent and _reading(link)
    assert smsc.server is not None
    smsc.server.close()


async def test_a_link_paused_on_a_store_that_never_catches_up_is_unbound_and_bound_again(
    make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its deadlines standing still while paused, a link on a wedged store would wait for
    # ever: after PAUSED_AT_MOST it unbinds, reading on, and binds again; what it held
    # unanswered and what came behind ("try again later") the SMSC sends on the next bind.
    monkeypatch.setattr(smpp_link, "PAUSED_AT_MOST", 0.5)
    store, smsc = _GatedStore(), _FloodingSmsc(2 * INBOUND_HIGH_WATER)
    port = await smsc.start()
    connector = await make_connector(port, store, enquire_link_interval=0.2, response_timeout=0.3)
    link = _link(connector)
    await eventually(lambda: not _reading(link), what="reading paused at the mark")
    await eventually(lambda: smsc.binds == 2, what="unbound after its pause, and bound again")
    assert smsc.unbinds == 1 and link.given_up_stalled and not link.given_up_silent
    assert connector.links_lost() == {("transceiver", "stalled"): 1}
    behind = range(INBOUND_HIGH_WATER + 1, 2 * INBOUND_HIGH_WATER + 1)
    assert smsc.answers == {n: [CommandStatus.ESME_RX_T_APPN] for n in behind}  # none taken
    assert not store.items
    store.gate.set()
    assert smsc.server is not None
    smsc.server.close()


async def test_a_link_stalled_on_a_wedged_store_binds_again_only_once_the_store_takes_writes(
    make_connector: MakeConnector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Bound again at once, the SMSC sent what it kept into the same wedged store: the link
    # paused again, stalled a minute later, and was bound again, for as long as the store
    # stayed wedged.
    monkeypatch.setattr(smpp_client, "STORE_LOOK_EVERY_S", 0.05)
    store, smsc, connector = await _waiting_for_the_store(make_connector, monkeypatch, caplog)
    assert connector.links_lost() == {("transceiver", "stalled"): 1}
    loop = asyncio.get_running_loop()
    waiting_since = loop.time()
    backoff = connector.config.reconnect_max  # the longest it waited to bind again before
    await eventually(lambda: loop.time() > waiting_since + 2 * backoff, what="two backoffs on")
    assert smsc.binds == 1 and connector.binds() == {"transceiver": False}
    assert not store.items

    store.back.set()  # the store takes writes again: bound again, and what it kept is stored
    await eventually(lambda: smsc.binds == 2, what="bound again once the store took writes")
    await eventually(lambda: not smsc.not_taken(), what="each deliver_sm taken")
    assert sorted(item.short_message for item in store.items) == sorted(
        b"mo %d" % n for n in range(1, smsc.count + 1)
    )  # each stored once
    assert smsc.binds == 2 and connector.links_lost() == {("transceiver", "stalled"): 1}
    assert _said(caplog, "smpp.bind.waiting_for_store") == 1
    assert _said(caplog, "smpp.bind.store_back") == 1
    assert smsc.server is not None
    smsc.server.close()


async def test_a_stop_while_a_stalled_link_waits_for_the_store_ends_the_wait(
    make_connector: MakeConnector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, smsc, connector = await _waiting_for_the_store(make_connector, monkeypatch, caplog)
    await asyncio.wait_for(connector.stop(), 5)  # the store still wedged
    assert smsc.binds == 1 and _said(caplog, "smpp.bind.store_back") == 0
    store.back.set()
    assert smsc.server is not None
    smsc.server.close()


async def test_a_link_closed_under_us_binds_again_whatever_the_store_says(
    make_simulator: MakeSimulator,
    make_connector: MakeConnector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Only a link given up as stalled waits for the store: one the SMSC closed is bound again
    # as before (a store failing for good is said by /health, not by an SMSC kept away).
    caplog.set_level(logging.INFO, logger="smsrelay.carrier.smpp")
    simulator = await make_simulator()
    connector = await make_connector(simulator, store_refusal=lambda: "commits failing")
    [smsc_side] = simulator.server.links
    smsc_side.abort()
    await eventually(lambda: simulator.stats.binds == 2, what="bound again")
    assert connector.links_lost() == {("transceiver", "closed"): 1}
    assert _said(caplog, "smpp.bind.waiting_for_store") == 0


async def _waiting_for_the_store(
    make_connector: MakeConnector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> tuple[_WedgedStore, _FloodingSmsc, SmppConnector]:
    """A link stalled on a wedged store (whose SMSC sends again what it kept at each bind),
    its connector now waiting for the store before it binds again."""
    monkeypatch.setattr(smpp_link, "PAUSED_AT_MOST", 0.5)
    caplog.set_level(logging.INFO, logger="smsrelay.carrier.smpp")
    store, smsc = _WedgedStore(), _FloodingSmsc(2 * INBOUND_HIGH_WATER, resend=True)
    connector = await _stalling(make_connector, store, smsc)
    await eventually(
        lambda: _said(caplog, "smpp.bind.waiting_for_store") == 1, what="waiting for the store"
    )
    return store, smsc, connector


async def _stalling(
    make_connector: MakeConnector, store: _WedgedStore, smsc: _FloodingSmsc
) -> SmppConnector:
    """A connector bound to ``smsc`` (which floods it) over ``store``: its link stalls."""
    port = await smsc.start()
    return await make_connector(
        port,
        store,
        store_refusal=store.refusal,
        enquire_link_interval=0.2,
        response_timeout=0.3,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
async def test_a_stalled_tls_link_whose_shutdown_lingers_is_given_up_once(
    make_connector: MakeConnector,
    monkeypatch: pytest.MonkeyPatch,
    certificate: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A TLS link closes through its TLS shutdown, ticking until the SMSC answers our
    # close_notify; its reading paused again behind the unbind_resp (the deliveries it held
    # still unanswered), it was given up as stalled again at each tick of that wait, and
    # said smpp.link.stalled each time.
    monkeypatch.setattr(smpp_link, "PAUSED_AT_MOST", 0.5)
    caplog.set_level(logging.WARNING, logger="smsrelay.carrier.smpp")
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    store = _GatedStore()
    smsc = _FloodingSmsc(2 * INBOUND_HIGH_WATER, tls=server_tls, deaf_after_unbind=True)
    port = await smsc.start()
    connector = await make_connector(
        port, store, tls=True, tls_ca=cert, enquire_link_interval=0.2, response_timeout=0.3
    )
    link = _link(connector)
    await eventually(
        lambda: smsc.unbinds == 1 and link.transport is not None and link.transport.is_closing(),
        what="unbound after its pause, and closing",
    )
    loop = asyncio.get_running_loop()
    closing_at = loop.time()
    limit = smpp_link.PAUSED_AT_MOST
    await eventually(lambda: loop.time() > closing_at + 3 * limit, what="three pause limits on")
    assert not link.closed.done()  # its TLS shutdown still waits for the SMSC's close_notify
    assert _said(caplog, "smpp.link.stalled") == 1

    smsc.hear.set()  # the SMSC answers the close_notify: the link ends, and binds again
    await eventually(lambda: smsc.binds == 2, what="bound again once the shutdown ended")
    assert connector.links_lost() == {("transceiver", "stalled"): 1}
    assert _said(caplog, "smpp.link.stalled") == 1
    store.gate.set()
    assert smsc.server is not None
    smsc.server.close()


def _said(caplog: pytest.LogCaptureFixture, event: str) -> int:
    return sum(1 for record in caplog.records if record.getMessage() == event)


async def test_the_simulator_reads_a_flooding_esme_no_further_than_the_mark(
    make_simulator: MakeSimulator,
) -> None:
    # Its answers held back by --resp-delay-ms, the built-in SMSC held every submit_sm an
    # ESME pipelined until its answer left.
    simulator = await make_simulator(resp_delay_ms=100)
    flood = 3 * INBOUND_HIGH_WATER
    reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
    writer.write(encode(BindTransceiver(sequence=1, system_id="esme", password="x")))
    pdus = PduReader()
    async with asyncio.timeout(5):
        [bound] = pdus.feed(await reader.read(65536))
    assert isinstance(bound, BindTransceiverResp) and bound.status == CommandStatus.ESME_ROK
    submits = (
        encode(SubmitSm(sequence=n, source_addr="33700000001", destination_addr="33612345678"))
        for n in range(2, flood + 2)
    )
    writer.write(b"".join(submits))
    answered: set[int] = set()
    async with asyncio.timeout(5):
        while len(answered) < flood:
            for pdu in pdus.feed(await reader.read(65536)):
                if isinstance(pdu, SubmitSmResp) and pdu.status == CommandStatus.ESME_ROK:
                    answered.add(pdu.sequence)
    assert simulator.stats.max_resp_pending <= INBOUND_HIGH_WATER  # 3,000 without it
    assert answered == set(range(2, flood + 2))
    writer.close()


async def test_the_simulator_takes_no_more_submits_awaiting_their_receipt_than_its_mark(
    make_simulator: MakeSimulator,
) -> None:
    # With --receipt-before-resp a submit waits for its receipt's window slot before its
    # answer; those were not counted, so an ESME flooding submits made it hold all of them
    # (a task and a record each) without bound.
    simulator = await make_simulator(receipt_before_resp=True)
    flood = 3 * INBOUND_HIGH_WATER
    reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
    writer.write(encode(BindTransceiver(sequence=1, system_id="esme", password="x")))
    pdus = PduReader()
    async with asyncio.timeout(5):
        [bound] = pdus.feed(await reader.read(65536))
    assert isinstance(bound, BindTransceiverResp) and bound.status == CommandStatus.ESME_ROK
    submits = (
        encode(
            SubmitSm(
                sequence=n,
                source_addr="33700000001",
                destination_addr="33612345678",
                registered_delivery=1,
            )
        )
        for n in range(2, flood + 2)
    )
    writer.write(b"".join(submits))
    answered: dict[int, int] = {}
    receipts = 0
    async with asyncio.timeout(10):
        while len(answered) < flood or receipts < _accepted(answered):
            for pdu in pdus.feed(await reader.read(65536)):
                if isinstance(pdu, SubmitSmResp):
                    assert pdu.sequence not in answered
                    answered[pdu.sequence] = pdu.status
                elif isinstance(pdu, DeliverSm):
                    receipts += 1
                    writer.write(encode(DeliverSmResp(sequence=pdu.sequence)))
    [link] = simulator.server.links
    assert 0 < link.unanswered_most <= INBOUND_LOW_WATER and link.reading_pauses == 0
    assert simulator.stats.max_awaiting_receipt <= INBOUND_LOW_WATER  # ~2,900 without it
    assert set(answered) == set(range(2, flood + 2))  # every submit answered once
    refused = [n for n, status in answered.items() if status == CommandStatus.ESME_RMSGQFUL]
    assert refused and len(refused) == simulator.stats.queue_full
    assert receipts == flood - len(refused)  # each taken one has its receipt, first
    assert simulator.stats.awaiting_receipt == 0 and link.unanswered == 0
    writer.close()


def _accepted(answered: dict[int, int]) -> int:
    return sum(1 for status in answered.values() if status == CommandStatus.ESME_ROK)
