"""SMPP 3.4 client (ESME) over asyncio: the production :class:`Connector`, on top of the
connection transport in :mod:`smsrelay.carrier.smpp_link`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import ssl
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from smsrelay.carrier.answer_proof import AnswerProof
from smsrelay.carrier.connector import (
    MAY_BE_STORED,
    InboundHandler,
    InboundSm,
    OutboundPart,
    SubmitOutcome,
    SubmitUnanswered,
)
from smsrelay.carrier.proof_saver import ProofSaver
from smsrelay.carrier.smpp_link import NoAnswer, SmppLink, mark_retrieved
from smsrelay.domain.data_coding import SMSC_DEFAULT_CODECS
from smsrelay.domain.text import decode_gsm7
from smsrelay.errors import PermanentError, SmsRelayError, TransientError
from smsrelay.quick_init import quick_init
from smsrelay.smpp.concat import ConcatMethod, build_part
from smsrelay.smpp.errors import LocalProtocolError, NotSendableNow
from smsrelay.smpp.pdu import (
    ESM_CLASS_TYPE_MASK,
    RECEIPT_ESM_TYPES,
    SLOW_DOWN_STATUSES,
    Bind,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CommandStatus,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    status_name,
)
from smsrelay.smpp.receipts import RECEIPT_ID_FORMS, ReceiptIdForm
from smsrelay.smpp.session import (
    CAN_SUBMIT,
    AdaptivePace,
    Role,
    TokenBucket,
    attempts_after_link_lost,
    reconnect_delay,
)
from smsrelay.smpp.times import relative_time
from smsrelay.tls_files import EncryptedKey, holds_a_key, no_passphrase
from smsrelay.turn_batch import TurnBatch

BindMode = Literal["transceiver", "transmitter+receiver"]
_log = logging.getLogger("smsrelay.carrier.smpp")
_PROCESS_ID = uuid.uuid4().hex[:12]  # bind ids stay distinct across restarts
_BIND_COUNTER = itertools.count(1)
# A bind refused for its system_id or password is tried again this much later at the least:
# carriers count failed logins and may lock the account (the reconnect pace made 120 an hour).
CREDENTIALS_RETRY_S = 300.0
CREDENTIAL_REFUSALS = frozenset({CommandStatus.ESME_RINVPASWD, CommandStatus.ESME_RINVSYSID})
MAX_WINDOW = 1000  # = the dispatcher's in_flight: the parts one connector holds at once
# After a link given up as stalled, how often the store is asked whether it takes writes again
# before the next bind (a few flags and two stats: cheap).
STORE_LOOK_EVERY_S = 1.0

# --- configuration -------------------------------------------------------------------------


MAX_VALIDITY_HOURS = 48.0  # SMS Partner's validity at the carrier
GSM_DATA_CODINGS = (0, 1, 3)  # data_coding 0 is the SMSC default alphabet: GSM, IA5 or Latin-1


@dataclass(frozen=True)
class SmppLinkConfig:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    tls: bool = False
    tls_ca: str | None = None  # PEM file of the CA to trust (a carrier's private CA); else system
    tls_cert: str | None = None  # PEM client certificate, for carriers that require mutual TLS
    tls_key: str | None = None  # its private key (when not in tls_cert's file)
    bind_mode: BindMode = "transceiver"
    window: int = 100
    max_per_second: float | None = None
    response_timeout: float = 10.0
    enquire_link_interval: float = 30.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    concat_method: ConcatMethod = ConcatMethod.UDH8
    gsm_data_coding: int = 0
    # How this SMSC writes ids in receipts vs submit_sm_resp: auto, same, decimal, hex
    # (see smpp.receipts.carrier_id_candidates); set it when known, auto can be ambiguous.
    receipt_id: str = "auto"
    # The validity period the SMSC is given for each part (relative, from its arrival there);
    # 0 sends none, leaving the SMSC's default. At most 48 h: a part not reported on 49 h
    # after it left is marked expired here.
    validity_hours: float = MAX_VALIDITY_HOURS

    def __post_init__(self) -> None:
        if isinstance(self.concat_method, str):
            object.__setattr__(self, "concat_method", ConcatMethod(self.concat_method))
        if self.bind_mode not in ("transceiver", "transmitter+receiver"):
            raise ValueError(f"bind_mode {self.bind_mode!r}: transceiver or transmitter+receiver")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} outside 1..65535")
        if not 1 <= self.window <= MAX_WINDOW:
            # the dispatcher hands a connector at most 1,000 parts: a wider window never fills
            raise ValueError(f"window must be 1 to {MAX_WINDOW}")
        if self.max_per_second is not None and self.max_per_second <= 0:
            raise ValueError("max_per_second must be positive")
        if min(self.response_timeout, self.enquire_link_interval, self.reconnect_min) <= 0:
            raise ValueError("timeouts and intervals must be positive")
        if self.receipt_id not in RECEIPT_ID_FORMS:
            raise ValueError(
                f"receipt_id {self.receipt_id!r}: one of {', '.join(RECEIPT_ID_FORMS)}"
            )
        if not 0 <= self.validity_hours <= MAX_VALIDITY_HOURS:
            raise ValueError(
                f"validity_hours must be 0 (the SMSC's default) to {MAX_VALIDITY_HOURS}"
            )
        if 0 < self.validity_hours < 1 / 3600:
            raise ValueError("validity_hours must be at least one second (1/3600)")
        if self.gsm_data_coding not in GSM_DATA_CODINGS:
            raise ValueError(
                "gsm_data_coding must be 0, 1 (IA5) or 3 (Latin-1): what data_coding 0 means "
                "at this SMSC"
            )
        numbers = [self.response_timeout, self.enquire_link_interval, self.reconnect_min]
        numbers += [self.reconnect_max, self.validity_hours, self.max_per_second or 1.0]
        if not all(math.isfinite(n) for n in numbers):
            raise ValueError("timeouts, intervals, rates and validity must be finite numbers")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be at least reconnect_min")
        if (self.tls_ca or self.tls_cert or self.tls_key) and not self.tls:
            raise ValueError("tls_ca, tls_cert and tls_key need an smpps:// connector")
        if self.tls_key and not self.tls_cert:
            raise ValueError("tls_key without tls_cert")
        for name, limit in (("system_id", 15), ("password", 8), ("system_type", 12)):
            if len(getattr(self, name).encode("latin-1", "replace")) > limit:
                raise ValueError(f"{name} longer than {limit} characters (SMPP 3.4 limit)")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> SmppLinkConfig:
        """``smpp://SYSTEM_ID:PASSWORD@HOST:PORT?window=50&max_per_second=200`` (smpps: TLS).

        Query keys are the field names; unknown keys are errors. ``overrides`` win.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("smpp", "smpps"):
            raise ValueError(f"unsupported scheme {parts.scheme!r}: use smpp:// or smpps://")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        try:
            port = parts.port or 2775
        except ValueError as exc:  # "host:abc"
            raise ValueError(
                f"the URL's port is not a number ({exc}); a '/', '#' or '?' in the password "
                "must be written %2F, %23 or %3F"
            ) from None
        values: dict[str, Any] = {
            "host": parts.hostname,
            "port": port,
            "system_id": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "tls": parts.scheme == "smpps",
        }
        types = {f.name: f.type for f in fields(cls)}
        # the scheme says whether the link is TLS: a tls option could only contradict it
        fixed = ("host", "port", "tls")
        for key, raw in parse_qsl(parts.query, keep_blank_values=True):
            if key not in types or key in fixed:
                raise ValueError(f"unknown SMPP link setting {key!r}")
            values[key] = _convert(str(types[key]), raw)
        for key, value in overrides.items():  # a [connectors.NAME] table's values
            if key not in types or key in fixed:
                raise ValueError(f"unknown SMPP link setting {key!r}")
            values[key] = _checked(key, str(types[key]), value)
        return cls(**values)


