"""One SMPP session, sans I/O: bind state, sequence numbers, the outstanding window.

The same tables serve both roles: who may issue which request in which state, and which
state a PDU leads to, whichever side sent it. Time is always passed in (``now``, seconds on
any monotonic clock); the session never reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from smsrelay.quick_init import quick_init
from smsrelay.smpp.codec import NO_LIMIT, Event, PduReader, encode
from smsrelay.smpp.errors import NotSendableNow, RemoteProtocolError
from smsrelay.smpp.pdu import RESPONSE_BIT, CommandId, CommandStatus, Pdu

MAX_SEQUENCE = 0x7FFFFFFF


@dataclass(frozen=True)
class StrayResponse:
    """A response that does not answer the request its sequence number names: dropped (that
    request stays outstanding until its own answer or its timeout)."""

    pdu: Pdu
    request: CommandId

    @property
    def command_id(self) -> int:
        return self.pdu.command_id


class Role(StrEnum):
    ESME = "esme"  # the client: binds, submits
    SMSC = "smsc"  # the server: accepts binds, delivers


class BindState(StrEnum):
    OPEN = "open"
    BINDING_TX = "binding_tx"
    BINDING_RX = "binding_rx"
    BINDING_TRX = "binding_trx"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBINDING = "unbinding"
    CLOSED = "closed"


S = BindState
C = CommandId
_BINDS = frozenset({C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER})
_ALWAYS = frozenset({C.ENQUIRE_LINK})
_DELIVERIES = frozenset({C.DELIVER_SM, C.DATA_SM})

# Requests each side may issue, by state.
ESME_REQUESTS: dict[BindState, frozenset[CommandId]] = {
    S.OPEN: _BINDS | _ALWAYS,
    S.BOUND_TX: frozenset({C.SUBMIT_SM, C.DATA_SM, C.UNBIND}) | _ALWAYS,
    S.BOUND_RX: frozenset({C.UNBIND}) | _ALWAYS,
    S.BOUND_TRX: frozenset({C.SUBMIT_SM, C.DATA_SM, C.UNBIND}) | _ALWAYS,
    S.UNBINDING: frozenset({C.UNBIND}) | _ALWAYS,
}
SMSC_REQUESTS: dict[BindState, frozenset[CommandId]] = {
    S.OPEN: _ALWAYS,
    S.BOUND_TX: frozenset({C.UNBIND}) | _ALWAYS,
    S.BOUND_RX: frozenset({C.DELIVER_SM, C.DATA_SM, C.ALERT_NOTIFICATION, C.UNBIND}) | _ALWAYS,
    S.BOUND_TRX: frozenset({C.DELIVER_SM, C.DATA_SM, C.ALERT_NOTIFICATION, C.UNBIND}) | _ALWAYS,
    S.UNBINDING: frozenset({C.UNBIND}) | _ALWAYS,  # a link check while unbind_resp comes
}

# (state, command, status is ok) -> next state, whichever side sent the PDU.
TRANSITIONS: dict[tuple[BindState, CommandId, bool], BindState] = {
    (S.OPEN, C.BIND_TRANSMITTER, True): S.BINDING_TX,
    (S.OPEN, C.BIND_RECEIVER, True): S.BINDING_RX,
    (S.OPEN, C.BIND_TRANSCEIVER, True): S.BINDING_TRX,
    (S.BINDING_TX, C.BIND_TRANSMITTER_RESP, True): S.BOUND_TX,
    (S.BINDING_TX, C.BIND_TRANSMITTER_RESP, False): S.OPEN,
    (S.BINDING_RX, C.BIND_RECEIVER_RESP, True): S.BOUND_RX,
    (S.BINDING_RX, C.BIND_RECEIVER_RESP, False): S.OPEN,
    (S.BINDING_TRX, C.BIND_TRANSCEIVER_RESP, True): S.BOUND_TRX,
    (S.BINDING_TRX, C.BIND_TRANSCEIVER_RESP, False): S.OPEN,
    (S.BINDING_TX, C.GENERIC_NACK, False): S.OPEN,
    (S.BINDING_RX, C.GENERIC_NACK, False): S.OPEN,
    (S.BINDING_TRX, C.GENERIC_NACK, False): S.OPEN,
    (S.BOUND_TX, C.UNBIND, True): S.UNBINDING,
    (S.BOUND_RX, C.UNBIND, True): S.UNBINDING,
    (S.BOUND_TRX, C.UNBIND, True): S.UNBINDING,
    (S.UNBINDING, C.UNBIND_RESP, True): S.CLOSED,
    (S.UNBINDING, C.UNBIND_RESP, False): S.CLOSED,
}

_STATEFUL = frozenset(command for _, command, _ in TRANSITIONS)
BOUND_STATES = frozenset({S.BOUND_TX, S.BOUND_RX, S.BOUND_TRX})
CAN_SUBMIT = frozenset({S.BOUND_TX, S.BOUND_TRX})
CAN_RECEIVE = frozenset({S.BOUND_RX, S.BOUND_TRX})
WINDOWED = frozenset({C.SUBMIT_SM, C.DELIVER_SM, C.DATA_SM})


@quick_init
@dataclass(frozen=True, slots=True)
class Outstanding:
    command_id: CommandId
    deadline: float


class Session:
    """Bind state, sequence numbers and outstanding requests of one connection."""

    def __init__(
        self,
        role: Role,
        *,
        window: int = 100,
        response_timeout: float = 10.0,
        enquire_link_interval: float = 30.0,
        now: float = 0.0,
        last_sequence: int = 0,
    ) -> None:
        self.role = role
        self.state = BindState.OPEN
        self.window = window
        self.response_timeout = response_timeout
        self.enquire_link_interval = enquire_link_interval
        self._mine = ESME_REQUESTS if role is Role.ESME else SMSC_REQUESTS
        self._theirs = SMSC_REQUESTS if role is Role.ESME else ESME_REQUESTS
        self._reader = PduReader()
        self._sequence = last_sequence
        self._outstanding: dict[int, Outstanding] = {}
        self._in_window = 0
        self._last_received = now
        self._enquire_pending = False

    # --- queries -------------------------------------------------------------------------

    @property
    def is_bound(self) -> bool:
        return self.state in BOUND_STATES

    @property
    def in_flight(self) -> int:
        """Outstanding submit_sm / deliver_sm / data_sm requests (those the window counts)."""
        return self._in_window

    @property
    def window_full(self) -> bool:
        return self._in_window >= self.window

    def outstanding(self) -> dict[int, Outstanding]:
        return dict(self._outstanding)

    def next_deadline(self) -> float | None:
        first = next(iter(self._outstanding.values()), None)
        return None if first is None else first.deadline

    def enquire_link_due(self, now: float) -> bool:
        """Bound, silent for enquire_link_interval, and no enquire_link outstanding."""
        return (
            self.state in BOUND_STATES
            and not self._enquire_pending
            and now - self._last_received >= self.enquire_link_interval
        )

    # --- sending -------------------------------------------------------------------------

    def next_sequence(self) -> int:
        self._sequence = self._sequence % MAX_SEQUENCE + 1
        return self._sequence

    def send(self, pdu: Pdu, now: float) -> bytes:
        """Check ``pdu`` against the state and window, track it, and return its bytes."""
        command_id = pdu.command_id
        data = encode(pdu)  # before any bookkeeping: an unsendable PDU leaves no trace
        if not command_id & RESPONSE_BIT:
            self._send_request(command_id, pdu.sequence, now)
        self._transition(command_id, pdu.status == 0)
        return data

    def _send_request(self, command_id: CommandId, sequence: int, now: float) -> None:
        if command_id not in self._mine.get(self.state, frozenset()):
            raise NotSendableNow(f"{command_id.name} not allowed in state {self.state.value}")
        if command_id in WINDOWED:
            if self._in_window >= self.window:
                raise NotSendableNow("window full")
            self._in_window += 1
        if sequence in self._outstanding:
            raise NotSendableNow(f"sequence {sequence} already outstanding")
        if command_id is C.ENQUIRE_LINK:
            self._enquire_pending = True
        self._outstanding[sequence] = Outstanding(command_id, now + self.response_timeout)

    # --- receiving -----------------------------------------------------------------------

    @property
    def held_back(self) -> bool:
        """Whole PDUs received and kept undecoded by ``receive``'s ``max_requests``."""
        return self._reader.held_back

    def receive(
        self, data: bytes, now: float, max_requests: int = NO_LIMIT
    ) -> list[Event | StrayResponse]:
        """PDUs read from ``data`` (and what was held back), at most ``max_requests`` of them
        requests; a request not allowed now comes out as an error to answer, a response of
        another command than its sequence's request as a StrayResponse."""
        self._last_received = now
        events: list[Event | StrayResponse] = list(self._reader.feed(data, max_requests))
        for i, event in enumerate(events):
            if not isinstance(event, RemoteProtocolError | StrayResponse):
                checked = self.accept(event)
                if checked is not None:
                    events[i] = checked
        return events

    def accept(self, pdu: Pdu) -> RemoteProtocolError | StrayResponse | None:
        """Apply a received PDU to the state; the error to answer it with, if refused."""
        command_id = pdu.command_id
        if command_id & RESPONSE_BIT:
            stray = self._stray(pdu)
            if stray is not None:
                return stray
            request = self._complete(pdu.sequence)
            if request is not None:
                self._transition(command_id, pdu.status == 0)
            return None
        if command_id not in self._theirs.get(self.state, frozenset()):
            return RemoteProtocolError(
                self._refusal_status(command_id),
                pdu.sequence,
                f"{command_id.name} not allowed in state {self.state.value}",
                command_id=command_id,
            )
        self._transition(command_id, True)
        return None

    def _refusal_status(self, command_id: CommandId) -> int:
        if command_id in _BINDS and self.state in BOUND_STATES:
            return CommandStatus.ESME_RALYBND
        if command_id in _DELIVERIES and self.state is BindState.UNBINDING:
            # We are leaving: "try again later", so the SMSC keeps it for the next bind
            # (some drop a message refused with ESME_RINVBNDSTS for good).
            return CommandStatus.ESME_RX_T_APPN
        return CommandStatus.ESME_RINVBNDSTS

    def _stray(self, pdu: Pdu) -> StrayResponse | None:
        """A response whose sequence is a request of another command (an enquire_link_resp
        on a submit's number): taken as that request's answer, a submit went again."""
        request = self._outstanding.get(pdu.sequence)
        if request is None or pdu.command_id is C.GENERIC_NACK:
            return None
        if pdu.command_id == request.command_id | RESPONSE_BIT:
            return None
        if request.command_id in _BINDS and pdu.command_id & ~RESPONSE_BIT in _BINDS:
            return None  # another bind's resp: the bind's answer, a refusal (the client's)
        return StrayResponse(pdu, request.command_id)

    def _complete(self, sequence: int) -> Outstanding | None:
        request = self._outstanding.pop(sequence, None)
        if request is not None:
            if request.command_id in WINDOWED:
                self._in_window -= 1
            elif request.command_id is C.ENQUIRE_LINK:
                self._enquire_pending = False
        return request

    def _transition(self, command_id: CommandId, ok: bool) -> None:
        if command_id not in _STATEFUL:
            return
        new = TRANSITIONS.get((self.state, command_id, ok))
        if new is not None:
            self.state = new

    # --- time ----------------------------------------------------------------------------

    def expire(self, now: float) -> list[tuple[int, Outstanding]]:
        """Remove and return the requests whose response deadline has passed."""
        expired = []
        for sequence, request in self._outstanding.items():
            if request.deadline > now:
                break  # deadlines grow with insertion order (a constant timeout)
            expired.append((sequence, request))
        for sequence, _ in expired:
            self._complete(sequence)
        return expired

    def close(self) -> list[int]:
        """The connection is gone: forget every outstanding request and return their sequences."""
        lost = list(self._outstanding)
        self._outstanding.clear()
        self._in_window = 0
        self._enquire_pending = False
        self.state = BindState.CLOSED
        return lost


