"""Who holds the API server's connections, by client: the ranking a newcomer's place follows."""

from __future__ import annotations

from smsrelay.api.client_shares import ClientShares, Holder, client_of


def test_a_client_is_its_ipv4_address_or_its_ipv6_64() -> None:
    assert client_of("203.0.113.7") == "203.0.113.7"
    assert client_of("::ffff:203.0.113.7") == "203.0.113.7"  # on a dual-stack socket
    assert client_of("::ffff:cb00:7107") == "203.0.113.7"  # the same, written in hex
    one_host = {client_of("2001:db8:1:2::1"), client_of("2001:db8:1:2:ffff:1:2:3")}
    assert one_host == {"2001:db8:1:2::"}
    assert client_of("2001:db8:1:3::1") == "2001:db8:1:3::"  # the next /64: another client
    assert client_of("fe80::1%eth0") == "fe80::"
    assert client_of("") == ""  # no address (a Unix socket): one client, as before


def _joined(shares: ClientShares[object], peer: str, times: int) -> Holder[object]:
    for _ in range(times - 1):
        shares.join(peer)
    return shares.join(peer)


def test_holders_are_ranked_heaviest_first_and_forgotten_when_they_hold_nothing() -> None:
    shares: ClientShares[object] = ClientShares()
    light = shares.join("10.0.0.1")
    heavy = _joined(shares, "10.0.0.2", 3)
    middle = [shares.join("2001:db8::1"), shares.join("2001:db8::2")][0]  # one /64
    assert (light.held, middle.held, heavy.held, shares.clients) == (1, 2, 3, 3)
    assert list(shares.heavier_than(0)) == [heavy, middle, light]
    assert list(shares.heavier_than(1)) == [heavy, middle]
    assert list(shares.heavier_than(3)) == []
    shares.leave(heavy)
    shares.leave(heavy)
    assert list(shares.heavier_than(0)) == [middle, light, heavy]  # light had 1 first
    shares.leave(light)
    assert shares.holder("10.0.0.1") is None and shares.clients == 2
    assert shares.join("10.0.0.1") is not light  # a new share, from nothing


def test_the_newcomers_client_counts_its_newcomer_and_chosen_places_count_no_more() -> None:
    shares: ClientShares[object] = ClientShares()
    flood = _joined(shares, "10.0.0.2", 3)
    pool = _joined(shares, "10.0.0.3", 3)
    # equal, but the newcomer from the pool's address makes it the heavier: its own first
    assert list(shares.heavier_than(0, newcomer=pool)) == [pool, flood]
    assert list(shares.heavier_than(3, newcomer=pool)) == [pool]
    assert list(shares.heavier_than(3)) == []
    # two of the flood's already chosen to give way: it weighs one, below the pool's three
    assert list(shares.heavier_than(1, taken={flood: 2})) == [pool]
    lighter = shares.join("10.0.0.4")  # one place, one more with its newcomer: weighs 2
    assert list(shares.heavier_than(1, newcomer=lighter)) == [flood, pool, lighter]


def test_the_newcomers_client_comes_before_the_others_of_its_count() -> None:
    # The newcomer's client was ranked among those of its count, in the order they reached
    # it: another client holding as many, one place lighter, gave its connection first.
    shares: ClientShares[object] = ClientShares()
    heaviest = _joined(shares, "10.0.0.1", 3)
    other = _joined(shares, "10.0.0.2", 2)
    newcomers = _joined(shares, "10.0.0.3", 2)  # with its newcomer: 3, as the heaviest
    light = shares.join("10.0.0.4")
    assert list(shares.heavier_than(0, newcomer=newcomers)) == [heaviest, newcomers, other, light]
    assert list(shares.heavier_than(2, newcomer=newcomers)) == [heaviest, newcomers]