class TlsFilesError(SmsRelayError):
    """A connector's CA, certificate or key file cannot be used."""


def client_tls(name: str, config: SmppLinkConfig) -> ssl.SSLContext | None:
    """The TLS context of an smpps:// connector: the system's CAs or ``tls_ca``, and the client
    certificate when the carrier requires mutual TLS."""
    if not config.tls:
        return None
    files = ", ".join(f for f in (config.tls_ca, config.tls_cert, config.tls_key) if f)
    try:
        context = ssl.create_default_context(cafile=config.tls_ca)
        if config.tls_cert:
            context.load_cert_chain(config.tls_cert, config.tls_key, password=no_passphrase)
    except EncryptedKey as exc:
        raise TlsFilesError(
            f"connector {name}: cannot load {config.tls_key or config.tls_cert}: {exc}"
        ) from exc
    except (OSError, ssl.SSLError) as exc:
        reason = str(exc)
        if config.tls_cert and not config.tls_key and not holds_a_key(config.tls_cert):
            reason = "tls_cert holds no private key: set tls_key to the key's file"  # "PEM lib"
        raise TlsFilesError(
            f"connector {name}: cannot load its TLS files ({files}): {reason}"
        ) from exc
    return context


def validity_period(hours: float) -> str:
    """A submit's validity_period: empty for 0 (the SMSC's default), else relative."""
    return relative_time(round(hours * 3600)) if hours else ""  # ≥ 1 s: the config checks


_KIND = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}


def _checked(key: str, type_name: str, value: Any) -> Any:
    """A TOML value for a link setting: text is read as a URL query value is; a value of
    another type than the setting's is an error naming it (not Python's own words later)."""
    base = type_name.split(" ", maxsplit=1)[0]  # "float | None" -> "float"
    if isinstance(value, str):
        try:
            return _convert(type_name, value)
        except ValueError:
            raise ValueError(f"{key} = {value!r}: {_KIND.get(base, base)} is expected") from None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    fits = {
        "bool": isinstance(value, bool),
        "int": number and isinstance(value, int),
        "float": number,
        "str": False,  # text was handled above
    }.get(base, True)
    if not fits:
        raise ValueError(f"{key} = {value!r}: {_KIND.get(base, base)} is expected")
    return value


