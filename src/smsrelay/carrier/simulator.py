"""The built-in SMSC simulator: an SMPP server that accepts submits, sends receipts and MOs.

It can misbehave on purpose, the way real carriers do: latency (pipelined), throttling,
rejections, a dropped connection, receipts before the submit_sm_resp, and message ids written
in hex in one place and decimal in the other. An HTTP control API injects replies and shows
what was received.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from aiohttp import web
from aiohttp.typedefs import Handler

from smsrelay.carrier.control_guard import ControlRequest, control_refusal
from smsrelay.carrier.simulator_rules import (
    STATS,
    Rule,
    RuleError,
    number_key,
    parse_rule,
    receipt_err,
    rule_number,
)
from smsrelay.carrier.smpp_server import SmppServer, SmscLink
from smsrelay.domain.text import Encoding, decode_gsm7, decode_ucs2, is_gsm7, split_segments
from smsrelay.smpp.concat import ConcatMethod, build_part, split_concat
from smsrelay.smpp.errors import LocalProtocolError
from smsrelay.smpp.pdu import (
    ESM_CLASS_RECEIPT,
    CommandStatus,
    DataSm,
    DeliverSm,
    MessageState,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Tlvs,
)
from smsrelay.smpp.receipts import format_receipt
from smsrelay.smpp.session import TokenBucket
from smsrelay.smpp.times import relative_seconds

IdStyle = Literal["hex", "decimal"]
InboundPdu = Literal["deliver_sm", "data_sm"]
_Build = Callable[[int], DeliverSm | DataSm]
_Fate = tuple[str, MessageState, int]  # a part's receipt stat, its message_state, its err


def _wants_receipt(registered_delivery: int, stat: str) -> bool:
    """SMPP 3.4 5.2.17, bits 1-0: 01 a receipt for every final outcome, 10 for a failure
    only (00 none; 11 is reserved)."""
    asked = registered_delivery & 0x03
    return asked == 1 or (asked == 2 and stat != "DELIVRD")


_log = logging.getLogger("smsrelay.carrier.simulator")
# A refused deliver_sm is sent again, each wait twice the last (from redeliver_delay_ms) up to
# this, as real SMSCs retry for hours: giving up after five tries a second apart lost every
# receipt refused during a database outage of more than a few seconds.
_REDELIVER_MAX_DELAY = 60.0


def _redeliver_delay(first_ms: int, attempt: int) -> float:
    """Seconds before a refused receipt goes again: doubling from ``first_ms`` (at least
    1 ms: 0 would spin for the whole span), up to a minute."""
    doubled: float = max(first_ms, 1) / 1000 * 2.0 ** min(attempt, 20)
    return min(doubled, _REDELIVER_MAX_DELAY)


@dataclass(frozen=True)
class SimulatorOptions:
    host: str = "127.0.0.1"
    port: int = 2775
    control_port: int | None = None  # HTTP control API; None = port + 1, 0 = ephemeral
    control: bool = True  # False: no HTTP control API at all
    system_id: str | None = None  # the only system_id accepted (None = any)
    password: str | None = None
    delivery_rate: float = 0.95  # fraction of receipts DELIVRD, the rest UNDELIV
    reject_rate: float = 0.0  # fraction of submit_sm answered ESME_RINVDSTADR
    receipt_delay_ms: int = 0
    resp_delay_ms: int = 0  # carrier latency on each submit_sm_resp (pipelined)
    throttle_per_second: float | None = None  # ESME_RTHROTTLED above this rate
    drop_after: int | None = None  # close the connection on the Nth submit_sm, once
    # A flaky link: close the connection (no unbind) at every Nth submit_sm, after sending
    # what it had answered; that one is neither answered nor kept. Answers still held back
    # by resp_delay_ms are lost with the link (their submits kept: copies, as for real).
    drop_every: int | None = None
    receipt_before_resp: bool = False
    id_style: IdStyle = "hex"
    receipt_id_style: IdStyle | None = None  # None = same as id_style
    redeliver_delay_ms: int = 1000  # re-send a deliver_sm the ESME answered with an error
    redeliver_for_s: float = 6 * 3600.0  # ... until this long after its first refusal
    window: int = 100  # deliver_sm outstanding per bind
    inbound_pdu: InboundPdu = "deliver_sm"  # data_sm: receipts and replies the other way
    max_records: int = 1_000_000  # the oldest half of .received is dropped beyond this
    seed: int | None = None
    tls_cert: str | None = None  # PEM certificate (and tls_key) to serve smpps:// instead
    tls_key: str | None = None
    tls_client_ca: str | None = None  # require client certificates issued by this CA (mTLS)
    bind_timeout: float = 30.0  # a connection with no successful bind by then is dropped

    def __post_init__(self) -> None:
        for name in ("delivery_rate", "reject_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.id_style not in ("hex", "decimal") or self.receipt_id_style not in (
            None,
            "hex",
            "decimal",
        ):
            raise ValueError("id styles are 'hex' or 'decimal'")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca needs tls_cert (client certificates are a TLS feature)")
        if self.inbound_pdu not in ("deliver_sm", "data_sm"):
            raise ValueError("inbound_pdu is 'deliver_sm' or 'data_sm'")
        if self.bind_timeout <= 0:
            raise ValueError("bind_timeout must be more than 0 seconds")
        if self.drop_every is not None and self.drop_every < 1:
            raise ValueError("drop_every must be at least 1")


@dataclass(frozen=True)
class SubmitRecord:
    """One submit_sm as the simulator received it."""

    system_id: str
    source: str
    destination: str
    source_ton: int
    source_npi: int
    dest_ton: int
    dest_npi: int
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: Tlvs
    registered_delivery: int
    status: int
    message_id: str | None
    validity_period: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["short_message"] = self.short_message.hex()
        data["tlvs"] = [{"tag": tag, "value": value.hex()} for tag, value in self.tlvs]
        return data


@dataclass
class _Receipt:
    """One receipt, built once: a re-delivery sends the same outcome again."""

    system_id: str | None
    build: _Build
    attempt: int = 0
    first_refused: float | None = None  # the loop's time of its first refusal


@dataclass
class SimulatorStats:
    binds: int = 0
    submits: int = 0
    accepted: int = 0
    rejected: int = 0
    throttled: int = 0
    dropped_connections: int = 0
    receipts_sent: int = 0
    receipts_acked: int = 0
    receipts_refused: int = 0
    receipts_given_up: int = 0  # refused until redeliver_for_s ran out
    mo_sent: int = 0
    mo_acked: int = 0
    resp_pending: int = 0  # submit_sm_resp held back by resp_delay_ms
    max_resp_pending: int = 0
    # receipt_before_resp: submits whose answer waits for their receipt to go first
    awaiting_receipt: int = 0
    max_awaiting_receipt: int = 0
    queue_full: int = 0  # submits refused ESME_RMSGQFUL: too many awaiting their receipt


def render_id(number: int, style: IdStyle) -> str:
    """``0001e240`` (hex, 8 digits, leading zeros) or ``123456`` (decimal)."""
    return f"{number:08x}" if style == "hex" else str(number)


class Simulator:
    """A fake SMSC on 127.0.0.1 for tests, demos and benchmarks."""

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        opts = self.options
        credentials = None
        if opts.system_id is not None:
            credentials = {opts.system_id: opts.password or ""}
        self.server = SmppServer(
            self,
            host=opts.host,
            port=opts.port,
            credentials=credentials,
            window=opts.window,
            tls=_server_tls(opts),
            bind_timeout=opts.bind_timeout,
        )
        self.received: list[SubmitRecord] = []
        self.stats = SimulatorStats()
        self.port = opts.port
        self.control_port: int | None = None
        self._rng = random.Random(opts.seed)
        self._next_id = self._rng.randrange(0x10000, 0x1000000)
        self._throttle = (  # bursts of a tenth of a second's worth, like a strict carrier
            TokenBucket(opts.throttle_per_second, burst=max(1.0, opts.throttle_per_second / 10))
            if opts.throttle_per_second
            else None
        )
        self.rules: dict[str, Rule] = {}  # by destination digits (simulator_rules)
        self._dropped = False
        self._stopped = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._control: web.AppRunner | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._stopped = False
        await self.server.start()
        self.port = self.server.port
        if self.options.control:
            await self._start_control()

    async def stop(self) -> None:
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        await self.server.stop()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- SmscApplication -----------------------------------------------------------------

    def on_bound(self, link: SmscLink) -> None:
        self.stats.binds += 1

    def on_submit_sm(self, link: SmscLink, pdu: SubmitSm) -> None:
        if link.is_closing:
            return
        stats = self.stats
        stats.submits += 1
        drop_after = self.options.drop_after
        if drop_after is not None and not self._dropped and stats.submits >= drop_after:
            self._dropped = True
            stats.dropped_connections += 1
            link.abort()
            return
        drop_every = self.options.drop_every
        if drop_every is not None and stats.submits % drop_every == 0:
            stats.dropped_connections += 1
            link.close()
            return
        rule = self.rules.get(number_key(pdu.destination_addr)) if self.rules else None
        status = _address_status(pdu)
        if self._receipts_queue_full(link):
            status = CommandStatus.ESME_RMSGQFUL
            self.stats.queue_full += 1
        elif status:  # as a real SMSC: no receipt could carry it (it hung the loop once)
            self.stats.rejected += 1
        else:
            status = self._decide() if rule is None else self._ruled(rule)
        message_id = self._new_id() if status == 0 else None
        record = self._record(link, pdu, status, message_id)
        response = SubmitSmResp(sequence=pdu.sequence, status=status, message_id=message_id or "")
        fate = self._fate(record, rule) if message_id is not None else None
        if fate is None or not _wants_receipt(pdu.registered_delivery, fate[0]):
            self._respond(link, response)
        elif self.options.receipt_before_resp:
            link.hold()  # its answer waits for the receipt: counted (see _receipts_queue_full)
            stats.awaiting_receipt += 1
            stats.max_awaiting_receipt = max(stats.max_awaiting_receipt, stats.awaiting_receipt)
            self._spawn(self._receipt_then_resp(link, record, response, fate))
        else:
            self._respond(link, response)
            delay_ms = self.options.receipt_delay_ms
            if rule is not None and rule.receipt_delay_ms is not None:
                delay_ms = rule.receipt_delay_ms
            self._schedule_receipt(record, fate, delay_ms)

    def _receipts_queue_full(self, link: SmscLink) -> bool:
        """With receipt_before_resp, a submit waits for its receipt to go (for a window slot
        when the ESME's answers are slow), counted on its link. At the link's low mark it is
        refused ESME_RMSGQFUL, as by a real SMSC with a full queue: held up to the high mark,
        the link would stop reading, and the receipts' answers that free the waiting submits
        would wait unread behind the flood. Unbounded, an ESME flooding submits grew it for
        ever."""
        return self.options.receipt_before_resp and link.unanswered >= link.low_water

    def _decide(self) -> int:
        loop_time = asyncio.get_running_loop().time()
        if self._throttle is not None and not self._throttle.try_take(loop_time):
            self.stats.throttled += 1
            return CommandStatus.ESME_RTHROTTLED
        if self.options.reject_rate and self._rng.random() < self.options.reject_rate:
            self.stats.rejected += 1
            return CommandStatus.ESME_RINVDSTADR
        self.stats.accepted += 1
        return CommandStatus.ESME_ROK

    def _ruled(self, rule: Rule) -> int:
        if rule.submit_status:
            self.stats.rejected += 1
        else:
            self.stats.accepted += 1
        return rule.submit_status

    def _new_id(self) -> str:
        self._next_id += 1
        return render_id(self._next_id, self.options.id_style)

    def _record(
        self, link: SmscLink, pdu: SubmitSm, status: int, message_id: str | None
    ) -> SubmitRecord:
        record = SubmitRecord(
            system_id=link.system_id,
            source=pdu.source_addr,
            destination=pdu.destination_addr,
            source_ton=pdu.source_addr_ton,
            source_npi=pdu.source_addr_npi,
            dest_ton=pdu.dest_addr_ton,
            dest_npi=pdu.dest_addr_npi,
            esm_class=pdu.esm_class,
            data_coding=pdu.data_coding,
            short_message=pdu.short_message,
            tlvs=pdu.tlvs,
            registered_delivery=pdu.registered_delivery,
            status=status,
            message_id=message_id,
            validity_period=pdu.validity_period,
        )
        if len(self.received) >= self.options.max_records:
            del self.received[: len(self.received) // 2]
        self.received.append(record)
        return record

    def _respond(self, link: SmscLink, response: SubmitSmResp, *, held: bool = False) -> None:
        """Answer now or after resp_delay_ms; ``held``: the submit is counted on its link
        already (it waited for its receipt)."""
        delay = self.options.resp_delay_ms / 1000
        if delay <= 0:
            if held:
                link.answer_held(response)
            else:
                link.send(response)
            return
        stats = self.stats
        stats.resp_pending += 1
        stats.max_resp_pending = max(stats.max_resp_pending, stats.resp_pending)
        # counted until then: an ESME pipelining past the link's mark is read no further till
        # the answers catch up (they come on a timer, not from what the paused link has unread)
        if not held:
            link.hold()
        asyncio.get_running_loop().call_later(delay, self._send_late, link, response)

    def _send_late(self, link: SmscLink, pdu: Pdu) -> None:
        self.stats.resp_pending -= 1
        link.answer_held(pdu)

    # --- receipts ------------------------------------------------------------------------

    def _fate(self, record: SubmitRecord, rule: Rule | None = None) -> _Fate | None:
        """The receipt's stat (None: no receipt): a rule's for its number; else a part
        whose validity ends before its receipt is due (the handset "unreachable" until
        then) expires, as at a carrier; else delivered at ``delivery_rate``."""
        if rule is not None and not rule.receipt:
            return None
        if rule is not None and rule.stat is not None:
            return rule.stat, STATS[rule.stat], receipt_err(rule, rule.stat)
        validity = relative_seconds(record.validity_period)
        if validity is not None and self.options.receipt_delay_ms > validity * 1000:
            return "EXPIRED", MessageState.EXPIRED, 0
        if self._rng.random() < self.options.delivery_rate:
            return "DELIVRD", MessageState.DELIVERED, 0
        return "UNDELIV", MessageState.UNDELIVERABLE, 1

    def _schedule_receipt(self, record: SubmitRecord, fate: _Fate, delay_ms: int) -> None:
        receipt = _Receipt(record.system_id or None, self._receipt_builder(record, fate))
        delay = delay_ms / 1000
        if delay <= 0:
            self._send_receipt(receipt)
        else:
            asyncio.get_running_loop().call_later(delay, self._send_receipt, receipt)

    def _send_receipt(self, receipt: _Receipt) -> None:
        if self._stopped:
            return
        try:
            future = self.server.try_deliver(receipt.system_id, receipt.build)
        except LocalProtocolError as exc:
            self._unencodable(exc)
            return
        if future is None:  # no receiver, or its window is full: wait for one
            self._spawn(self._deliver_receipt(receipt))
            return
        self.stats.receipts_sent += 1
        future.add_done_callback(lambda f: self._receipt_answered(f, receipt))

    async def _deliver_receipt(self, receipt: _Receipt) -> None:
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        try:
            pdu = await self.server.deliver(receipt.system_id, receipt.build)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(pdu)
        self.stats.receipts_sent += 1
        self._receipt_answered(future, receipt)

    def _unencodable(self, error: LocalProtocolError) -> None:
        """A receipt no deliver_sm can carry (an address the ESME sent past its field's
        length): dropped, as no re-delivery could send it."""
        self.stats.receipts_given_up += 1
        _log.warning("simulator.receipt.unencodable", extra={"error": str(error)})

    def _receipt_answered(self, future: asyncio.Future[Pdu], receipt: _Receipt) -> None:
        if future.cancelled():
            return
        if isinstance(future.exception(), LocalProtocolError):
            self._unencodable(cast(LocalProtocolError, future.exception()))
            return
        if future.exception() is None and future.result().status == 0:
            self.stats.receipts_acked += 1
            return
        self.stats.receipts_refused += 1  # the same receipt again, later, like a real SMSC
        loop = asyncio.get_running_loop()
        now = loop.time()
        if receipt.first_refused is None:
            receipt.first_refused = now
        delay = _redeliver_delay(self.options.redeliver_delay_ms, receipt.attempt)
        receipt.attempt += 1
        if self._stopped:
            return
        if now + delay > receipt.first_refused + self.options.redeliver_for_s:
            self.stats.receipts_given_up += 1
            _log.warning("simulator.receipt.given_up", extra={"attempts": receipt.attempt})
            return
        loop.call_later(delay, self._send_receipt, receipt)

    async def _receipt_then_resp(
        self, link: SmscLink, record: SubmitRecord, response: SubmitSmResp, fate: _Fate
    ) -> None:
        try:
            await self._receipt_first(record, fate)
        finally:
            self.stats.awaiting_receipt -= 1
        self._respond(link, response, held=True)

    async def _receipt_first(self, record: SubmitRecord, fate: _Fate) -> None:
        """Send the receipt now, or wait for a receiver's window slot and its answer."""
        receipt = _Receipt(record.system_id or None, self._receipt_builder(record, fate))
        try:
            future = self.server.try_deliver(receipt.system_id, receipt.build)
        except LocalProtocolError as exc:
            self._unencodable(exc)
            return
        if future is None:  # no receiver free right now: deliver, then answer the submit
            await self._deliver_receipt(receipt)
            return
        self.stats.receipts_sent += 1  # its answer comes later: the submit's goes now
        future.add_done_callback(lambda f: self._receipt_answered(f, receipt))

    def _receipt_builder(self, record: SubmitRecord, fate: _Fate) -> _Build:
        stat, state, err = fate
        receipt_id = render_id(int(record.message_id or "0", 16 if self._hex else 10), self._rstyle)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        text = format_receipt(
            receipt_id, stat, submit_date=now, done_date=now, err=err, text=_preview(record)
        )
        tlvs: Tlvs = (
            (Tag.RECEIPTED_MESSAGE_ID, receipt_id.encode("ascii") + b"\0"),
            (Tag.MESSAGE_STATE, bytes((state,))),
        )
        addresses = _receipt_addresses(record)
        if self.options.inbound_pdu == "data_sm":
            payload = ((Tag.MESSAGE_PAYLOAD, text.encode("ascii", "replace")),)
            return _with_sequence(
                DataSm(
                    sequence=0,
                    **addresses,
                    esm_class=ESM_CLASS_RECEIPT,
                    data_coding=0,
                    tlvs=tlvs + payload,
                )
            )

        def build(sequence: int) -> DeliverSm:
            return DeliverSm(
                sequence=sequence,
                **addresses,
                esm_class=ESM_CLASS_RECEIPT,
                short_message=text.encode("ascii", "replace"),
                tlvs=tlvs,
            )

        return build

    @property
    def _hex(self) -> bool:
        return self.options.id_style == "hex"

    @property
    def _rstyle(self) -> IdStyle:
        return self.options.receipt_id_style or self.options.id_style

    # --- replies (MO) --------------------------------------------------------------------

    async def inject_reply(
        self, source: str, destination: str, text: str, *, system_id: str | None = None
    ) -> list[int]:
        """Send an MO as deliver_sm (UDH-concatenated when long) or as one data_sm (the whole
        text in message_payload); the ESME's statuses.

        Waits for a receiver to be bound (bound it with ``asyncio.timeout``).
        """
        statuses = []
        for template in self._mo_pdus(source, destination, text):
            self.stats.mo_sent += 1
            response = await self.server.deliver(
                system_id or self.options.system_id, _with_sequence(template)
            )
            self.stats.mo_acked += response.status == 0
            statuses.append(response.status)
        return statuses

    def _mo_pdus(self, source: str, destination: str, text: str) -> list[DeliverSm | DataSm]:
        encoding = Encoding.GSM7 if is_gsm7(text) else Encoding.UCS2
        data_coding = 0 if encoding is Encoding.GSM7 else 8
        segments = split_segments(text, encoding)
        if self.options.inbound_pdu == "data_sm":
            whole = ((Tag.MESSAGE_PAYLOAD, b"".join(segments)),)
            return [_data_sm(source, destination, 0, data_coding, whole)]
        ref = self._rng.randrange(256)
        pdus: list[DeliverSm | DataSm] = []
        for seq, payload in enumerate(segments, 1):
            esm_class, short_message, tlvs = build_part(
                payload, ref, len(segments), seq, ConcatMethod.UDH8
            )
            pdus.append(
                DeliverSm(
                    sequence=0,
                    **_international(source, destination),
                    esm_class=esm_class,
                    data_coding=data_coding,
                    short_message=short_message,
                    tlvs=tlvs,
                )
            )
        return pdus

    # --- control API ---------------------------------------------------------------------

    async def _start_control(self) -> None:
        opts = self.options
        port = opts.control_port
        if port is None:
            port = opts.port + 1 if opts.port else 0
        app = web.Application(middlewares=[self._http_guard])
        app.router.add_post("/reply", self._http_reply)
        app.router.add_get("/submits", self._http_submits)
        app.router.add_get("/stats", self._http_stats)
        app.router.add_post("/rules", self._http_add_rule)
        app.router.add_get("/rules", self._http_rules)
        app.router.add_delete("/rules", self._http_remove_rules)
        self._control = web.AppRunner(app, access_log=None)
        await self._control.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((opts.host, port))
        self.control_port = sock.getsockname()[1]
        await web.SockSite(self._control, sock).start()

    @web.middleware
    async def _http_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuses what a web page could send (``control_guard``), before any handler."""
        headers = request.headers
        asked = ControlRequest(
            request.method, headers.get("Host"), headers.get("Origin"), headers.get("Content-Type")
        )
        refusal = control_refusal(asked, self.options.host)
        if refusal is not None:
            return web.json_response({"error": refusal.reason}, status=refusal.status)
        return await handler(request)

    async def _http_reply(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            source, destination, text = str(body["from"]), str(body["to"]), str(body["text"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected JSON {"from","to","text"}'}, status=400)
        try:
            async with asyncio.timeout(10):
                statuses = await self.inject_reply(source, destination, text)
        except TimeoutError:
            return web.json_response({"error": "no receiver acknowledged in 10 s"}, status=504)
        except LocalProtocolError as exc:  # an address past its field's 20 characters
            return web.json_response({"error": f"cannot be sent: {exc}"}, status=400)
        return web.json_response({"parts": len(statuses), "statuses": statuses})

    async def _http_submits(self, request: web.Request) -> web.Response:
        """Every submit_sm kept (the last ``max_records``), or the last ``?limit=N``."""
        limit = request.query.get("limit", "")
        if limit and not (limit.isascii() and limit.isdigit()):
            return web.json_response({"error": "limit must be a whole number"}, status=400)
        count = int(limit) if limit else len(self.received)
        kept = self.received[max(0, len(self.received) - count) :]
        return web.json_response([record.as_json() for record in kept])

    async def _http_add_rule(self, request: web.Request) -> web.Response:
        """What happens to the parts sent to one number from now on (``simulator_rules``);
        a rule for the same number replaces the one before."""
        try:
            rule = parse_rule(await request.json())
        except ValueError as exc:  # RuleError, or a body that is not JSON
            message = str(exc) if isinstance(exc, RuleError) else "the body is not JSON"
            return web.json_response({"error": message}, status=400)
        self.rules[rule.to] = rule
        return web.json_response(rule.as_json())

    async def _http_rules(self, request: web.Request) -> web.Response:
        return web.json_response([rule.as_json() for rule in self.rules.values()])

    async def _http_remove_rules(self, request: web.Request) -> web.Response:
        """Every rule, or ``?to=N``'s only."""
        to = request.query.get("to")
        if to is None:
            removed = len(self.rules)
            self.rules.clear()
        else:
            try:
                key = rule_number(to)
            except RuleError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            removed = int(self.rules.pop(key, None) is not None)
        return web.json_response({"removed": removed})

    async def _http_stats(self, request: web.Request) -> web.Response:
        data = asdict(self.stats)
        data["bind_refusals"] = self.server.refused_binds
        data["connections"] = len(self.server.links)
        return web.json_response(data)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _with_sequence(template: DeliverSm | DataSm) -> _Build:
    return lambda sequence: dataclasses.replace(template, sequence=sequence)


def _international(source: str, destination: str) -> dict[str, Any]:
    """Both addresses of a PDU to the ESME, international (TON 1 / NPI 1) like a carrier's."""
    return {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": source,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": destination,
    }


def _receipt_addresses(record: SubmitRecord) -> dict[str, Any]:
    """A receipt goes from the handset to the sender with the types of number the submit
    gave them (an alphanumeric sender, TON 5, came back as TON 1)."""
    return {
        "source_addr_ton": record.dest_ton,
        "source_addr_npi": record.dest_npi,
        "source_addr": record.destination,
        "dest_addr_ton": record.source_ton,
        "dest_addr_npi": record.source_npi,
        "destination_addr": record.source,
    }


def _data_sm(source: str, destination: str, esm_class: int, data_coding: int, tlvs: Tlvs) -> DataSm:
    return DataSm(
        sequence=0,
        **_international(source, destination),
        esm_class=esm_class,
        data_coding=data_coding,
        tlvs=tlvs,
    )


def _preview(record: SubmitRecord) -> str:
    """The first 20 characters of the submitted text, printable ASCII only."""
    _, body = split_concat(record.esm_class, record.short_message, record.tlvs)
    body = body[:40]  # 20 characters at most 2 octets each (UCS-2, or a GSM escape pair)
    text = decode_ucs2(body) if record.data_coding == 8 else decode_gsm7(body)
    return "".join(c if " " <= c <= "~" else "?" for c in text[:20])


async def run_simulator(options: SimulatorOptions) -> None:
    """Run until cancelled."""
    simulator = Simulator(options)
    await simulator.start()
    control = (
        f" (control http://{options.host}:{simulator.control_port})"
        if simulator.control_port
        else ""
    )
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
        loop.add_signal_handler(signal.SIGTERM, stopped.set)  # a supervisor's stop: exit 0
    # said once the stop is handled: a SIGTERM right after this line is a clean stop too
    print(f"smsc: listening on {options.host}:{simulator.port}{control}", file=sys.stderr)
    try:
        await stopped.wait()
    finally:
        await simulator.stop()


def _server_tls(opts: SimulatorOptions) -> ssl.SSLContext | None:
    if not opts.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(opts.tls_cert, opts.tls_key)
    if opts.tls_client_ca:  # mutual TLS: no certificate from that CA, no connection
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=opts.tls_client_ca)
    return context


# SMPP 3.4 5.2.8-9: source_addr and destination_addr are at most 21 octets with their NUL
MAX_ADDRESS = 20


def _address_status(pdu: SubmitSm) -> int:
    if len(pdu.source_addr) > MAX_ADDRESS:
        return CommandStatus.ESME_RINVSRCADR
    if len(pdu.destination_addr) > MAX_ADDRESS:
        return CommandStatus.ESME_RINVDSTADR
    return CommandStatus.ESME_ROK
