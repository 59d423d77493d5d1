"""Plain frozen records that cross the store's boundary (no SQL types leak out)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from smsrelay.domain.ip_access import Network
from smsrelay.quick_init import quick_init


@quick_init
@dataclass(frozen=True)
class Account:
    id: int
    name: str
    credit_micros: int
    disabled: bool
    quiet_hours: bool
    region: str
    marketing: bool
    reply_url: str | None
    webhook_secret: str | None
    reassemble_replies: bool
    created_at: float
    demo_key: str | None = None
    # where its API key may be used from (code 96 elsewhere); empty: anywhere
    allowed_ips: tuple[Network, ...] = ()


@quick_init
@dataclass(frozen=True)
class NumberRecord:
    msisdn: str
    account_name: str
    connector: str


@quick_init
@dataclass(frozen=True)
class NewMessage:
    account_id: int
    sender: str
    recipient: str
    region: str
    text: str
    encoding: str
    nb_sms: int
    cost_micros: int
    tag: str | None
    url_response: str | None
    url_dlr: str | None
    stop_sms: bool
    sandbox: bool
    created_at: float
    due_at: float


@quick_init
@dataclass(frozen=True)
class PartView:
    id: int
    seq: int
    state: str
    attempts: int
    carrier_id: str | None
    stat: str | None
    err: str | None
    submitted_at: float | None
    done_at: float | None
    last_error: str | None


@quick_init
@dataclass(frozen=True)
class ReceiptView:
    part_id: int | None
    carrier_id: str
    stat: str
    err: str | None
    received_at: float


@quick_init
@dataclass(frozen=True)
class MessageView:
    id: int
    account_id: int
    sender: str
    recipient: str
    region: str
    text: str
    encoding: str
    nb_sms: int
    cost_micros: int
    tag: str | None
    url_response: str | None
    url_dlr: str | None
    stop_sms: bool
    sandbox: bool
    state: str
    connector: str
    created_at: float
    due_at: float
    final_at: float | None
    parts: tuple[PartView, ...] = ()
    receipts: tuple[ReceiptView, ...] = ()

    @property
    def charged_micros(self) -> int:
        """What it costs the account: nothing once cancelled, as it was refunded (a client
        adding up the status lookups' or the DLRs' costs must not count it)."""
        return 0 if self.state == "cancelled" else self.cost_micros


@quick_init
@dataclass(frozen=True)
class ClaimedPart:
    part_id: int
    message_id: int
    seq: int
    nb_sms: int
    attempts: int
    sender: str
    recipient: str
    text: str
    encoding: str


@quick_init
@dataclass(frozen=True, slots=True)
class TakenPart:
    """A part the SMSC took: its id there as given, and as receipts are matched to it."""

    part_id: int
    carrier_id: str
    carrier_key: str
    nb_sms: int | None  # 1: the message has this part only, no need to read its others


@quick_init
@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One post of a callback, as recorded."""

    webhook_id: int
    at: float
    status: int | None
    latency_ms: float | None
    error: str | None
    outcome: str  # 'delivered', 'pending' (retry at next_due) or 'failed' (gave up)
    next_due: float | None


@quick_init
@dataclass(frozen=True)
class DlrFacts:
    """What a delivery-report callback is built from, gathered in the receipt's transaction."""

    message: MessageView


@quick_init
@dataclass(frozen=True)
class ReplyFacts:
    """What a reply callback is built from."""

    reply_id: int
    msisdn: str
    virtual_number: str
    text: str
    keyword: str
    received_at: float
    concat: tuple[int, int, int] | None  # (ref, total, part) when this is one part of a long reply


@quick_init
@dataclass(frozen=True)
class CallbackBuilders:
    """Pure functions that turn facts into callback bodies (so the store owns no format)."""

    dlr: Callable[[DlrFacts], bytes]
    reply: Callable[[ReplyFacts], bytes]
    new_id: Callable[[], str]