def _convert(type_name: str, raw: str) -> Any:
    if type_name == "bool":
        text = raw.lower()
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"{raw!r} is not true or false")
        return text in ("1", "true", "yes", "on")
    if type_name == "int":
        return int(raw, 0)
    if type_name.startswith("float"):
        return None if raw.lower() in ("", "none") and "None" in type_name else float(raw)
    return raw


# --- the client side -----------------------------------------------------------------------


class WindowSlots:
    """A FIFO counting gate of callbacks, O(1) per call: each waiter is called with a slot in
    turn, and says whether it kept it."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[Callable[[], bool]] = deque()

    @property
    def free(self) -> int:
        return self._free

    def take(self, use: Callable[[], bool]) -> None:
        """Call ``use`` with a slot, now or when one frees in turn; it says whether it kept
        the slot (False: the slot goes on to the next in line)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            if not use():
                self.release()
            return
        self._waiters.append(use)

    def release(self) -> None:
        while self._waiters:  # the slot goes straight to the next in line that keeps it
            if self._waiters.popleft()():
                return
        self._free += 1

    def release_on_done(self, _: asyncio.Future[Any]) -> None:
        self.release()


def _outcome(response: Pdu) -> SubmitOutcome:
    if response.status or not isinstance(response, SubmitSmResp):
        return SubmitOutcome(status=response.status or CommandStatus.ESME_RSYSERR, message_id=None)
    return SubmitOutcome(status=0, message_id=response.message_id)


def _late_outcome(late: asyncio.Future[Pdu | None]) -> asyncio.Future[SubmitOutcome | None]:
    """The link's late answer, as the dispatcher reads outcomes."""
    outcome: asyncio.Future[SubmitOutcome | None] = asyncio.get_running_loop().create_future()

    def pass_on(answer: asyncio.Future[Pdu | None]) -> None:
        error = None if answer.cancelled() else answer.exception()
        if outcome.done():
            return
        if error is not None:  # SentIntoSilence: the link went silent after it left
            outcome.set_exception(error)
            return
        pdu = None if answer.cancelled() else answer.result()
        outcome.set_result(None if pdu is None else _outcome(pdu))

    late.add_done_callback(pass_on)
    outcome.add_done_callback(mark_retrieved)  # a caller gone at a stop reads it no more
    return outcome


class _EsmeLink(SmppLink):
    def __init__(self, connector: SmppConnector, mode: str) -> None:
        config = connector.config
        super().__init__(
            Role.ESME,
            window=config.window,
            response_timeout=config.response_timeout,
            enquire_link_interval=config.enquire_link_interval,
            logger=connector.log,
            name=f"{connector.name}/{mode}",
        )
        self.connector = connector
        # Which bind a reply came in on: the SMSC re-sends only what it had no resp for, and
        # that comes on a later bind (or the same one, much later than our resp could take).
        self.bind_id = f"{_PROCESS_ID}:{next(_BIND_COUNTER)}"
        self.handlers[DeliverSm] = self._on_deliver_sm
        self.handlers[DataSm] = self._on_data_sm
        self.handlers[SubmitSmResp] = self._on_submit_answer
        # Some SMSCs answer a submit they will not take with generic_nack, "not bound" too.
        self.handlers[GenericNack] = self._on_submit_answer
        self.handlers[EnquireLinkResp] = self._on_answer_proving
        self.handlers[UnbindResp] = self._on_answer_proving
        self.traffic = 0  # submit_sm_resp and deliveries received: the link was of use
        # which deliveries the SMSC surely has our answer to (a re-send of a reply is told
        # from the person writing twice by it: answer_proof)
        self.proof = AnswerProof()
        self.last_reply = 0

    def request(self, pdu: Pdu) -> asyncio.Future[Pdu]:
        future = super().request(pdu)
        self.proof.requested(pdu.sequence)
        return future

    def _send_keepalive(self) -> None:
        sequence = self.session.next_sequence()
        self.send(EnquireLink(sequence=sequence))
        self.proof.requested(sequence)

    def _keepalive_wanted(self) -> bool:
        # A link busy with receipts is never silent, so it sends no keepalive: the last
        # reply's answer would stay unproven while it lives (a person's same text on the
        # next bind then taken for a re-send for an hour). Asked at the next tick instead.
        return self.is_bound and self.proof.unproven_answer(self.last_reply)

    def _on_answer_proving(self, pdu: Pdu) -> None:
        self._proves(pdu.sequence)
        self._on_response(pdu)

    def _proves(self, sequence: int) -> None:
        """The SMSC answered request ``sequence``: the answers written before it are read."""
        if self.proof.answer_heard(sequence):
            self.connector.proofs.proven(self)

    def _on_submit_answer(self, pdu: Pdu) -> None:
        if pdu.status == CommandStatus.ESME_RINVBNDSTS:
            # The SMSC lost our session: what was sent after this was refused the same way,
            # and nothing more goes on this link (dropped here, before any other submit can
            # take it); the connector binds again. No sign of use: the backoff keeps growing.
            self.log.warning("smpp.submit.not_bound", extra={"link": self.name})
            self.void_after(pdu.sequence)
            self.abort()
        elif isinstance(pdu, SubmitSmResp):
            self.traffic += 1
        if pdu.status != CommandStatus.ESME_RINVBNDSTS:  # a session the SMSC lost may have
            self._proves(pdu.sequence)  # lost what it had read: no proof from that
        self._on_response(pdu)

    @property
    def can_submit(self) -> bool:
        return self.session.state in CAN_SUBMIT and self.is_open

    @property
    def is_bound(self) -> bool:
        return self.session.is_bound and self.is_open

    def _on_deliver_sm(self, pdu: DeliverSm) -> None:
        self.traffic += 1
        self.hold()  # answered once stored: flow control counts it until then
        self.connector.received(_Received(self, pdu, DeliverSmResp, self._number(pdu)))

    def _on_data_sm(self, pdu: DataSm) -> None:
        # Some SMSCs deliver replies and receipts by data_sm: the same path, its own resp.
        self.traffic += 1
        self.hold()
        self.connector.received(_Received(self, pdu, DataSmResp, self._number(pdu)))

    def _number(self, pdu: DeliverSm | DataSm) -> int:
        number = self.proof.arrived()
        if pdu.esm_class & ESM_CLASS_TYPE_MASK not in RECEIPT_ESM_TYPES:
            self.last_reply = number
        return number