# --- pure policies used by the transports --------------------------------------------------


@dataclass(slots=True)
class ReadingClock:
    """The clock a peer's answers are timed on: the loop's, stopped while we do not read our
    socket (flow control). An answer the peer sent in time waits unread behind what we
    paused on; that wait is ours, not the peer's."""

    paused_for: float = 0.0  # the pauses that ended, in all
    paused_at: float | None = None  # when the pause under way began

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def pause(self, now: float) -> None:
        if self.paused_at is None:
            self.paused_at = now

    def resume(self, now: float) -> None:
        if self.paused_at is not None:
            self.paused_for += now - self.paused_at
            self.paused_at = None

    def time(self, now: float) -> float:
        """``now`` on this clock (it stands still while paused)."""
        return (now if self.paused_at is None else self.paused_at) - self.paused_for

    def pause_span(self, now: float) -> float:
        """How long the pause under way has lasted (0: reading)."""
        return 0.0 if self.paused_at is None else now - self.paused_at


@dataclass(slots=True)
class TokenBucket:
    """Throughput cap: ``reserve(now)`` takes a token and says how long to wait for it."""

    rate: float
    burst: float = 1.0
    _tokens: float = field(default=0.0, init=False)
    _stamp: float | None = field(default=None, init=False)

    def _refill(self, now: float) -> None:
        if self._stamp is None:
            self._tokens, self._stamp = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def reserve(self, now: float) -> float:
        """Take a token (possibly one not there yet): seconds to wait before using it."""
        self._refill(now)
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def try_take(self, now: float) -> bool:
        """Take a token only if one is there (a server refusing what is over the rate)."""
        self._refill(now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(slots=True)
class AdaptivePace:
    """The SMSC's own rate, learnt from its throttling, the way TCP finds a link's: unpaced
    until it first says "slow down" (ESME_RTHROTTLED / ESME_RMSGQFUL); then paced from a little
    under what it was taking, doubling each second while it takes everything (+1 a success),
    cut on each refusal, then raised by ``step`` a success, and by at least 1/s each second
    (TCP's one segment a round trip: after cuts to a few a second, 5 % a second took half a
    minute to send 30 parts); unpaced again after ``forget_after`` seconds without a refusal."""

    floor: float = 1.0  # submits per second, at the least
    first_guess: float = 10.0  # the least to start from (a first burst says little)
    step: float = 0.05  # per success, in submits per second
    cut: float = 0.7
    forget_after: float = 60.0
    _bucket: TokenBucket | None = field(default=None, init=False)
    # taken in the current and the previous whole second (a deque per success costs more)
    _second: int = field(default=0, init=False)
    _this_second: int = field(default=0, init=False)
    _last_second: int = field(default=0, init=False)
    _last_refusal: float = field(default=float("-inf"), init=False)
    _finding: bool = field(default=False, init=False)  # no refusal since pacing began

    @property
    def rate(self) -> float | None:
        return None if self._bucket is None else self._bucket.rate

    def delay(self, now: float) -> float:
        """Take a slot; how long to wait for it (0 when unpaced)."""
        if self._bucket is not None and now - self._last_refusal > self.forget_after:
            self._bucket = None
        return 0.0 if self._bucket is None else self._bucket.reserve(now)

    def taken(self, now: float) -> None:
        if self._bucket is not None:
            rate = self._bucket.rate
            self._bucket.rate += 1.0 if self._finding else max(self.step, 1.0 / rate)
            return
        second = int(now)
        if second != self._second:
            self._last_second = self._this_second if second == self._second + 1 else 0
            self._second, self._this_second = second, 0
        self._this_second += 1

    def _taken_in_the_last_second(self, now: float) -> float:
        second = int(now)
        if second == self._second:
            current, previous = self._this_second, self._last_second
        elif second == self._second + 1:
            current, previous = 0, self._this_second
        else:
            return 0.0
        return current + previous * (1.0 - (now - second))  # the part of it still in range

    def refused(self, now: float) -> None:
        if now - self._last_refusal < 0.2:
            return  # one cut for a wave of refusals sent before the first came back
        self._last_refusal = now
        if self._bucket is None:
            taking = self._taken_in_the_last_second(now)
            self._bucket = TokenBucket(max(self.floor, self.first_guess, 0.9 * taking))
            self._finding = True
        else:
            self._bucket.rate = max(self.floor, self._bucket.rate * self.cut)
            self._finding = False


def attempts_after_link_lost(
    attempt: int, lived: float, stable_after: float, *, carried_traffic: bool = False
) -> int:
    """The backoff step after a bound link closed: a link that lived ``stable_after`` seconds,
    or carried traffic (answers, receipts), starts over; one the SMSC drops just after the
    bind, before anything passed, keeps climbing (no tight loop)."""
    return 0 if lived >= stable_after or carried_traffic else attempt + 1


def reconnect_delay(attempt: int, minimum: float, maximum: float, jitter: float) -> float:
    """Capped exponential backoff; ``jitter`` in [0, 1) scales it into [50 %, 100 %)."""
    base = min(maximum, minimum * 2.0 ** min(attempt, 32))
    return base * (0.5 + jitter / 2)
