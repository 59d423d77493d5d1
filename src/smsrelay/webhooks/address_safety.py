"""Refuse callbacks to internal addresses (SSRF), checked on the connection actually opened.

A callback URL is chosen by an API client, so without a check anyone with an API key could make
the gateway POST into its own network (admin ports, a cloud metadata service). The check runs at
send time, on the addresses the connection will use, not on the URL at accept time (DNS changes):

- host names go through :func:`resolve_safe` when the callback client opens a connection, and
  it connects to the addresses checked (no second lookup to race with);
- IP literals are checked as they are (:func:`ensure_allowed`);
- redirects are not followed at all (a 3xx is a failed attempt), so a receiver cannot bounce the
  gateway to another address.

``allow_private`` (development, on-premises receivers) lifts the check except for the cloud
metadata addresses, which stay refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from smsrelay.errors import SmsRelayError
from smsrelay.webhooks.lookup_slots import LookupSlots
from smsrelay.webhooks.name_cache import NameCache

IPAddress = IPv4Address | IPv6Address

CGNAT = IPv4Network("100.64.0.0/10")
NAT64 = IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = IPv6Network("64:ff9b:1::/48")  # RFC 8215's local-use prefix (as a /96)
METADATA = frozenset(
    {
        IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, Oracle, OpenStack
        IPv4Address("100.100.100.200"),  # Alibaba Cloud
        IPv6Address("fd00:ec2::254"),  # AWS over IPv6
    }
)


class UnsafeAddress(SmsRelayError):
    """A callback host resolves to an address the gateway must not call."""


def is_forbidden_address(ip: IPAddress) -> bool:
    """True for addresses that are not on the public internet, or that embed one that is not."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return is_forbidden_address(embedded)
    return (
        _is_metadata(ip)
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip in CGNAT
        or not ip.is_global
    )


def _embedded_ipv4(ip: IPAddress) -> IPv4Address | None:
    if isinstance(ip, IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64 or ip in LOCAL_NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _is_metadata(ip: IPAddress) -> bool:
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return _is_metadata(embedded)
    if isinstance(ip, IPv6Address) and ip.scope_id:
        ip = IPv6Address(int(ip))  # drop the zone: fd00:ec2::254%eth0 is still the service
    return ip in METADATA


def ensure_allowed(ip: IPAddress, host: str, allow_private: bool) -> None:
    """Raise :class:`UnsafeAddress` unless calling ``ip`` (which ``host`` names) is allowed."""
    if _is_metadata(ip) or (not allow_private and is_forbidden_address(ip)):
        named = host.strip("[]") != str(ip)  # a name, or another spelling of the address
        raise UnsafeAddress(f"{host} is {f'{ip}, ' if named else ''}a private or reserved address")


def ensure_safe_literal(host: str, allow_private: bool) -> bool:
    """True if ``host`` is an IP literal (checked: UnsafeAddress if forbidden), False for a name
    (:func:`resolve_safe` checks what it resolves to)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    ensure_allowed(ip, host, allow_private)
    return True


async def resolve_safe(
    host: str,
    port: int,
    allow_private: bool,
    slots: LookupSlots | None = None,
    names: NameCache | None = None,
) -> list[str]:
    """The addresses of ``host``; :class:`UnsafeAddress` if any of them is forbidden.
    ``slots``: lookups in flight at most (see :func:`_lookup`); ``names``: answers kept
    (checked again here each time, like a fresh one)."""
    infos = await _lookup(host, port, slots, names)
    addresses: list[str] = []
    for _, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        ensure_allowed(ipaddress.ip_address(address), host, allow_private)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(f"{host} has no address")
    return addresses


async def _lookup(
    host: str, port: int, slots: LookupSlots | None, names: NameCache | None
) -> list[tuple[Any, ...]]:
    """getaddrinfo in ``slots`` (one of the total and one of the name's), held until the
    lookup itself ends. A lookup cannot be cancelled once it runs (a resolver thread waits
    on DNS): given up by its caller (the post's timeout), it used to go on, and with a slow
    resolver hundreds queued behind the resolver threads, still resolving long after (a stop
    waited minutes for them). A caller that gives up while waiting for a slot starts nothing,
    and one whose slot came after another lookup of the name ended takes that one's answer."""
    key = (host, port)
    if names is not None and (kept := names.get(key)) is not None:
        return kept
    loop = asyncio.get_running_loop()
    if slots is None:
        return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    await slots.acquire(host)
    try:
        kept = names.get(key) if names is not None else None
    except BaseException:
        slots.release(host)
        raise
    if kept is not None:
        slots.release(host)
        return kept
    running = loop.create_task(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    running.add_done_callback(lambda done: _end_lookup(done, slots, names, key))
    return await asyncio.shield(running)


def _end_lookup(
    done: asyncio.Task[list[tuple[Any, ...]]],
    slots: LookupSlots,
    names: NameCache | None,
    key: tuple[str, int],
) -> None:
    slots.release(key[0])
    if done.cancelled():
        return
    # seen, also when its caller is gone: no "never retrieved" warning
    error = done.exception()
    if names is None:
        return
    if error is None:
        names.keep(key, done.result())
    elif isinstance(error, socket.gaierror):  # the name does not resolve (now)
        names.keep_failure(key, error)