def _how_lost(link: _EsmeLink) -> str:
    """silent: the SMSC stopped answering (we gave it up); stalled: we stopped reading it (our
    store wedged: we unbound); closed: it closed under us."""
    if link.given_up_silent:
        return "silent"
    return "stalled" if link.given_up_stalled else "closed"


@quick_init
@dataclass(frozen=True, slots=True)
class _Received:
    """A deliver_sm or data_sm waiting to be stored, and how to answer it once it is."""

    link: _EsmeLink
    pdu: DeliverSm | DataSm
    response: type[DeliverSmResp | DataSmResp]
    number: int  # on its link, in the order they came (answer_proof)

    def answer(self, status: int) -> None:
        link = self.link
        provable = status != MAY_BE_STORED
        wire = status if provable else CommandStatus.ESME_RX_T_APPN
        sent = link.is_open  # answer_held sends only then; it counts the answer either way
        link.answer_held(self.response(sequence=self.pdu.sequence, status=wire))
        if sent:
            link.proof.answered(self.number, provable=provable)


_MODE_BINDS: dict[str, type[Bind]] = {
    "transceiver": BindTransceiver,
    "transmitter": BindTransmitter,
    "receiver": BindReceiver,
}


class SmppConnector:
    """A :class:`~smsrelay.carrier.connector.Connector` speaking SMPP 3.4 to one SMSC link."""

    def __init__(
        self,
        name: str,
        config: SmppLinkConfig,
        on_inbound: InboundHandler,
        *,
        logger: logging.Logger | None = None,
        store_refusal: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.name = name
        self.config = config
        # why the store takes no write now, not even a receipt (None: it does): a link lost
        # as stalled binds again only once it takes them (see _wait_for_the_store)
        self._store_refusal = store_refusal
        self._credentials_refused = False  # the last bind's refusal named our credentials
        self._ever_bound = False  # a bind succeeded since start (see _connect_and_bind)
        self.log = logger or _log
        self.receipt_ids = ReceiptIdForm(config.receipt_id, self._id_form_learnt)
        self._on_inbound = on_inbound
        self._validity = validity_period(config.validity_hours)
        self._window = WindowSlots(config.window)
        self._bucket = (
            TokenBucket(config.max_per_second, burst=max(1.0, config.max_per_second / 20))
            if config.max_per_second
            else None
        )
        transceiver = config.bind_mode == "transceiver"
        modes = ["transceiver"] if transceiver else ["transmitter", "receiver"]
        self._links: dict[str, _EsmeLink | None] = dict.fromkeys(modes)
        self._submit_mode = modes[0]
        self._runners: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.proofs = ProofSaver(on_inbound.answers_proven, self._tasks, self.log)
        self._stopping = False
        self._lost: dict[tuple[str, str], int] = {}  # (session, silent|closed) -> links
        self._withheld = False  # see withhold
        # parts that reached a slot while withheld: they wait here, unsent (a slot would go
        # to the next one and park it too: the window's queue drains in here)
        self._parked: list[tuple[OutboundPart, asyncio.Future[SubmitOutcome]]] = []
        self._rng = random.Random()
        self._pace = AdaptivePace()  # a throttling SMSC is followed, not hammered
        self._pace_turn = asyncio.Lock()
        self._cap_turn = asyncio.Lock()
        self._pacing: set[asyncio.Task[bool]] = set()  # parts waiting for their turn, in a slot
        self._tls = client_tls(name, config)  # built once: a bad file fails at start-up
        # kept from start(): asking asyncio for it costs a getpid syscall per call on 3.11
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbound: TurnBatch[_Received] | None = None  # made on the loop, when needed

    # --- Connector -----------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        link = self._links[self._submit_mode]
        return link is not None and link.can_submit

    def withhold(self, withheld: bool) -> None:
        self._withheld = withheld
        if not withheld:  # the parked parts take their turn for a slot again, in order
            parked, self._parked = self._parked, []
            for part, outcome in parked:
                if not outcome.done():
                    self._window.take(partial(self._send_in_slot, part, outcome))

    def links_lost(self) -> dict[tuple[str, str], int]:
        return dict(self._lost)

    def binds(self) -> dict[str, bool]:
        """Each SMPP session kept (transceiver, or transmitter and receiver): bound now?"""
        return {mode: link is not None and link.is_bound for mode, link in self._links.items()}

    async def start(self) -> None:
        if self._runners:
            return
        self._loop = asyncio.get_running_loop()
        self._inbound = None
        self._stopping = False
        self._runners = [
            asyncio.create_task(self._run(mode), name=f"smpp:{self.name}:{mode}")
            for mode in self._links
        ]

    def refuse_parked(self) -> None:
        parked, self._parked = self._parked, []
        for _, outcome in parked:  # never left
            if not outcome.done():
                outcome.set_exception(self._stopping_refusal())

    async def stop(self) -> None:
        self._stopping = True
        self.refuse_parked()
        for waiting in self._pacing:  # parts waiting for their turn of the pace never left
            waiting.cancel()
        await asyncio.gather(*self._pacing, return_exceptions=True)
        grace = min(self.config.response_timeout, 5.0)
        if self._tasks:  # let inbound handlers finish (and be acknowledged) first
            await asyncio.wait(set(self._tasks), timeout=grace)
            for task in self._tasks:
                task.cancel()  # unacknowledged: the SMSC will deliver it again
        links = [link for link in self._links.values() if link]
        await asyncio.gather(*(self._unbind(link, grace) for link in links))
        with contextlib.suppress(TimeoutError):  # its unbind's answer proved every answer
            async with asyncio.timeout(grace):
                await self.proofs.save_now(links)
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        self._runners = []

    def submit_many(self, parts: Sequence[OutboundPart]) -> list[asyncio.Future[SubmitOutcome]]:
        """Each part's outcome, as ``submit`` gives it, with no task per part: a part leaves
        when a window slot is free, in line with the others waiting for one (and, paced, when
        its turn of the pace comes). Cancelling its future before then gives the part up (its
        slot goes on to the next)."""
        loop = self._loop or asyncio.get_running_loop()
        outcomes: list[asyncio.Future[SubmitOutcome]] = []
        for part in parts:
            outcome: asyncio.Future[SubmitOutcome] = loop.create_future()
            outcomes.append(outcome)
            if not self.is_up or self._stopping:
                outcome.set_exception(TransientError(f"smpp connector {self.name} is not bound"))
            else:
                self._window.take(partial(self._send_in_slot, part, outcome))
        return outcomes

    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        """One part, as ``submit_many`` sends it."""
        (outcome,) = self.submit_many([part])
        return await outcome

    def _send_in_slot(self, part: OutboundPart, outcome: asyncio.Future[SubmitOutcome]) -> bool:
        """Send ``part`` in the window slot just handed to it; False if it did not keep the
        slot (given up meanwhile, stopping, or not sendable: ``outcome`` says which)."""
        if outcome.done():  # its caller gave it up while it waited
            return False
        if self._stopping:  # it waited for a slot while we began to stop: it never left
            outcome.set_exception(self._stopping_refusal())
            return False
        if self._withheld:
            self._parked.append((part, outcome))
            return False
        if self._bucket is not None or self._pace.rate is not None:
            # Paced (our cap, or the SMSC's pace learnt while it waited): it waits for its
            # turn in a task, holding the slot, so what queued before a throttle follows it.
            loop = self._loop or asyncio.get_running_loop()
            waiting = loop.create_task(self._send_in_turn(part, outcome))
            self._pacing.add(waiting)
            waiting.add_done_callback(partial(self._turn_ended, outcome))
            return True
        return self._send_now(part, outcome)

    async def _send_in_turn(
        self, part: OutboundPart, outcome: asyncio.Future[SubmitOutcome]
    ) -> bool:
        """Whether the part left (its slot is then the SMSC's until it answers)."""
        await self._wait_for_pace()
        if outcome.done():  # given up while it waited for its turn
            return False
        if self._stopping:
            outcome.set_exception(self._stopping_refusal())
            return False
        if self._withheld:
            self._parked.append((part, outcome))
            return False
        return self._send_now(part, outcome)

    def _turn_ended(self, outcome: asyncio.Future[SubmitOutcome], task: asyncio.Task[bool]) -> None:
        """A paced part's slot is freed here unless it left: a task cancelled by stop() before
        its first step never runs a line of its own, and its slot and outcome were left for
        good (the dispatcher's stop then waited its whole grace)."""
        self._pacing.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is None and not task.cancelled() and task.result():
            return
        self._window.release()
        if outcome.done() or (error is None and not task.cancelled()):  # or parked
            return
        if error is None:  # cancelled by stop(): the part never left
            outcome.set_exception(self._stopping_refusal())
        else:  # a bug of ours while it waited: its caller retries it, the log says why
            self.log.error("smpp.submit.turn_failed", exc_info=error)
            outcome.set_exception(TransientError(f"smpp connector {self.name}: {error!r}"))

    def _stopping_refusal(self) -> TransientError:
        """For a part that waited (for a slot, or its turn) while we began to stop: it never
        left, so it is not counted against the part."""
        return TransientError(f"smpp connector {self.name} is stopping")

    def _send_now(self, part: OutboundPart, outcome: asyncio.Future[SubmitOutcome]) -> bool:
        try:
            sent = self._send_submit(part)
        except Exception as exc:  # not bound (TransientError), unencodable (PermanentError)
            outcome.set_exception(exc)
            return False
        # The slot is held until the SMSC answers (or the link gives up on it), even if the
        # caller gives up meanwhile: the window counts what the SMSC has outstanding.
        sent.add_done_callback(partial(self._answered, outcome))
        return True

    def _answered(self, outcome: asyncio.Future[SubmitOutcome], sent: asyncio.Future[Pdu]) -> None:
        """The link's future is done: free its window slot, and give the caller (if it still
        waits) the outcome."""
        error = None if sent.cancelled() else sent.exception()
        if isinstance(error, NoAnswer):  # still the SMSC's until it answers late or
            error.late.add_done_callback(self._window.release_on_done)  # cannot any more
        else:
            self._window.release()
        if outcome.done():  # given up by its caller
            return
        if sent.cancelled():
            outcome.cancel()
        elif isinstance(error, NoAnswer):  # sent: the SMSC may have it (timeout, link died)
            late = _late_outcome(error.late)
            outcome.set_exception(SubmitUnanswered(f"smpp connector {self.name}: {error}", late))
        elif error is not None:
            outcome.set_exception(error)
        else:
            self._settle(outcome, sent.result())

    def _settle(self, outcome: asyncio.Future[SubmitOutcome], response: Pdu) -> None:
        self._learn_pace(response.status)
        if response.status == CommandStatus.ESME_RINVBNDSTS:  # the link dropped itself
            # the part waits for the new bind, not counted as failed
            message = f"smpp connector {self.name}: the SMSC says we are not bound"
            outcome.set_exception(TransientError(message))
        else:
            if isinstance(response, SubmitSmResp) and response.status == 0:
                self.receipt_ids.saw_resp(response.message_id)
            outcome.set_result(_outcome(response))

    def _id_form_learnt(self, form: str) -> None:
        self.log.info("smpp.receipt.id_form_learnt", extra={"connector": self.name, "form": form})

    def _learn_pace(self, status: int) -> None:
        now = (self._loop or asyncio.get_running_loop()).time()
        if status in SLOW_DOWN_STATUSES:
            self._pace.refused(now)
            self.log.info("smpp.throttled", extra={"connector": self.name, "pace": self._pace.rate})
        elif status == CommandStatus.ESME_ROK:
            self._pace.taken(now)

    async def _wait_for_pace(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        if self._bucket is not None:  # our own cap: one waiter at a time books the next
            # slot, so after a stall of the loop at most a burst leaves at once; slots booked
            # ahead by every waiter all fell due in the stall and left together, over the cap
            async with self._cap_turn:
                delay = self._bucket.reserve(loop.time())
                if delay > 0:
                    await asyncio.sleep(delay)
        if self._pace.rate is not None:  # the pace the SMSC taught us: it changes as we go,
            async with self._pace_turn:  # so one waiter at a time takes the next slot
                delay = self._pace.delay(loop.time())
                if delay > 0:
                    await asyncio.sleep(delay)

    def _send_submit(self, part: OutboundPart) -> asyncio.Future[Pdu]:
        link = self._links[self._submit_mode]
        if link is None or not link.can_submit:
            raise TransientError(f"smpp connector {self.name} is not bound")
        try:
            return link.request(self._submit_sm(part, link.session.next_sequence()))
        except NotSendableNow as exc:  # the link's state, not the part: try it again later
            raise TransientError(f"smpp connector {self.name}: {exc}") from exc
        except (LocalProtocolError, ValueError) as exc:
            raise PermanentError(f"cannot encode part {part.part_id}: {exc}") from exc

    # --- helpers used by links -----------------------------------------------------------

    def _payload(self, part: OutboundPart) -> bytes:
        """GSM text re-encoded for an SMSC that wants IA5 (1) or Latin-1 (3) instead of 0."""
        coding = self.config.gsm_data_coding
        if part.data_coding != 0 or coding not in SMSC_DEFAULT_CODECS:
            return part.payload
        text = decode_gsm7(part.payload)
        try:
            return text.encode(SMSC_DEFAULT_CODECS[coding])
        except UnicodeEncodeError:
            # the accept path sends a text this alphabet lacks as UCS-2 (service.alphabets):
            # only one queued before the connector's alphabet changed gets here
            self.log.warning(
                "smpp.text.replaced",
                extra={"connector": self.name, "part_id": part.part_id, "with": "?"},
            )
            return text.encode(SMSC_DEFAULT_CODECS[coding], "replace")

    def _submit_sm(self, part: OutboundPart, sequence: int) -> SubmitSm:
        esm_class, short_message, tlvs = build_part(
            self._payload(part), part.ref, part.total, part.seq, self.config.concat_method
        )
        data_coding = self.config.gsm_data_coding if part.data_coding == 0 else part.data_coding
        return SubmitSm(
            sequence=sequence,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=part.source,
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=part.destination,
            esm_class=esm_class,
            validity_period=self._validity,
            registered_delivery=1,
            data_coding=data_coding,
            short_message=short_message,
            tlvs=tlvs,
        )

    def received(self, item: _Received) -> None:
        """Stored and answered with the others of its loop turn (receipts in one write)."""
        if self._stopping:
            # stop() waits for the deliveries it found, then unbinds and closes: one stored
            # after that could not be answered, and the SMSC would send it again (a reply
            # posted twice). "Try again later": it comes again on the next bind.
            item.answer(CommandStatus.ESME_RX_T_APPN)
            return
        if self._inbound is None:
            loop = self._loop or asyncio.get_running_loop()
            self._inbound = TurnBatch(self._answer_many, self._tasks, loop)
        self._inbound.add(item)

    async def _answer_many(self, items: list[_Received]) -> None:
        statuses = await self._statuses(
            [(item.pdu, item.link.bind_id, item.number) for item in items]
        )
        for item, status in zip(items, statuses, strict=True):
            item.answer(status)

    async def handle_inbound(
        self, pdu: DeliverSm | DataSm, bind_id: str = "", number: int = 0
    ) -> int:
        """What the resp to ``pdu`` would say, once the handler has it (0x64 if it raised)."""
        (status,) = await self._statuses([(pdu, bind_id, number)])
        return CommandStatus.ESME_RX_T_APPN if status == MAY_BE_STORED else status

    async def _statuses(self, received: list[tuple[DeliverSm | DataSm, str, int]]) -> list[int]:
        """The handler's status for each (0x64 for all if it raised: the SMSC sends again)."""
        inbounds = [self._inbound_sm(*item) for item in received]
        try:
            return [int(status) for status in await self._on_inbound.handle_many(inbounds)]
        except Exception:
            self.log.exception("smpp.deliver_sm.handler_failed", extra={"connector": self.name})
            return [CommandStatus.ESME_RX_T_APPN] * len(inbounds)

    def _inbound_sm(self, pdu: DeliverSm | DataSm, bind_id: str, number: int) -> InboundSm:
        return InboundSm(
            connector=self.name,
            source=pdu.source_addr,
            destination=pdu.destination_addr,
            esm_class=pdu.esm_class,
            data_coding=pdu.data_coding,
            short_message=pdu.short_message if isinstance(pdu, DeliverSm) else b"",
            tlvs=MappingProxyType(dict(pdu.tlvs)),
            default_alphabet=self.config.gsm_data_coding,
            receipt_id_form=self.config.receipt_id,
            receipt_ids=self.receipt_ids,
            source_ton=pdu.source_addr_ton,
            destination_ton=pdu.dest_addr_ton,
            bind_id=bind_id,
            bind_seq=number,
        )

    # --- connection lifecycle ------------------------------------------------------------

    async def _run(self, mode: str) -> None:
        attempt = 0
        while not self._stopping:
            try:
                link = await self._connect_and_bind(mode)
            except Exception:  # never let the reconnect loop die
                self.log.exception("smpp.connect.crashed", extra={"connector": self.name})
                link = None
            if link is None:
                attempt += 1
                delay = self._backoff(attempt)
                if self._credentials_refused:  # a carrier may lock the account after a few
                    delay = max(delay, CREDENTIALS_RETRY_S)
                    self._credentials_refused = False
                await asyncio.sleep(delay)
                continue
            lived = await self._serve_link(mode, link)
            attempt = attempts_after_link_lost(
                attempt, lived, self.config.reconnect_max, carried_traffic=link.traffic > 0
            )
            if not self._stopping:
                how = (mode, _how_lost(link))
                self._lost[how] = self._lost.get(how, 0) + 1
                self.log.warning(
                    "smpp.link.lost",
                    extra={
                        "connector": self.name,
                        "mode": mode,
                        "peer": self._peer,
                        "lived_s": round(lived, 3),
                    },
                )
                if how[1] == "stalled":
                    await self._wait_for_the_store(mode)
                await asyncio.sleep(self._backoff(attempt))

    async def _wait_for_the_store(self, mode: str) -> None:
        """A link given up as stalled (our store wedged) binds again only once the store takes
        writes: bound at once, the SMSC sends what it kept (the deliveries held unanswered and
        those refused behind them) into the same wedged store, the link pauses, stalls a
        minute later, and the binds churn. A stop ends the wait."""
        refusal = self._store_refusal()
        if refusal is None:
            return
        fields_ = {"connector": self.name, "mode": mode}
        self.log.warning("smpp.bind.waiting_for_store", extra={**fields_, "store": refusal})
        loop = asyncio.get_running_loop()
        began = loop.time()
        # looked at, not awaited: the store's health is asked (a file gone, a commit stalled),
        # it tells no one when it changes
        while not self._stopping and self._store_refusal() is not None:  # noqa: ASYNC110
            await asyncio.sleep(STORE_LOOK_EVERY_S)
        if not self._stopping:
            waited = round(loop.time() - began, 1)
            self.log.warning("smpp.bind.store_back", extra={**fields_, "waited_s": waited})

    async def _serve_link(self, mode: str, link: _EsmeLink) -> float:
        """Use ``link`` until it closes; how many seconds it lived."""
        loop = asyncio.get_running_loop()
        bound_at = loop.time()
        self._links[mode] = link
        try:
            await link.closed
        finally:
            if self._links[mode] is link:
                self._links[mode] = None
            if not link.closed.done():  # cancelled, or a graceful close that stalls
                link.abort()
        return loop.time() - bound_at

    def _backoff(self, attempt: int) -> float:
        config = self.config
        return reconnect_delay(
            attempt, config.reconnect_min, config.reconnect_max, self._rng.random()
        )

    async def _connect_and_bind(self, mode: str) -> _EsmeLink | None:
        fields_ = {"connector": self.name, "mode": mode, "peer": self._peer}
        try:
            link = await self._connect(mode)
        except (OSError, TimeoutError) as exc:
            error = str(exc) or self._no_answer()  # a timeout's own text is empty
            self.log.warning("smpp.connect.failed", extra={**fields_, "error": error})
            return None
        try:
            response = await link.request(self._bind_pdu(mode, link.session.next_sequence()))
        except TransientError as exc:
            error = str(exc)
            if not self.config.tls and not self._ever_bound:  # a TLS SMSC, clear-text bind
                error += " (if this SMSC speaks TLS, its URL is smpps://)"
            self.log.warning("smpp.bind.failed", extra={**fields_, "error": error})
            link.abort()
            return None
        except BaseException:  # cancelled (stop) or a bug: never leak the socket
            link.abort()
            raise
        if response.status or not link.session.is_bound:
            # A refusal, or an answer of another kind (a generic_nack with status 0, the resp
            # of another bind mode): the session is not bound, and would send nothing.
            status = status_name(response.status) if response.status else type(response).__name__
            credentials = response.status in CREDENTIAL_REFUSALS
            self._credentials_refused = credentials
            wait = {"next_try_s": CREDENTIALS_RETRY_S} if credentials else {}
            self.log.error("smpp.bind.refused", extra={**fields_, "status": status, **wait})
            link.abort()
            return None
        self._ever_bound = True  # a later bind timeout is a hung SMSC, not a TLS one
        self.log.info("smpp.bind.ok", extra={**fields_, "peer": link.peer})
        return link

    @property
    def _peer(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _no_answer(self) -> str:
        timeout = self.config.response_timeout
        if not self.config.tls:
            return f"no answer within {timeout:g} s (TCP connect)"
        # a clear-text SMSC reads the ClientHello as the start of a PDU, and waits for the rest
        return (
            f"no answer within {timeout:g} s (TCP connect or TLS handshake; if this SMSC "
            "speaks plain SMPP, its URL is smpp://)"
        )

    async def _connect(self, mode: str) -> _EsmeLink:
        config = self.config
        async with asyncio.timeout(config.response_timeout):
            _, link = await asyncio.get_running_loop().create_connection(
                lambda: _EsmeLink(self, mode),
                config.host,
                config.port,
                ssl=self._tls,
            )
        return link

    def _bind_pdu(self, mode: str, sequence: int) -> Bind:
        config = self.config
        return _MODE_BINDS[mode](
            sequence=sequence,
            system_id=config.system_id,
            password=config.password,
            system_type=config.system_type,
        )

    async def _unbind(self, link: _EsmeLink, grace: float) -> None:
        with contextlib.suppress(TransientError, LocalProtocolError, TimeoutError):
            async with asyncio.timeout(grace):
                await link.drained()
                await link.request(Unbind(sequence=link.session.next_sequence()))
        link.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await link.closed
