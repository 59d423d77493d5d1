"""What of a connection's requests reached its peer, told by our kernel when we give up.

A link we give up as silent holds submits whose answer never came. Counting each as an
attempt (the SMSC may have it) made a path that eats data (an MTU black hole) fail every
queued message after five dead links, though the SMSC saw none. The kernel knows better: a
request whose bytes never left our host (``SIOCOUTQNSD``) cannot be the SMSC's, provided the
link is reset at once (``reset_now``: a closed socket goes on sending its queue), nor one whose
bytes left seconds ago and were never acknowledged (``TIOCOUTQ``; when bytes left is sampled
while requests are out: written is not sent); one it acknowledged may be (a frozen SMSC reads
it later), and one that left just before may still be on its way. Linux only; over TLS the
socket's bytes are not ours to count: everything counts, as before.
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import sys
import termios
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

SIOCOUTQNSD = 0x894B  # Linux: bytes in the send queue not yet sent
# Left and not acknowledged for this long: the peer never had it (a delayed ACK is ~40 ms,
# a retransmission's first timeout 200 ms; a link slower than this counts, as before).
UNACKED_FOR_S = 2.0
SAMPLES_KEPT = 64  # where the sent offset stood, once a tick while requests are out


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
        self._ends: dict[int, int] = {}
        self._left: deque[tuple[float, int]] = deque(maxlen=SAMPLES_KEPT)  # (when, sent)

    def wrote(self, count: int) -> None:
        self.queued += count

    def request(self, sequence: int) -> None:
        self._ends[sequence] = self.queued

    def sample(self, standing: GaveUp | None) -> None:
        """Where the sent offset stands now (from ``standing``)."""
        if standing is not None:
            self._left.append((standing.at, standing.sent))

    @property
    def outstanding(self) -> bool:
        return bool(self._ends)

    def forget(self, sequence: int) -> None:
        self._ends.pop(sequence, None)

    def clear(self) -> None:
        self._ends.clear()
        self._left.clear()

    def fate(self, sequence: int, gave_up: GaveUp | None) -> Fate:
        end = self._ends.get(sequence)
        if gave_up is None or end is None or end <= gave_up.acknowledged:
            return Fate.MAY_HAVE_LEFT
        if end > gave_up.sent:
            return Fate.NEVER_LEFT
        if end <= self._sent_by(gave_up.at - UNACKED_FOR_S):
            return Fate.NEVER_REACHED
        return Fate.MAY_HAVE_LEFT  # left just before: maybe still on its way

    def _sent_by(self, when: float) -> int:
        """The sent offset at the last sample no later than ``when`` (0: none that old)."""
        sent = 0
        for at, offset in self._left:
            if at > when:
                break
            sent = offset
        return sent

    def unacknowledged(self, sequences: list[int], acknowledged: int) -> bool:
        """Whether any of these requests ends past what the peer acknowledged."""
        return any(self._ends.get(seq, 0) > acknowledged for seq in sequences)


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


class _Unspecified(ctypes.Structure):
    _fields_ = (("sa_family", ctypes.c_ushort), ("sa_data", ctypes.c_char * 14))


def reset_now(transport: Any) -> bool:
    """Reset the connection at once, its unsent queue dropped (``connect`` to AF_UNSPEC:
    Linux's disconnect). An abort closes the socket a loop turn later, and a closed socket
    goes on sending its queue: what we read as never sent would reach the SMSC after all.
    False: not done (the bytes' standing is then not to be trusted)."""
    sock: Any = transport.get_extra_info("socket") if transport is not None else None
    try:
        fd = sock.fileno()
        libc = ctypes.CDLL(None, use_errno=True)
        address = _Unspecified(socket.AF_UNSPEC)
        return int(libc.connect(fd, ctypes.byref(address), ctypes.sizeof(address))) == 0
    except (AttributeError, OSError, ValueError):
        return False


def _ioctl_int(fd: int, request: int) -> int:
    raw = fcntl.ioctl(fd, request, b"\0\0\0\0")
    return int.from_bytes(raw, sys.byteorder, signed=True)
