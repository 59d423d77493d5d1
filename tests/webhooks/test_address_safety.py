"""Which addresses a callback may reach, checked on what a host name really resolves to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from typing import Any

import pytest

from smsrelay.errors import SmsRelayError
from smsrelay.webhooks.address_safety import (
    UnsafeAddress,
    ensure_safe_literal,
    is_forbidden_address,
    resolve_safe,
)
from smsrelay.webhooks.lookup_slots import LookupSlots
from smsrelay.webhooks.name_cache import NameCache
from tests.support import eventually

FORBIDDEN = [
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "169.254.10.10",  # link-local
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "100.127.255.254",
    "100.100.100.200",  # Alibaba metadata
    "0.0.0.0",  # unspecified
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.2.10",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",  # just below carrier-grade NAT
    "100.128.0.1",  # just above it
    "172.32.0.1",  # just outside 172.16/12
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_allowed(address: str) -> None:
    assert not is_forbidden_address(ipaddress.ip_address(address))


def test_unsafe_address_is_a_smsrelay_error() -> None:
    assert issubclass(UnsafeAddress, SmsRelayError)


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.1", "[::1]", "::ffff:192.168.0.1"])
def test_private_literals_refused_unless_allowed(host: str) -> None:
    with pytest.raises(UnsafeAddress):
        ensure_safe_literal(host, allow_private=False)
    assert ensure_safe_literal(host, allow_private=True) is True


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "[fd00:ec2::254]",
        "::ffff:169.254.169.254",
        "[64:ff9b:1::a9fe:a9fe]",  # through a local-use NAT64 prefix
    ],
)
def test_metadata_refused_even_when_private_is_allowed(host: str) -> None:
    with pytest.raises(UnsafeAddress):
        ensure_safe_literal(host, allow_private=True)


def test_public_literals_pass_the_literal_check() -> None:
    assert ensure_safe_literal("8.8.8.8", allow_private=False) is True


@pytest.mark.parametrize("host", ["example.com", "receiver.internal"])
def test_names_are_left_to_the_resolver(host: str) -> None:
    assert ensure_safe_literal(host, allow_private=False) is False


async def test_resolve_safe_refuses_a_name_for_loopback() -> None:
    with pytest.raises(UnsafeAddress, match="localhost"):
        await resolve_safe("localhost", 80, allow_private=False)


async def test_resolve_safe_returns_the_addresses_when_allowed() -> None:
    addresses = await resolve_safe("localhost", 80, allow_private=True)
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)


async def test_resolve_safe_lets_public_addresses_through() -> None:
    assert await resolve_safe("8.8.8.8", 443, allow_private=False) == ["8.8.8.8"]


async def test_resolve_safe_refuses_numeric_forms_that_mean_loopback() -> None:
    with pytest.raises(UnsafeAddress):
        await resolve_safe("2130706433", 80, allow_private=False)  # 127.0.0.1 as one number


async def test_resolve_safe_gives_the_addresses_to_connect_to() -> None:
    assert await resolve_safe("127.0.0.1", 8080, allow_private=True) == ["127.0.0.1"]


async def test_resolve_safe_refuses_private_names() -> None:
    with pytest.raises(UnsafeAddress):
        await resolve_safe("localhost", 80, allow_private=False)


async def test_a_lookup_given_up_holds_its_slots_until_it_ends_and_waiters_start_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slow resolver: lookups whose posts had timed out went on in the resolver threads,
    # hundreds queued, and a stop waited minutes for them. And one name that resolves
    # slowly must not hold every slot: another name's lookup goes meanwhile.
    started: list[str] = []
    resolver_answers = threading.Event()

    def getaddrinfo(host: str, port: int, *_: Any, **__: Any) -> list[Any]:
        started.append(host)
        if host.startswith("slow"):
            resolver_answers.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    slots = LookupSlots(total=2, per_name=1)
    for host in ("slow.example", "slow.example"):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await resolve_safe(host, 80, False, slots)
    assert started == ["slow.example"]  # the second gave up waiting for the name's slot
    assert await resolve_safe("fast.example", 80, False, slots) == ["93.184.216.34"]
    assert slots.names == 1  # the first still runs, holding its slots; nobody waits
    resolver_answers.set()
    await eventually(lambda: slots.names == 0)
    assert await resolve_safe("slow.example", 80, False, slots) == ["93.184.216.34"]


# -- answers kept ---------------------------------------------------------------------------------


class Resolver:
    """The stdlib loop's getaddrinfo, replaced: what each name resolves to, and every lookup."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: dict[str, str | None]) -> None:
        self.answers = answers
        self.looked_up: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def getaddrinfo(self, host: str, port: int, *_: Any, **__: Any) -> list[Any]:
        self.looked_up.append(host)
        self.gate.wait(10)
        address = self.answers[host]
        if address is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_answer_is_kept_for_a_while_then_looked_up_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A receiver that closes each connection cost a resolver round trip per callback.
    resolver = Resolver(monkeypatch, {"hooks.example": "93.184.216.34"})
    clock = Clock()
    slots, names = LookupSlots(total=8, per_name=2), NameCache(keep_for=30.0, clock=clock)
    for _ in range(3):
        assert await resolve_safe("hooks.example", 443, False, slots, names) == ["93.184.216.34"]
    assert resolver.looked_up == ["hooks.example"]

    resolver.answers["hooks.example"] = "93.184.216.35"  # the name moved
    clock.now += 30.0
    assert await resolve_safe("hooks.example", 443, False, slots, names) == ["93.184.216.35"]
    assert resolver.looked_up == ["hooks.example"] * 2


