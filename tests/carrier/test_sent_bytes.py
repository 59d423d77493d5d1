"""Where a request's bytes stood when a silent link was given up: the rule, on made-up
kernel readings (a real frozen peer is in test_smpp_connector.py)."""

from __future__ import annotations

import socket

import pytest

from smsrelay.carrier.sent_bytes import Fate, GaveUp, SentBytes, reset_now, standing


def _three_requests() -> SentBytes:
    sent = SentBytes()
    for sequence in (1, 2, 3):  # 100 bytes each: they end at 100, 200, 300
        sent.wrote(100)
        sent.request(sequence)
    return sent


def test_acknowledged_counts_unsent_never_left_and_long_unacknowledged_never_reached() -> None:
    sent = _three_requests()
    sent.sample(GaveUp(acknowledged=0, sent=200, at=10.0))  # 1 and 2 had left by then
    gave_up = GaveUp(acknowledged=100, sent=250, at=13.0)
    assert sent.fate(1, gave_up) is Fate.MAY_HAVE_LEFT  # acknowledged: the SMSC may have it
    assert sent.fate(2, gave_up) is Fate.NEVER_REACHED  # left 3 s before, never acknowledged
    assert sent.fate(3, gave_up) is Fate.NEVER_LEFT  # its tail never left: the reset drops it


def test_bytes_written_long_ago_that_left_just_before_may_still_be_on_their_way() -> None:
    # Written is not sent: bytes queued behind a full window leave late, and those in
    # flight when we give up may arrive (the third review).
    sent = _three_requests()
    sent.sample(GaveUp(acknowledged=0, sent=0, at=10.0))  # nothing had left 3 s before
    sent.sample(GaveUp(acknowledged=0, sent=300, at=12.5))
    gave_up = GaveUp(acknowledged=0, sent=300, at=13.0)
    assert {sent.fate(seq, gave_up) for seq in (1, 2, 3)} == {Fate.MAY_HAVE_LEFT}


def test_without_a_reading_everything_counts() -> None:
    sent = _three_requests()
    assert sent.fate(3, None) is Fate.MAY_HAVE_LEFT  # TLS, not Linux, or the reset failed
    assert sent.unacknowledged([2, 3], acknowledged=200) and not sent.unacknowledged([1, 2], 200)


class _Transport:
    """What standing() and reset_now() read of a transport: its extra info."""

    def __init__(self, **extra: object) -> None:
        self.extra = extra

    def get_extra_info(self, name: str) -> object:
        return self.extra.get(name)

    def get_write_buffer_size(self) -> int:
        return 0


def test_without_a_socket_of_ours_to_read_nothing_is_read_and_nothing_reset() -> None:
    # TLS (the socket's bytes are the cipher's), or no socket at all: every part counts.
    sent = _three_requests()
    assert standing(_Transport(sslcontext=object(), socket=object()), sent, 0, 1.0) is None
    assert standing(_Transport(socket=None), sent, 0, 1.0) is None
    assert standing(None, sent, 0, 1.0) is None
    assert not reset_now(_Transport(socket=None)) and not reset_now(None)


def test_a_real_socket_is_read_and_reset_at_once() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    sent = SentBytes()
    client.sendall(b"x" * 100)
    sent.wrote(100)
    reading = standing(_Transport(socket=client), sent, 0, 1.0)
    assert reading is not None and reading.sent == 100  # nothing waits in our queue
    assert reset_now(_Transport(socket=client))
    peer.settimeout(5)
    assert peer.recv(100) == b"x" * 100  # what had left is still read, then the reset
    with pytest.raises(ConnectionResetError):
        peer.recv(100)
    for s in (client, peer, server):
        s.close()
