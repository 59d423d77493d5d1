"""One SMPP connection in either role (ESME or SMSC), shared by client and server.

``SmppLink`` is an :class:`asyncio.Protocol` that feeds bytes to a sans-I/O
:class:`~smsrelay.smpp.session.Session`, matches responses to requests by sequence number,
coalesces writes into one ``transport.write`` per loop turn, runs one timer per connection
for response deadlines and enquire_link, and stops reading at a mark of requests unanswered
(flow control): the peer's deadlines stand still meanwhile, for at most PAUSED_AT_MOST.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from smsrelay.carrier.connector import SentIntoSilence
from smsrelay.carrier.sent_bytes import Fate, GaveUp, SentBytes, reset_now, standing
from smsrelay.errors import TransientError
from smsrelay.logs import SparseLine
from smsrelay.smpp.codec import NO_LIMIT, Event
from smsrelay.smpp.errors import NotSendableNow, RemoteProtocolError
from smsrelay.smpp.pdu import (
    RESPONSE_BIT,
    BindReceiverResp,
    BindTransceiverResp,
    BindTransmitterResp,
    CommandId,
    DataSmResp,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    response_to,
    status_name,
)
from smsrelay.smpp.session import (
    BindState,
    ReadingClock,
    Role,
    Session,
    StrayResponse,
)

# --- one connection, either role -----------------------------------------------------------


# A submit_sm_resp that comes after its timeout is still taken for this many timeouts (and no
# later than LATE_ANSWER_LIMIT seconds after the submit, within the store's 120 s for receipts
# that come first): the SMSC may well have it, and sending it again risks a duplicate.
LATE_ANSWER_TIMEOUTS = 6
LATE_ANSWER_LIMIT = 100.0
# After our half-close, how long the peer gets to close its side before we close anyway.
LINGER = 2.0
# An answer to no request we wait for is logged at most once per this many seconds.
UNMATCHED_SAID_EVERY_S = 1.0
# Flow control: the peer's requests we have read and not answered yet (deliver_sm waiting for
# their store write) are at most this many; at the mark the link stops reading its socket, and
# reads on once its answers bring them down to the low mark. An SMSC's window is 10 to 100:
# only one that pipelines without a window (a flood) meets it.
INBOUND_HIGH_WATER = 1000
INBOUND_LOW_WATER = 500
# While reading is paused the peer's answers wait unread behind what it sent before them, so
# its deadlines stand still (ReadingClock). A pause this long means our side (the store) is
# wedged: the link is unbound, reading on (requests refused, answers taken), and bound again.
PAUSED_AT_MOST = 60.0


class NoAnswer(TransientError):
    """A request was sent and its answer did not come: the peer may have acted on it all the
    same. ``late`` gets the answer if it still comes, or None once it cannot."""

    def __init__(self, message: str, late: asyncio.Future[Pdu | None]) -> None:
        super().__init__(message)
        self.late = late


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SmppLink(asyncio.Protocol):
    """One SMPP connection: session bookkeeping, response matching, batched writes."""

    def __init__(
        self,
        role: Role,
        *,
        window: int,
        response_timeout: float,
        enquire_link_interval: float,
        logger: logging.Logger,
        name: str = "",
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.session = Session(
            role,
            window=window,
            response_timeout=response_timeout,
            enquire_link_interval=enquire_link_interval,
            now=self.loop.time(),
        )
        self.name = name
        self.log = logger
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.peer = ""
        self.enquire_links_received = 0
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        # submit_sm sequences whose answer timed out -> (until when, the late answer or None)
        self._late: dict[int, tuple[float, asyncio.Future[Pdu | None]]] = {}
        # where each request's bytes end in the stream: what our kernel says of them when we
        # give the link up tells which never reached the SMSC (see sent_bytes)
        self._sent = SentBytes()
        self._gave_up: GaveUp | None = None
        self.given_up_silent = False  # we ended it: it stopped answering, or ate our bytes
        self.given_up_stalled = False  # we ended it: reading paused PAUSED_AT_MOST on end
        # a peer sending answers to nothing, what we refuse (unknown commands) or stray
        # answers can send 30,000 a second: a line a second each, naming the last, counted
        every = UNMATCHED_SAID_EVERY_S
        self._unmatched = SparseLine(self.log, "smpp.response.unmatched", every, "responses")
        self._refused = SparseLine(self.log, "smpp.pdu.refused", every)
        self._strays = SparseLine(self.log, "smpp.response.stray", every)
        self.late_window = max(
            0.0, min(response_timeout * LATE_ANSWER_TIMEOUTS, LATE_ANSWER_LIMIT - response_timeout)
        )
        self._out: list[bytes] = []
        self._unsent: set[int] = set()  # requests whose bytes are still in _out
        self._void: set[int] = set()  # requests the peer refused unseen (see void_after)
        self._flush_handle: asyncio.Handle | None = None
        self._linger: asyncio.TimerHandle | None = None  # set once we have half-closed
        self._timer: asyncio.TimerHandle | None = None
        # FIFO of callers waiting for window room: a freed slot wakes exactly one of them
        # (an Event would wake every waiting receipt on every response).
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._tick_every = max(0.02, min(1.0, response_timeout / 10, enquire_link_interval / 4))
        # flow control (see INBOUND_HIGH_WATER): requests held for a later answer (hold)
        self.unanswered = 0
        self.unanswered_most = 0  # the most held at once on this link (tests, metrics)
        self.reading_pauses = 0  # times the link stopped reading at the mark
        self.high_water = INBOUND_HIGH_WATER
        self.low_water = INBOUND_LOW_WATER
        self._read_on_handle: asyncio.Handle | None = None
        self._clock = ReadingClock()  # the peer's deadlines run on it
        self.pause_limit = PAUSED_AT_MOST
        self.handlers: dict[type[Any], Callable[[Any], None]] = {
            BindTransmitterResp: self._on_response,
            BindReceiverResp: self._on_response,
            BindTransceiverResp: self._on_response,
            SubmitSmResp: self._on_response,
            DeliverSmResp: self._on_response,
            DataSmResp: self._on_response,
            EnquireLinkResp: self._on_response,
            UnbindResp: self._on_response,
            GenericNack: self._on_response,
            EnquireLink: self._on_enquire_link,
            Unbind: self._on_unbind,
            RemoteProtocolError: self._on_remote_error,
            StrayResponse: self._on_stray,
        }

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._timer = self.loop.call_later(self._tick_every, self._tick)

    def data_received(self, data: bytes) -> None:
        session = self.session
        self._handle(session.receive(data, self._peer_time(), self._room()))
        if session.held_back or self.unanswered >= self.high_water:
            self._decode_held()  # an enquire_link answered at once leaves room; else pause

    def _handle(self, events: list[Event | StrayResponse]) -> None:
        handlers = self.handlers
        for event in events:
            handler = handlers.get(type(event))
            if self._linger is not None and not event.command_id & RESPONSE_BIT:
                # We have half-closed (an unbind, ours or theirs, may be earlier in this very
                # read): requests are not taken, answers are, whichever handler takes them
                # (a submit_sm_resp after the SMSC's unbind: the part was taken).
                continue
            if handler is None:
                self._on_unexpected(event)
            else:
                handler(event)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._read_on_handle is not None:
            self._read_on_handle.cancel()
        self.unanswered = 0
        self._clock.resume(self.loop.time())  # reading is over; nothing is paused
        if self._linger is not None:
            self._linger.cancel()
        self.session.close()
        self._out.clear()
        pending, self._pending = self._pending, {}
        never: asyncio.Future[Pdu | None] = self.loop.create_future()
        never.set_result(None)  # sent, and no answer can come on a connection that is gone
        for sequence, future in pending.items():
            if future.done():
                continue
            fate = self._sent.fate(sequence, self._gave_up)
            if sequence in self._unsent or sequence in self._void:  # never left, or refused
                future.set_exception(TransientError("smpp connection lost"))
            elif fate is Fate.NEVER_LEFT:  # not all of it left our kernel: the reset drops it
                future.set_exception(TransientError("smpp link lost before the submit left"))
            elif fate is Fate.NEVER_REACHED:
                future.set_exception(NoAnswer("smpp connection lost", _unheard(self.loop)))
            else:  # it left: the peer may have acted on it
                future.set_exception(NoAnswer("smpp connection lost", never))
        self._unsent.clear()
        self._void.clear()
        self._give_up_late(float("inf"))  # a late answer comes on this connection or never
        self._sent.clear()
        self._wake_room()
        if not self.closed.done():
            self.closed.set_result(None)

    # --- sending -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Connected and not closing: a request written now can still leave."""
        transport = self.transport
        if transport is None or self._linger is not None or self.closed.done():
            return False
        return not transport.is_closing()

    def send(self, pdu: Pdu) -> None:
        """Send a PDU that needs no answer tracking (a response, or an enquire_link)."""
        self.write(self.session.send(pdu, self._peer_time()))

    def request(self, pdu: Pdu) -> asyncio.Future[Pdu]:
        """Send a request; the future gets its response (or TransientError)."""
        if not self.is_open:
            raise TransientError("smpp connection closed")
        data = self.session.send(pdu, self._peer_time())
        future: asyncio.Future[Pdu] = self.loop.create_future()
        self._pending[pdu.sequence] = future
        self._unsent.add(pdu.sequence)
        self.write(data)
        self._sent.request(pdu.sequence)
        if self._reading_paused and self._leaving:
            self._read_on_soon()  # our unbind: what comes now is refused at once, not held
        return future

    def write(self, data: bytes) -> None:
        self._sent.wrote(len(data))
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        out, self._out = self._out, []
        if out and self.is_open and self.transport is not None:
            self.transport.write(b"".join(out))
            self._unsent.clear()

    def close(self) -> None:
        """Flush what is queued, half-close, and read on until the peer closes its side (or
        LINGER runs out). Closing a socket with bytes still unread resets the connection, and
        a reset can destroy answers still on their way to the peer: a pipelining peer's next
        write fails and its transport stops reading, so it sends those parts again."""
        transport = self.transport
        if not self.is_open or transport is None:
            return
        self._flush()
        if not transport.can_write_eof():  # TLS: no half-close
            transport.close()
            return
        transport.write_eof()
        self._linger = self.loop.call_later(LINGER, transport.close)
        self._read_on_soon()  # half-closed, requests are skipped: read until the peer closes

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def give_up_silent(self) -> None:
        """Abort a link that stopped answering, noting first where its bytes stand in our
        kernel (``sent_bytes``): what never reached the SMSC goes again uncounted. The abort
        is then a reset, so what never left our kernel is dropped, not sent after us."""
        self.given_up_silent = True
        standing_now = self._standing()  # read, then reset at once: no byte leaves between
        if standing_now is not None and reset_now(self.transport):
            self._gave_up = standing_now
        self.abort()

    def _standing(self) -> GaveUp | None:
        if self._linger is not None:  # half-closed: the FIN counts in the kernel's queue
            return None
        unflushed = sum(len(chunk) for chunk in self._out)
        return standing(self.transport, self._sent, unflushed, self.loop.time())

    def _late_unacknowledged(self, now: float) -> bool:
        """Submits whose late window ends now, and whose bytes the SMSC's kernel still has
        not acknowledged six response timeouts on: the path is dead (with a long
        enquire_link_interval they were counted into it before the link was given up)."""
        # kept in timeout order: the ones ending now come first (a tick walks no further)
        ending = list(itertools.takewhile(lambda seq: self._late[seq][0] <= now, self._late))
        if not ending:
            return False
        now_standing = self._standing()
        return now_standing is not None and self._sent.unacknowledged(
            ending, now_standing.acknowledged
        )

    def void_after(self, sequence: int) -> None:
        """The peer answered ``sequence`` saying it lost our session (ESME_RINVBNDSTS): what was
        sent after it was refused the same way, not taken; what was sent before it may have
        been (its answer may still be on the way), so it stays unanswered if the link drops."""
        sent = list(self._pending)  # in the order they were sent
        if sequence in self._pending:
            self._void.update(sent[sent.index(sequence) + 1 :])

    # --- flow control --------------------------------------------------------------------

    def hold(self) -> None:
        """A request just read is answered later (:meth:`answer_held`): counted until then."""
        self.unanswered += 1
        self.unanswered_most = max(self.unanswered_most, self.unanswered)

    def answer_held(self, response: Pdu) -> None:
        """Answer a request counted by :meth:`hold` (sent only while the link is open)."""
        if self.is_open:
            self.send(response)
        if self.unanswered:
            self.unanswered -= 1
            if self._reading_paused and self.unanswered <= self.low_water:
                self._read_on_soon()

    @property
    def _reading_paused(self) -> bool:
        """We stopped reading the socket at the mark (the clock stands still meanwhile)."""
        return self._clock.paused

    @property
    def _leaving(self) -> bool:
        """Unbinding or half-closed: each request is refused or skipped at once, none held."""
        return self._linger is not None or self.session.state is BindState.UNBINDING

    def _room(self) -> int:
        """How many more requests may be decoded now."""
        return NO_LIMIT if self._leaving else self.high_water - self.unanswered

    def _decode_held(self) -> None:
        """Decode what was held back while there is room; stop reading the socket at the mark
        (what it has waits in the kernel, and the peer's TCP window closes), read on below."""
        session = self.session
        while session.held_back and (room := self._room()) > 0:
            self._handle(session.receive(b"", self._peer_time(), room))
        if session.held_back or self._room() <= 0:
            self._pause_reading()
        elif self._reading_paused:
            self._clock.resume(self.loop.time())
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def _pause_reading(self) -> None:
        transport = self.transport
        if self._reading_paused or transport is None or transport.is_closing():
            return
        transport.pause_reading()
        self._clock.pause(self.loop.time())
        self.reading_pauses += 1

    def _read_on_soon(self) -> None:
        """Decode the held bytes and read on in a turn of its own: an answer is sent from
        inside another's loop (a batch of answers, a handler), not a place to handle PDUs."""
        if self._reading_paused and self._read_on_handle is None:
            self._read_on_handle = self.loop.call_soon(self._read_on)

    def _read_on(self) -> None:
        self._read_on_handle = None
        if self._reading_paused:
            self._decode_held()

    # --- receiving -----------------------------------------------------------------------

    async def window_available(self) -> None:
        """Wait until the window has room (or the connection is gone)."""
        while self.session.window_full and self.is_open:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room_waiters.append(waiter)
            await waiter

    def _wake_one(self) -> None:
        while self._room_waiters:
            waiter = self._room_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_room(self) -> None:
        """Wake every waiter (the connection is gone, or several slots freed at once)."""
        while self._room_waiters:
            waiter = self._room_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def drained(self) -> None:
        """Wait until every tracked request has its response (or has failed)."""
        if self._pending:
            await asyncio.wait(list(self._pending.values()))

    def _on_response(self, pdu: Pdu) -> None:
        future = self._pending.pop(pdu.sequence, None)
        if future is None:
            self._answer_late(pdu)
        else:
            self._sent.forget(pdu.sequence)
            if not future.done():
                future.set_result(pdu)
        self._wake_one()

    def _answer_late(self, pdu: Pdu) -> None:
        """An answer whose request (a submit_sm: only those are waited for late) had timed
        out: it was not lost after all. A response of another command on its number is not
        its answer (taken, the part went again and the real answer was dropped)."""
        if pdu.sequence not in self._late:
            if isinstance(pdu, SubmitSmResp | GenericNack):  # an enquire_link_resp is ours:
                self._say_unmatched(pdu)  # sent untracked, every keepalive
            return
        if not isinstance(pdu, SubmitSmResp | GenericNack):
            self._on_stray(StrayResponse(pdu, CommandId.SUBMIT_SM))
            return
        self._sent.forget(pdu.sequence)
        self._late.pop(pdu.sequence)[1].set_result(pdu)

    def _say_unmatched(self, pdu: Pdu) -> None:
        """An answer to nothing we wait for: a submit_sm_resp past its late window (the part
        went again, so the SMSC has it twice), or a generic_nack on sequence 0 (the SMSC could
        not read something we sent). Dropped, but said."""
        self._unmatched.note(
            {
                "link": self.name,
                "sequence": pdu.sequence,
                "pdu": type(pdu).__name__,
                "status": status_name(pdu.status),
            }
        )

    def _give_up_late(self, now: float) -> None:
        """No late answer any more for the submits waiting past ``now``: None, or (their
        bytes never reached the SMSC: see give_up_silent) SentIntoSilence."""
        while self._late:
            sequence, (until, future) = next(iter(self._late.items()))
            if until > now:
                return  # kept in timeout order: the rest are later still
            del self._late[sequence]
            fate = self._sent.fate(sequence, self._gave_up)
            self._sent.forget(sequence)
            if future.done():
                continue
            if fate is Fate.MAY_HAVE_LEFT:
                future.set_result(None)
            else:
                future.set_exception(_silence(fate))

    def _send_keepalive(self) -> None:
        self.send(EnquireLink(sequence=self.session.next_sequence()))

    def _keepalive_wanted(self) -> bool:
        """An enquire_link before the interval's silence: a subclass's reason."""
        return False

    def _on_enquire_link(self, pdu: Pdu) -> None:
        self.enquire_links_received += 1
        self.send(EnquireLinkResp(sequence=pdu.sequence))

    def _on_unbind(self, pdu: Pdu) -> None:
        self.log.info("smpp.unbind.received", extra={"link": self.name, "peer": self.peer})
        self.send(UnbindResp(sequence=pdu.sequence))
        self.close()

    def _on_remote_error(self, error: RemoteProtocolError) -> None:
        self._refused.note(
            {"link": self.name, "status": status_name(error.status), "error": str(error)}
        )
        if error.command_id & RESPONSE_BIT and not error.fatal:
            # An answer we cannot read says nothing of whether the peer did what we asked (a
            # submit_sm's part may be the SMSC's now): the request waits on, for a readable
            # answer or its response timeout (a submit is then unanswered and its attempt
            # counts), rather than failing at once and being resent uncounted, for ever.
            return
        if error.command_id == CommandId.GENERIC_NACK:
            return  # never answer a generic_nack
        nack = (
            GenericNack(sequence=error.sequence, status=error.status)
            if error.fatal
            else response_to(error.command_id, error.sequence, error.status)
        )
        self.write(self.session.send(nack, self._peer_time()))
        if error.fatal:
            self.close()

    def _on_stray(self, stray: StrayResponse) -> None:
        self._strays.note(
            {
                "link": self.name,
                "sequence": stray.pdu.sequence,
                "pdu": type(stray.pdu).__name__,
                "request": stray.request.name,
            }
        )

    def _on_unexpected(self, pdu: Any) -> None:
        self.log.debug("smpp.pdu.ignored", extra={"link": self.name, "pdu": type(pdu).__name__})

    # --- time ----------------------------------------------------------------------------

    def _peer_time(self) -> float:
        """The time the peer's deadlines run on: the loop's, less our pauses in reading."""
        return self._clock.time(self.loop.time())

    def _stalled(self) -> bool:
        """Reading paused PAUSED_AT_MOST on end (and not given up or leaving already: a TLS
        link closing keeps ticking until its shutdown ends, and said so at each tick)."""
        if not self._reading_paused or self._leaving or self.given_up_stalled:
            return False
        return self._clock.pause_span(self.loop.time()) >= self.pause_limit

    def _give_up_stalled(self) -> None:
        """Our side answers nothing (the store is wedged): unbind. The link reads on, each
        request behind the pause refused (a deliver_sm "try again later": the SMSC sends it
        on the next bind, with the ones held unanswered) and each answer taken (a submit's,
        not left to time out as maybe sent), then closes at the unbind's answer or its
        deadline."""
        self.given_up_stalled = True
        self.log.warning(
            "smpp.link.stalled",
            extra={"link": self.name, "unanswered": self.unanswered, "paused_s": self.pause_limit},
        )
        try:
            unbound = self.request(Unbind(sequence=self.session.next_sequence()))
        except (TransientError, NotSendableNow):  # not bound: nothing to unbind
            self.close()
            return
        unbound.add_done_callback(self._close_when_answered)

    def _close_when_answered(self, unbound: asyncio.Future[Pdu]) -> None:
        mark_retrieved(unbound)
        self.close()

    def _tick(self) -> None:
        if self._stalled():
            self._give_up_stalled()
        now = self._peer_time()
        expired = self.session.expire(now)
        if expired:
            self._wake_room()
        for sequence, request in expired:
            error = TransientError(f"no {request.command_id.name}_resp in time")
            if request.command_id is CommandId.SUBMIT_SM:  # the SMSC may have it: wait on
                late: asyncio.Future[Pdu | None] = self.loop.create_future()
                late.add_done_callback(mark_retrieved)  # SentIntoSilence, when nobody waits
                self._late[sequence] = (now + self.late_window, late)
                error = NoAnswer(str(error), late)
            else:
                self._sent.forget(sequence)
            future = self._pending.pop(sequence, None)
            if future is not None and not future.done():
                future.set_exception(error)
            if request.command_id is CommandId.ENQUIRE_LINK:
                self.log.warning("smpp.enquire_link.timeout", extra={"link": self.name})
                self.give_up_silent()
                return
        if self._sent.outstanding:  # when bytes left, for give_up_silent's "long ago"
            self._sent.sample(self._standing())
        if self._late_unacknowledged(now):
            self.log.warning("smpp.link.unacknowledged", extra={"link": self.name})
            self.give_up_silent()
            return
        self._give_up_late(now)
        if self.session.enquire_link_due(now) or self._keepalive_wanted():
            self._send_keepalive()
        self._timer = self.loop.call_later(self._tick_every, self._tick)


def _silence(fate: Fate) -> SentIntoSilence:
    return SentIntoSilence(
        f"smpp link given up as silent: the submit {fate.value}",
        may_have_left=fate is Fate.NEVER_REACHED,  # its ACKs may be what was lost
    )


def _unheard(loop: asyncio.AbstractEventLoop) -> asyncio.Future[Pdu | None]:
    """The late answer of a submit sent long ago and never acknowledged: none will come."""
    future: asyncio.Future[Pdu | None] = loop.create_future()
    future.set_exception(_silence(Fate.NEVER_REACHED))
    future.add_done_callback(mark_retrieved)
    return future


def mark_retrieved(future: asyncio.Future[Any]) -> None:
    """Mark its exception seen: a caller that gave up reads it no more (asyncio logs one
    nobody read)."""
    if not future.cancelled():
        future.exception()
