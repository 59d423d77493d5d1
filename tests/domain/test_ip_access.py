"""Allowed addresses as written, and the client's address behind trusted proxies."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address

import pytest

from smsrelay.domain.ip_access import (
    client_address,
    networks_text,
    parse_networks,
    split_list,
)


def parsed(text: str) -> str:
    return networks_text(parse_networks(split_list(text)))


def test_entries_are_kept_in_their_canonical_form_once_each() -> None:
    written = " 203.0.113.7, 198.51.100.0/24,2001:DB8::/32 ,, 203.0.113.7/32, 10.0.0.0/255.0.0.0"
    assert parsed(written) == "203.0.113.7,198.51.100.0/24,2001:db8::/32,10.0.0.0/8"


def test_ipv4_written_as_mapped_ipv6_is_ipv4() -> None:
    # a peer ::ffff:10.1.2.3 is compared as 10.1.2.3: so must an entry written that way be
    assert parsed("::ffff:10.0.0.0/104, ::ffff:192.0.2.1") == "10.0.0.0/8,192.0.2.1"
    assert parsed("::ffff:0:0/96") == "0.0.0.0/0"  # every IPv4 client
    assert parsed("::/0") == "::/0"  # every IPv6 client (an IPv4 one is no IPv6 one)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("198.51.100.5/24", "'198.51.100.5/24' has host bits set: write 198.51.100.0/24"),
        ("10.0.0.300", "'10.0.0.300' is not an IPv4 or IPv6 address or network"),
        ("example.com", "'example.com' is not an IPv4"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not"),
        ("fe80::1%eth0", "'fe80::1%eth0' is not"),
    ],
)
def test_a_malformed_entry_is_refused_by_name(entry: str, says: str) -> None:
    with pytest.raises(ValueError, match="^" + says.replace("(", r"\(")):
        parse_networks(["192.0.2.1", entry])


@dataclass
class From:
    peer: str
    headers: dict[str, str] = field(default_factory=dict)


PROXIES = parse_networks(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("192.0.2.9", "203.0.113.7", "192.0.2.9"),  # not a proxy: its header is anyone's
        ("127.0.0.1", None, "127.0.0.1"),  # a proxy with no header: itself
        ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the rightmost
        ("127.0.0.1", "198.51.100.1, 203.0.113.7, 10.0.0.5", "203.0.113.7"),  # past proxies
        ("127.0.0.1", "10.0.0.6, 10.0.0.5", "10.0.0.6"),  # every hop a proxy: the first
        ("127.0.0.1", "203.0.113.7, unknown", None),  # who sent it cannot be told
        ("127.0.0.1", "203.0.113.7:4711", None),
        ("127.0.0.1", " , ", "127.0.0.1"),  # blank: no hop
        ("::ffff:127.0.0.1", "::ffff:203.0.113.7", "203.0.113.7"),  # mapped: as IPv4
        ("2001:db8::1", "2001:db8::2, 2a00:1450::1", "2a00:1450::1"),
        ("", "203.0.113.7", None),  # no peer address (a Unix socket)
    ],
)
def test_the_client_is_the_rightmost_forwarded_address_past_trusted_proxies(
    peer: str, forwarded_for: str | None, client: str | None
) -> None:
    headers = {} if forwarded_for is None else {"x-forwarded-for": forwarded_for}
    expected = None if client is None else ip_address(client)
    assert client_address(From(peer, headers), PROXIES) == expected


def test_no_trusted_proxy_means_the_header_is_never_read() -> None:
    origin = From("127.0.0.1", {"x-forwarded-for": "203.0.113.7"})
    assert client_address(origin, ()) == ip_address("127.0.0.1")