@quick_init
@dataclass(frozen=True)
class InboundReply:
    connector: str
    msisdn: str
    virtual_number: str
    text: str
    keyword: str
    is_stop: Callable[[str], bool]  # applied to the whole text once every part is in
    received_at: float
    concat: tuple[int, int, int] | None = None  # (ref, total, part)
    bind_id: str = ""  # the SMPP session it came in on ("" unknown)
    bind_seq: int = 0  # its number on that session (0 unknown): see carrier/answer_proof
    # a part of a long reply: its octets and how to read them, for the text joined
    body: bytes | None = None
    data_coding: int = 0
    smsc_default: int = 0


@quick_init
@dataclass(frozen=True)
class ReplyOutcome:
    reply_id: int
    account_id: int | None
    linked_message_id: int | None
    callbacks: int
    stopped: bool


@quick_init
@dataclass(frozen=True)
class WebhookJob:
    id: int
    uuid: str
    account_id: int
    kind: str
    url: str
    body: bytes
    attempts: int  # every post so far (X-Smsrelay-Attempt)
    created_at: float  # when stored, or put back by a manual retry: the budget's start
    secret: str | None
    round_attempts: int  # the posts since then, which the backoff counts


@quick_init
@dataclass(frozen=True)
class WebhookView:
    id: int
    uuid: str
    kind: str
    url: str
    state: str
    attempts: int
    created_at: float
    due_at: float | None  # None: waiting for an earlier callback with its order key
    delivered_at: float | None
    last_error: str | None
    message_id: int | None
    reply_id: int | None
    history: tuple[tuple[float, int | None, float | None, str | None], ...] = field(default=())


@dataclass(frozen=True)
class StoreFigures:
    """The store's side of ``GET /metrics``."""

    now: float  # when this snapshot was read (the ages below count from it)
    parts: dict[str, int]  # state (queued, sending, submitted) -> parts
    overdue: dict[str, tuple[int, float]]  # connector -> (parts due, not sent; oldest due_at)
    callbacks_pending: int  # still to post (waiting or being posted)
    callbacks_oldest_pending: float | None  # when the oldest of them was stored
    # connector -> (parts claimed, not settled; when the oldest was claimed, None: unknown)
    sending: dict[str, tuple[int, float | None]] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True)
class CallbackBacklog:
    """Callbacks not delivered, for monitoring (``smsrelay status``)."""

    oldest_due_since: float | None  # the oldest not delivered yet; None: none waiting
    late: int  # how many have been due since before the cutoff asked for
    failed: int  # given up for good


@quick_init
@dataclass(frozen=True)
class StopAdded:
    id: int  # the STOP entry's
    cancelled: int  # messages that still waited for the person: cancelled and refunded


@quick_init
@dataclass(frozen=True)
class StopEntry:
    id: int
    phone: str
    created_at: float


@quick_init
@dataclass(frozen=True)
class IncomingReceipt:
    connector: str
    carrier_id: str
    candidate_keys: tuple[str, ...]  # normalised forms, the canonical one first
    stat: str
    err: str | None
    received_at: float


@quick_init
@dataclass(frozen=True)
class AccountSnapshot:
    account: Account
    waiting: int  # messages not sent yet (sandbox messages are never sent, so never counted)


# What retention deletes, in the order it does (store.purge_history's kinds).
PURGE_KINDS = ("messages", "replies", "callbacks", "unmatched receipts")


@quick_init
@dataclass(frozen=True)
class PurgeStep:
    """One chunk of a retention walk."""

    deleted: int
    last_id: int  # walk on from here
    done: bool  # reached rows newer than the cutoff (or the end)


@quick_init
@dataclass(frozen=True)
class ReplyView:
    """A stored reply (MO), as the CLI lists it."""

    id: int
    account_id: int | None  # None: sent to a number no account owns
    msisdn: str
    virtual_number: str
    text: str
    keyword: str
    message_id: int | None  # the message it was taken to answer
    received_at: float
