"""The one small interface the dispatcher talks to: submit parts, receive deliver_sm / data_sm."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from smsrelay.errors import TransientError
from smsrelay.quick_init import quick_init
from smsrelay.smpp.receipts import ReceiptIdForm


@quick_init
@dataclass(frozen=True)
class OutboundPart:
    part_id: int
    source: str  # international digits, no "+", sent TON 1 / NPI 1
    destination: str  # international digits, no "+", TON 1 / NPI 1
    payload: bytes  # this part's text octets WITHOUT UDH: unpacked GSM 03.38 (0) or UTF-16-BE (8)
    data_coding: int  # 0 or 8
    ref: int  # concatenation reference 0..65535 (stable across retries)
    total: int  # number of parts
    seq: int  # 1-based part number


@quick_init
@dataclass(frozen=True)
class SubmitOutcome:
    status: int  # submit_sm_resp command_status (0 = ok)
    message_id: str | None  # the SMSC's id for this part when status == 0


class SubmitUnanswered(TransientError):
    """A submit was sent and not answered (in time, or before the link died), yet the SMSC may
    have taken it: ``late`` gets its answer if one still comes, or None once it cannot (the
    link's late window is over, or the link is gone). Sending the part again before then
    could put it twice on a handset, so each such attempt counts."""

    def __init__(self, message: str, late: asyncio.Future[SubmitOutcome | None]) -> None:
        super().__init__(message)
        self.late = late


class SentIntoSilence(TransientError):
    """A submit that timed out on a link we then gave up as silent, whose bytes the SMSC's
    kernel never acknowledged (``carrier/sent_bytes``): a path that eats data, an MTU black
    hole, failed every queued message after five dead links. Sent again uncounted;
    ``may_have_left`` when it did leave our host (its ACKs may be what was lost)."""

    def __init__(self, message: str, *, may_have_left: bool) -> None:
        super().__init__(message)
        self.may_have_left = may_have_left


@quick_init
@dataclass(frozen=True)
class InboundSm:
    """A deliver_sm or data_sm as received (receipt or MO reply), before it is acknowledged."""

    connector: str
    source: str
    destination: str
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: Mapping[int, bytes]
    # How this SMSC writes its default alphabet (data_coding 0): 0 GSM 03.38, 1 IA5/ASCII,
    # 3 Latin-1; the link's gsm_data_coding.
    default_alphabet: int = 0
    # How this SMSC writes ids in receipts against its submit_sm_resp ids: the link's
    # receipt_id (auto, same, decimal, hex; see smpp.receipts.carrier_id_candidates).
    receipt_id_form: str = "auto"
    # The connector's own view of that form (learnt when it is auto), if it keeps one.
    receipt_ids: ReceiptIdForm | None = None
    # SMPP types of number (TON) of the addresses: 1 international (as we send), 2 national,
    # 0 unknown; the router reads national forms in the other party's country.
    source_ton: int = 1
    destination_ton: int = 1
    bind_id: str = ""  # the SMPP session it came in on ("" unknown)
    bind_seq: int = 0  # its number on that session, in arrival order (0 unknown)


# A status a handler may give an item instead of one for the wire: answered ESME_RX_T_APPN
# (the SMSC sends it again), though it may be stored already (its commit's outcome unknown):
# its answer can then never prove a re-send of it to be the person writing again.
MAY_BE_STORED = -1


class InboundHandler(Protocol):
    """Stores what a connector received. Each answer is the command_status for its resp: 0
    once committed; non-zero (e.g. ESME_RX_T_APPN 0x64) when it could not be stored, so the
    SMSC sends it again; MAY_BE_STORED when that refusal's write may have committed."""

    def handle_many(self, inbounds: Sequence[InboundSm], /) -> Awaitable[list[int]]:
        """What came in one loop turn, together (receipts in one write); per item its status."""
        ...

    def answers_proven(self, bind_id: str, through: int, /) -> Awaitable[None]:
        """The SMSC has read our answers to the deliveries numbered up to ``through`` on
        session ``bind_id`` (``carrier/answer_proof``): none of them can come again."""
        ...


class Connector(Protocol):
    name: str

    @property
    def is_up(self) -> bool: ...

    def binds(self) -> dict[str, bool]:
        """Each session this connector keeps with its SMSC (by mode) and whether it is bound:
        what an operator watches, since receipts and replies need the receiving one too."""

    def refuse_parked(self) -> None:
        """At a stop: the parts waiting unsent while withheld fail as never sent (the stop
        need not wait for them)."""

    def links_lost(self) -> dict[tuple[str, str], int]:
        """(session, how) -> links lost since start: ``silent`` when we gave one up (it
        stopped answering, or took our submits and acknowledged nothing: a link bound again
        and again that carries nothing), ``closed`` when it closed under us."""

    async def start(self) -> None:
        """Begin connecting in the background; reconnect forever with capped backoff + jitter."""

    async def stop(self) -> None:
        """Unbind cleanly, waiting briefly for outstanding responses."""

    def withhold(self, withheld: bool) -> None:
        """While withheld, a part that reaches a window slot is not sent: it waits, unsent,
        until sending resumes (or a stop refuses it as never sent). The gateway cannot store
        what the SMSC would answer (a full disk), and an answer not stored is a part sent
        again after a restart."""

    def submit_many(self, parts: Sequence[OutboundPart]) -> list[asyncio.Future[SubmitOutcome]]:
        """Send parts; per part a future of its outcome, or of TransientError if not bound or
        on loss, and of its subclass SubmitUnanswered on a response timeout. Cancelling one
        gives its part up if it has not left yet."""


def submitted_each(
    submit: Callable[[OutboundPart], Awaitable[SubmitOutcome]], parts: Sequence[OutboundPart]
) -> list[asyncio.Future[SubmitOutcome]]:
    """``submit_many`` from a coroutine that sends one part: a task per part."""
    return [asyncio.ensure_future(submit(part)) for part in parts]
