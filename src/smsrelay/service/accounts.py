"""Accounts: authentication with a short cache, creation, the demo account, management."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from smsrelay import settings
from smsrelay.domain.callback_urls import check_callback_url
from smsrelay.domain.ip_access import (
    Network,
    Origin,
    client_address,
    networks_text,
    parse_networks,
    split_list,
    within,
)
from smsrelay.domain.numbers import parse_international
from smsrelay.domain.pricing import eur_to_micros
from smsrelay.domain.quiet_hours import Region
from smsrelay.errors import DomainError
from smsrelay.logs import SparseLine
from smsrelay.service.clock import Clock
from smsrelay.service.keys import hash_api_key, new_api_key, new_webhook_secret
from smsrelay.service.retention import YIELD_S
from smsrelay.store.interface import Store
from smsrelay.store.records import Account, NumberRecord

DEMO_ACCOUNT = "demo"
DEMO_NUMBER = "+33757000001"
DEFAULT_CONNECTOR = settings.DEFAULT_CONNECTOR
# Cached accounts are only a first gate: disabled/credit are re-checked inside the write.
CACHE_SECONDS = 1.0
WRONG_KEYS_SAID_EVERY_S = 60.0
REFUSED_ADDRESSES_SAID_EVERY_S = 60.0
ANY_ADDRESS = ("", "any")  # `accounts set --allowed-ips`: no restriction
log = logging.getLogger("smsrelay.api")


class AccountDirectory:
    """Looks up accounts by API key, caching hits for a second (the hot path of send)."""

    def __init__(
        self, store: Store, clock: Clock, trusted_proxies: tuple[Network, ...] = ()
    ) -> None:
        self._store = store
        self._clock = clock  # kept for callers; the cache ages on the monotonic clock
        self._trusted_proxies = trusted_proxies  # whose X-Forwarded-For is believed
        self._cache: dict[str, tuple[float, Account]] = {}
        # someone guessing keys shows in the log: a line a minute at most, with the count
        # (never the key), the end of a burst included
        self._wrong_keys = SparseLine(log, "api.key.incorrect", WRONG_KEYS_SAID_EVERY_S)
        # so does a key used from where its account does not allow (leaked, or a new server)
        self._refused_addresses = SparseLine(
            log, "api.ip.not_authorised", REFUSED_ADDRESSES_SAID_EVERY_S
        )

    async def authenticate(self, api_key: str | None, origin: Origin | None) -> Account:
        """The account of ``api_key``, if it may be used from ``origin`` (None: from no
        network address, which an account that restricts its key does not allow). A wrong
        key is code 10 and a disabled account code 20 wherever the client is; then code 96."""
        if not api_key or api_key.isspace():  # blank is missing (code 1), not a wrong key
            raise DomainError("apikey.required", "the API key is required", "apiKey")
        key_hash = hash_api_key(api_key)
        now = time.monotonic()  # not the gateway clock: a fixed test clock must not pin it
        hit = self._cache.get(key_hash)
        if hit is not None and 0 <= now - hit[0] < CACHE_SECONDS:
            account = hit[1]
        else:
            found = await self._store.account_by_key_hash(key_hash)
            if found is None:
                self._wrong_keys.note({})
                raise DomainError("apikey.incorrect", "incorrect API key", "apiKey")
            account = found
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_hash] = (now, account)
        if account.disabled:
            raise DomainError("account.disabled", "account disabled", "apiKey")
        if account.allowed_ips:  # the client's address is read only for accounts that ask
            self._check_address(account, origin)
        return account

    def _check_address(self, account: Account, origin: Origin | None) -> None:
        address = None if origin is None else client_address(origin, self._trusted_proxies)
        if address is not None and within(address, account.allowed_ips):
            return
        shown = "unknown address" if address is None else str(address)
        self._refused_addresses.note({"account": account.name, "address": shown})
        raise DomainError("ip.not_authorised", f"IP not authorised: {shown}", "apiKey")

    def forget(self) -> None:
        self._cache.clear()


@dataclass(frozen=True)
class CreatedAccount:
    account: Account
    api_key: str


def check_new_account(name: str, credit_eur: str) -> int:
    """The name and the starting credit in micro-euros, or why not (DomainError for the name,
    ValueError for the amount): pure, so the CLI asks before it opens or creates a database."""
    if not name or len(name) > 64 or not name.isprintable() or any(c.isspace() for c in name):
        # isprintable: no control or invisible format characters (a zero-width space made a
        # name that looks like another's)
        raise DomainError(
            "account.name", "account names are 1-64 visible characters without spaces"
        )
    credit = eur_to_micros(credit_eur)
    if credit < 0:
        raise ValueError("an account cannot start below zero")
    return credit


async def create_account(store: Store, name: str, credit_eur: str, clock: Clock) -> CreatedAccount:
    credit = check_new_account(name, credit_eur)
    key = new_api_key()
    account = await store.create_account(name, hash_api_key(key), credit, clock.now())
    return CreatedAccount(account, key)


async def ensure_demo(
    store: Store,
    credit_eur: str,
    clock: Clock,
    *,
    quiet_hours: bool = True,
    api_key: str | None = None,
) -> Account | None:
    """On an empty database: the demo account with its key kept to print (``api_key``, or a
    random one), and its number."""
    if await store.list_accounts():
        return await store.find_account(DEMO_ACCOUNT)
    key = api_key or new_api_key()
    try:
        await store.create_account(
            DEMO_ACCOUNT, hash_api_key(key), eur_to_micros(credit_eur), clock.now(), demo_key=key
        )
    except DomainError as exc:  # another node of a shared database made it first: theirs
        if exc.code != "account.exists":
            raise
        return await store.find_account(DEMO_ACCOUNT)
    await store.add_number(DEMO_ACCOUNT, DEMO_NUMBER, DEFAULT_CONNECTOR, clock.now())
    if not quiet_hours:
        await store.update_account(DEMO_ACCOUNT, {"quiet_hours": 0})
    return await store.find_account(DEMO_ACCOUNT)


async def rotate_key(store: Store, name: str) -> str:
    key = new_api_key()
    await store.set_key_hash(name, hash_api_key(key))
    return key


def account_changes(
    *,
    quiet_hours: bool | None = None,
    region: str | None = None,
    marketing: bool | None = None,
    reply_url: str | None = None,
    reassemble_replies: bool | None = None,
    webhook_secret: str | None = None,
    disabled: bool | None = None,
    allowed_ips: str | None = None,
) -> dict[str, Any]:
    """Validate `accounts set` options into column changes."""
    changes: dict[str, Any] = {}
    if quiet_hours is not None:
        changes["quiet_hours"] = int(quiet_hours)
    if region is not None:
        try:
            changes["region"] = str(Region(region))
        except ValueError as exc:
            choices = ", ".join(r.value for r in Region)
            raise DomainError("account.region", f"region must be one of: {choices}") from exc
    if marketing is not None:
        changes["marketing"] = int(marketing)
    if reply_url is not None:
        check_callback_url(reply_url, "reply URL")  # refused now, not at the first reply
        changes["reply_url"] = reply_url or None
    if reassemble_replies is not None:
        changes["reassemble_replies"] = int(reassemble_replies)
    if webhook_secret is not None:
        changes["webhook_secret"] = _webhook_secret(webhook_secret)
    if disabled is not None:
        changes["disabled"] = int(disabled)
    if allowed_ips is not None:
        changes["allowed_ips"] = _allowed_ips(allowed_ips)
    return changes


def _allowed_ips(given: str) -> str:
    """``""`` or ``any``: from anywhere; else comma-separated addresses and CIDR networks,
    stored in their canonical form (``2001:DB8::/32`` -> ``2001:db8::/32``)."""
    if given.strip().lower() in ANY_ADDRESS:
        return ""
    try:
        networks = parse_networks(split_list(given))
    except ValueError as exc:
        raise DomainError("account.allowed_ips", f"--allowed-ips: {exc}") from exc
    if not networks:  # only commas and spaces: not a way to say "anywhere"
        raise DomainError("account.allowed_ips", "--allowed-ips: no address given ('any' clears)")
    return networks_text(networks)


MIN_WEBHOOK_SECRET = 16


def _webhook_secret(given: str) -> str | None:
    """``generate``: a random one; empty: none; else at least 16 characters (a short one is
    guessed offline from a single signed callback)."""
    if given == "generate":
        return new_webhook_secret()
    if given and (len(given) < MIN_WEBHOOK_SECRET or given.isspace()):
        raise DomainError(
            "account.webhook_secret",
            f"a webhook secret must be at least {MIN_WEBHOOK_SECRET} characters "
            "(`generate` makes a random one)",
        )
    return given or None


async def add_number(
    store: Store, account: str, raw_number: str, connector: str, clock: Clock
) -> NumberRecord:
    number = parse_international(raw_number, "msisdn")
    return await store.add_number(account, number.e164, connector, clock.now())


async def remove_number(store: Store, raw_number: str) -> int:
    """Detach it; how many of its messages are not finished (they still leave from it)."""
    number = parse_international(raw_number, "msisdn")
    await store.remove_number(number.e164)
    return await store.unfinished_from(number.e164)


RELEASE_STEP = 1000  # parts made due per transaction, as the purge's steps


# A serving process may answer from the old setting for CACHE_SECONDS after the switch, and
# hold what it accepts meanwhile: released by a second pass once that and its commit are over.
STALE_ACCEPTS_SETTLE = CACHE_SECONDS + 1.0


async def _stale_accepts_settled() -> None:
    await asyncio.sleep(STALE_ACCEPTS_SETTLE)


async def release_held(
    store: Store,
    account_id: int,
    *,
    beside_serve: bool = False,
    settled: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Quiet hours switched off: what they hold for the account leaves at once. In steps,
    pausing between them beside a serving process as ``db purge`` does; how many parts.
    Beside a serving process, a second pass once ``settled`` (by default, when no process
    can still be answering from the account's old setting)."""
    released = await _release_held_once(store, account_id, beside_serve)
    if beside_serve:
        await (settled or _stale_accepts_settled)()
        released += await _release_held_once(store, account_id, beside_serve)
    return released


async def _release_held_once(store: Store, account_id: int, beside_serve: bool) -> int:
    released = 0
    while moved := await store.release_held(account_id, RELEASE_STEP):
        released += moved
        if beside_serve:
            await asyncio.sleep(YIELD_S)
    return released
