"""Who holds the API server's connections, by client address: at the connection cap, the
place a newcomer takes is first the heaviest client's, so a flood from one address (or a
few) gives up its own connections and another client keeps its pool.

A client is its address; over IPv6, its /64 (a host is given a /64 and may use any address
in it: counted one by one, a single host would be as many light clients as it liked). The
counts change on connect and close, O(1) each; the ranking is walked heaviest first, a
level of equal counts at a time: there are at most about sqrt(2 x connections) levels (the
counts of distinct levels add up to at most the connections), so keeping them sorted is
cheap too.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from smsrelay.domain.ip_access import peer_address

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")
IPV6_PREFIX_BYTES = 8  # a /64


def client_of(peer: str) -> str:
    """The client a peer address stands for: IPv4 as it is (an IPv4-mapped IPv6 peer too, as
    the allow-list reads it), IPv6 its /64; what is no address stays as it is ("" too)."""
    address = peer_address(peer)
    if address is None:
        return peer
    if address.version == 4:
        return str(address)
    prefix = address.packed[:IPV6_PREFIX_BYTES]
    return str(ipaddress.IPv6Address(prefix + bytes(16 - IPV6_PREFIX_BYTES)))


class Holder(Generic[T]):
    """One client's share: how many places it holds (connections and TLS handshakes), and
    those a newcomer may take, each line in the order of the server's (or listener's)."""

    __slots__ = ("client", "graced", "handshakes", "held", "idle")

    def __init__(self, client: str) -> None:
        self.client = client
        self.held = 0
        self.idle: OrderedDict[T, None] = OrderedDict()
        self.graced: OrderedDict[T, None] = OrderedDict()
        self.handshakes: OrderedDict[asyncio.Task[None], float] = OrderedDict()


class ClientShares(Generic[T]):
    def __init__(self) -> None:
        self._holders: dict[str, Holder[T]] = {}
        self._at: dict[int, dict[Holder[T], None]] = {}  # the holders of each count
        self._levels: list[int] = []  # the counts some holder has, ascending

    def join(self, peer: str) -> Holder[T]:
        """One more place held by ``peer``'s client; its holder."""
        client = client_of(peer)
        holder = self._holders.get(client)
        if holder is None:
            holder = self._holders[client] = Holder(client)
        self._move(holder, holder.held + 1)
        return holder

    def leave(self, holder: Holder[T]) -> None:
        """One place fewer held by ``holder``'s client (forgotten when it holds none)."""
        self._move(holder, holder.held - 1)
        if holder.held == 0:
            del self._holders[holder.client]

    def holder(self, peer: str) -> Holder[T] | None:
        """``peer``'s client's holder, if it holds any place."""
        return self._holders.get(client_of(peer))

    @property
    def clients(self) -> int:
        return len(self._holders)

    def heavier_than(
        self,
        weight: int,
        newcomer: Holder[T] | None = None,
        taken: Mapping[Holder[T], int] | None = None,
    ) -> Iterator[Holder[T]]:
        """The holders weighing more than ``weight``, the heaviest first (equal ones in the
        order they reached their count). A holder weighs the places it holds, one more for
        the ``newcomer``'s (it is to hold its place too), less those ``taken`` already
        chosen to give way. Read it as far as needed: its caller bounds it."""
        taken = taken or {}

        def weighs(holder: Holder[T]) -> int:
            return holder.held + (holder is newcomer) - taken.get(holder, 0)

        for level in reversed(self._levels):
            if level <= weight:
                break
            # the newcomer's own client, one place more than the others of its count: before
            # them (among them, in its order, one of them went first though it weighed less)
            if newcomer is not None and newcomer.held == level and weighs(newcomer) > weight:
                yield newcomer
            for holder in self._at[level]:
                if holder is not newcomer and weighs(holder) > weight:
                    yield holder
        if newcomer is not None and newcomer.held <= weight < weighs(newcomer):
            yield newcomer  # one place short of the others above: after them

    def _move(self, holder: Holder[T], held: int) -> None:
        if holder.held:
            self._leave_level(holder)
        holder.held = held
        if held:
            at = self._at.get(held)
            if at is None:
                at = self._at[held] = {}
                bisect.insort(self._levels, held)
            at[holder] = None

    def _leave_level(self, holder: Holder[T]) -> None:
        at = self._at[holder.held]
        del at[holder]
        if not at:
            del self._at[holder.held]
            del self._levels[bisect.bisect_left(self._levels, holder.held)]
