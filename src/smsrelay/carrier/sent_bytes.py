"""What of a connection's requests reached its peer, told by our kernel when we give up.

A link we give up as silent holds submits whose answer never came. Counting each as an
attempt (the SMSC may have it) made a path that eats data (an MTU black hole) fail every
queued message after five dead links, though the SMSC saw none. The kernel knows better: a
request whose bytes never left our host (``SIOCOUTQNSD``) cannot be the SMSC's, nor one sent
seconds ago that its kernel never acknowledged (``TIOCOUTQ``); one it acknowledged may be (a
frozen SMSC reads it later), and one just sent may still be on its way. Linux only; over TLS
the socket's bytes are not ours to count: everything counts, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import sys
import termios
from dataclasses import dataclass
from enum import Enum
from typing import Any

SIOCOUTQNSD = 0x894B  # Linux: bytes in the send queue not yet sent
# Sent and not acknowledged for this long: the peer never had it (a delayed ACK is ~40 ms,
# a retransmission's first timeout 200 ms; a link slower than this counts, as before).
UNACKED_FOR_S = 2.0


class Fate(Enum):
    MAY_HAVE_LEFT = "may have left"  # counts: the SMSC may have it
    NEVER_LEFT = "never left"  # not all of its bytes left this host
    NEVER_REACHED = "never reached"  # sent long ago, never acknowledged (maybe its ACKs lost)


@dataclass(frozen=True)
class GaveUp:
    """Where the stream stood when we gave the connection up, in bytes given to write()."""

    acknowledged: int  # below this, the peer's kernel acknowledged
    sent: int  # from this on, nothing left our kernel
    at: float  # the loop's time


class SentBytes:
    """The byte offset at which each request ends, and when it was written."""

    def __init__(self) -> None:
        self.queued = 0  # bytes given to write() so far
        self._ends: dict[int, tuple[int, float]] = {}

    def wrote(self, count: int) -> None:
        self.queued += count

    def request(self, sequence: int, now: float) -> None:
        self._ends[sequence] = (self.queued, now)

    def forget(self, sequence: int) -> None:
        self._ends.pop(sequence, None)

    def clear(self) -> None:
        self._ends.clear()

    def fate(self, sequence: int, gave_up: GaveUp | None) -> Fate:
        entry = self._ends.get(sequence)
        if gave_up is None or entry is None:
            return Fate.MAY_HAVE_LEFT
        end, written = entry
        if end <= gave_up.acknowledged:
            return Fate.MAY_HAVE_LEFT
        if end > gave_up.sent:
            return Fate.NEVER_LEFT
        if gave_up.at - written >= UNACKED_FOR_S:
            return Fate.NEVER_REACHED
        return Fate.MAY_HAVE_LEFT  # maybe still on its way

    def unacknowledged(self, sequences: list[int], acknowledged: int) -> bool:
        """Whether any of these requests ends past what the peer acknowledged."""
        return any(self._ends.get(seq, (0, 0.0))[0] > acknowledged for seq in sequences)


def standing(transport: Any, sent_bytes: SentBytes, unflushed: int, now: float) -> GaveUp | None:
    """Where the stream stands in the kernel now (None: unknown, TLS, not Linux)."""
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    try:
        fd = sock.fileno()
        unacknowledged = _ioctl_int(fd, termios.TIOCOUTQ)
        unsent = _ioctl_int(fd, SIOCOUTQNSD)
    except (AttributeError, OSError, ValueError):
        return None
    handed = sent_bytes.queued - unflushed - transport.get_write_buffer_size()
    return GaveUp(handed - unacknowledged, handed - unsent, now)


def drop_on_close(transport: Any) -> None:
    """Make the coming abort a reset: a closed socket otherwise goes on sending its queue,
    and what we count as never sent would reach the SMSC after all."""
    sock: Any = transport.get_extra_info("socket") if transport is not None else None
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _ioctl_int(fd: int, request: int) -> int:
    raw = fcntl.ioctl(fd, request, b"\0\0\0\0")
    return int.from_bytes(raw, sys.byteorder, signed=True)
