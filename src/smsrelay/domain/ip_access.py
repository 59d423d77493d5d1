"""Where a request comes from, and whether an account lets its API key be used from there.

An account may restrict its key to a list of addresses and networks (SMS Partner's code 96,
"IP not authorised"). Behind a reverse proxy the connection's peer is the proxy: the client
is then read from ``X-Forwarded-For``, but only when the peer is a proxy the operator trusts
(anyone can write the header), walking it from the right, past the trusted proxies, to the
first address that is not one (the address the last trusted proxy saw connect).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Protocol

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED_PREFIX = 96  # ::ffff:0:0/96 holds IPv4 as a dual-stack socket shows it
PEERS_REMEMBERED = 1024  # peers' parsed addresses kept (a gateway's clients, or its proxies)


class Origin(Protocol):
    """What a request says of where it came from (the API's ``Request`` is one)."""

    @property
    def peer(self) -> str: ...  # the connection's peer address ("" unknown)

    @property
    def headers(self) -> Mapping[str, str]: ...  # names lower-cased


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Each entry an address (``203.0.113.7``) or a network (``198.51.100.0/24``), blanks
    skipped, duplicates dropped; ValueError naming the first entry that is neither. A network
    with host bits set (``198.51.100.5/24``) is refused, not guessed at: the address or the
    network, either could be meant."""
    networks: dict[Network, None] = {}
    for entry in (e.strip() for e in entries):
        if entry:
            networks[_network(entry)] = None
    return tuple(networks)


def split_list(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (blanks dropped)."""
    return [entry.strip() for entry in text.split(",") if entry.strip()]


def _network(entry: str) -> Network:
    try:
        if "%" in entry:  # a zone (fe80::1%eth0) names one host's interface: no address
            raise ValueError("a zone")
        network = ipaddress.ip_network(entry)
    except ValueError as exc:
        if "host bits set" not in str(exc):
            raise ValueError(f"{entry!r} is not an IPv4 or IPv6 address or network (CIDR)") from exc
        whole = ipaddress.ip_network(entry, strict=False)
        one = entry.partition("/")[0]
        raise ValueError(
            f"{entry!r} has host bits set: write {whole} for the network or {one} for the address"
        ) from exc
    return _unmapped_network(network)


def _unmapped_network(network: Network) -> Network:
    """``::ffff:10.0.0.0/104`` is 10.0.0.0/8: peers are compared as IPv4 (see parse_address)."""
    if not isinstance(network, ipaddress.IPv6Network) or network.prefixlen < _MAPPED_PREFIX:
        return network
    mapped = network.network_address.ipv4_mapped  # None: not in ::ffff:0:0/96
    if mapped is None:
        return network
    return ipaddress.IPv4Network((mapped, network.prefixlen - _MAPPED_PREFIX))


def network_text(network: Network) -> str:
    """A single address without its ``/32`` (``/128``), a network with its prefix."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def networks_text(networks: Iterable[Network]) -> str:
    """As stored and shown: comma-separated, each in its canonical form ("" for none)."""
    return ",".join(network_text(n) for n in networks)


def parse_address(text: str) -> Address | None:
    """An address as a peer or a proxy gives it; an IPv4-mapped IPv6 one (``::ffff:1.2.3.4``,
    how a socket listening on ``::`` shows an IPv4 client) as its IPv4 address; None when it is
    no address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=PEERS_REMEMBERED)
def peer_address(peer: str) -> Address | None:
    """``parse_address`` of a connection's peer, remembered: each request of a restricted
    account parsed it again (~1.3 µs of the ~2 µs its check took), and peers are few."""
    return parse_address(peer)


def within(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)


def client_address(origin: Origin, trusted_proxies: tuple[Network, ...]) -> Address | None:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the
    rightmost ``X-Forwarded-For`` address that is not one (the leftmost if all are). None:
    unknown (no peer address, or a hop that is no address), which no allow-list admits."""
    address = peer_address(origin.peer)
    if address is None or not within(address, trusted_proxies):
        return address
    forwarded = origin.headers.get("x-forwarded-for")
    for hop in reversed(split_list(forwarded or "")):
        hop_address = parse_address(hop)
        if hop_address is None:  # "unknown", a port glued on: who sent it cannot be told
            return None
        address = hop_address
        if not within(address, trusted_proxies):
            break
    return address