async def test_a_failed_lookup_is_kept_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    # A dead name's backlog of callbacks was one lookup each.
    resolver = Resolver(monkeypatch, {"gone.example": None})
    clock = Clock()
    slots, names = LookupSlots(total=8, per_name=2), NameCache(keep_failure_for=5.0, clock=clock)
    for _ in range(3):
        with pytest.raises(socket.gaierror, match="not known"):
            await resolve_safe("gone.example", 443, False, slots, names)
    assert resolver.looked_up == ["gone.example"]

    resolver.answers["gone.example"] = "93.184.216.34"  # back in DNS
    clock.now += 5.0
    assert await resolve_safe("gone.example", 443, False, slots, names) == ["93.184.216.34"]


async def test_a_kept_answer_is_checked_like_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    Resolver(monkeypatch, {"inside.example": "10.0.0.5"})
    slots, names = LookupSlots(total=8, per_name=2), NameCache(clock=Clock())
    assert await resolve_safe("inside.example", 80, True, slots, names) == ["10.0.0.5"]
    with pytest.raises(UnsafeAddress):
        await resolve_safe("inside.example", 80, False, slots, names)


async def test_lookups_waiting_for_the_names_slot_take_the_answer_of_the_one_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A burst of new connections to one receiver: one lookup, not one per connection.
    resolver = Resolver(monkeypatch, {"hooks.example": "93.184.216.34"})
    resolver.gate.clear()
    slots, names = LookupSlots(total=8, per_name=1), NameCache(clock=Clock())
    waiting = [
        asyncio.create_task(resolve_safe("hooks.example", 443, False, slots, names))
        for _ in range(5)
    ]
    await eventually(lambda: resolver.looked_up == ["hooks.example"])
    resolver.gate.set()
    assert await asyncio.gather(*waiting) == [["93.184.216.34"]] * 5
    assert resolver.looked_up == ["hooks.example"]
    assert slots.names == 0


def test_the_oldest_name_makes_room() -> None:
    names = NameCache(max_names=2, clock=Clock())
    answer: list[tuple[Any, ...]] = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("1.1.1.1", 80))]
    for host in ("a.example", "b.example", "a.example", "c.example"):
        names.keep((host, 80), answer)
    assert len(names) == 2
    assert names.get(("b.example", 80)) is None  # kept longest without being kept again
    assert names.get(("a.example", 80)) == answer


def test_a_doubted_answer_is_kept_no_longer_than_a_failure() -> None:
    clock = Clock()
    names = NameCache(keep_for=30.0, keep_failure_for=5.0, clock=clock)
    answer: list[tuple[Any, ...]] = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("1.1.1.1", 80))]
    names.keep(("a.example", 80), answer)
    clock.now += 1.0
    names.doubt(("a.example", 80))  # none of its addresses took a connection
    clock.now += 4.9
    assert names.get(("a.example", 80)) == answer
    clock.now += 0.1
    assert names.get(("a.example", 80)) is None
    names.doubt(("unknown.example", 80))  # nothing kept: nothing to doubt
    assert len(names) == 0
