"""The running gateway's shared parts, built once by ``serve`` (never at import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from smsrelay.domain.pricing import DEFAULT_PRICES_EUR, PriceTable
from smsrelay.service.accounts import AccountDirectory
from smsrelay.service.alphabets import SenderAlphabets
from smsrelay.service.clock import Clock, FixedClock, SystemClock
from smsrelay.service.heavy_reads import HeavyReadTurns
from smsrelay.service.sending import SendContext
from smsrelay.settings import Settings
from smsrelay.store.interface import Store
from smsrelay.store.records import CallbackBuilders


@dataclass
class Gateway:
    settings: Settings
    store: Store
    clock: Clock
    prices: PriceTable
    accounts: AccountDirectory
    builders: CallbackBuilders  # callback bodies (webhooks.payloads, given by the caller)
    extras: dict[str, Any] = field(default_factory=dict)
    wake_dispatcher: Callable[[], None] = field(default=lambda: None)
    # connector -> SMPP session (mode) -> bound now; set by serve once the connectors exist
    smsc_binds: Callable[[], dict[str, dict[str, bool]]] = field(default=dict)
    # (connector, session, silent|closed) -> SMPP links lost since start
    links_lost: Callable[[], dict[tuple[str, str, str], int]] = field(default=dict)
    # the HTTP server's connections, cap and refusals; set by serve once it listens
    http_load: Callable[[], dict[str, int]] = field(default=dict)
    # why the store cannot take sends now (a failing commit, a disk under its reserve), if so
    store_trouble: Callable[[], str | None] = field(default=lambda: None)
    # callbacks this process has delivered since it started; set by serve with the sender
    callbacks_delivered: Callable[[], int] = field(default=lambda: 0)
    callbacks_given_up: Callable[[], int] = field(default=lambda: 0)  # likewise
    receipts_received: Callable[[], int] = field(default=lambda: 0)  # likewise, with inbound
    replies_received: Callable[[], int] = field(default=lambda: 0)  # likewise
    messages_accepted: int = 0  # sends this process answered 200 (each stored first)
    sandbox_accepted: int = 0  # of those, sandbox sends (priced, never sent)
    # (connector, outcome) -> submit outcomes recorded since start; set with the dispatcher
    submit_outcomes: Callable[[], dict[tuple[str, str], int]] = field(default=dict)
    # set by serve before the API listens when a connector's alphabet is narrower than GSM
    alphabets: SenderAlphabets | None = None
    # each account's turns at the endpoints whose cost grows with the request
    heavy_reads: HeavyReadTurns = field(default_factory=HeavyReadTurns)

    @cached_property  # one per gateway, not one per request: its parts never change
    def send_context(self) -> SendContext:
        return SendContext(
            store=self.store,
            accounts=self.accounts,
            clock=self.clock,
            prices=self.prices,
            stop_mention=self.settings.stop_mention,
            alphabets=self.alphabets,
        )


def build_clock(settings: Settings) -> Clock:
    if settings.fixed_clock:
        return FixedClock.from_iso(settings.fixed_clock)
    return SystemClock()


def build_prices(settings: Settings) -> PriceTable:
    return PriceTable.from_eur({**DEFAULT_PRICES_EUR, **settings.prices})


def build_gateway(
    settings: Settings, store: Store, builders: CallbackBuilders, clock: Clock | None = None
) -> Gateway:
    """``clock``: the database's time on a shared database (``service.database_time``)."""
    clock = build_clock(settings) if clock is None or settings.fixed_clock else clock
    return Gateway(
        settings=settings,
        store=store,
        clock=clock,
        prices=build_prices(settings),
        accounts=AccountDirectory(store, clock, settings.trusted_proxies),
        builders=builders,
    )
