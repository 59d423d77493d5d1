"""The gateway's figures for monitoring (``GET /metrics``): the store's, read in one snapshot
that scrapes share, and what serve's running parts know (binds, HTTP connections, the
store's health, the sender's counts)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from smsrelay.service.clock import Clock
from smsrelay.service.gateway import Gateway
from smsrelay.store.interface import Store
from smsrelay.store.records import StoreFigures

log = logging.getLogger("smsrelay.monitoring")
KEPT_FOR = 5.0  # seconds a store snapshot answers the scrapes that come after it
# How a claimed part's submit ended, as the dispatcher counts it: the SMSC took it; throttled
# (tried again soon, not counted); a transient error (tried again with backoff); no answer in
# time (the SMSC may have it); not sent (the link failed first); rejected for good; given up.
SUBMIT_OUTCOMES = ("ok", "throttled", "error", "unanswered", "not_sent", "rejected", "failed")
# How an SMPP link was lost: given up (silent), unbound while not read (stalled), closed under us.
LINK_LOSSES = ("silent", "stalled", "closed")


@dataclass(frozen=True)
class GatewayFigures:
    store: StoreFigures | None  # None: the store could not be read just now
    store_trouble: str | None  # why sends are refused now (failing commits, a full disk)
    smsc_binds: dict[str, dict[str, bool]]  # connector -> session -> bound
    links_lost: dict[tuple[str, str, str], int]  # (connector, session, how) -> links
    http: dict[str, int]  # connections, max_connections, turned_away, reclaimed
    callbacks_delivered: int  # by this process since it started
    callbacks_given_up: int  # likewise
    messages_accepted: int  # likewise, sandbox sends left out
    sandbox_accepted: int  # likewise
    submit_outcomes: dict[tuple[str, str], int]  # (connector, outcome) -> parts, likewise
    receipts_received: int  # likewise
    replies_received: int  # likewise
    heavy_reads: tuple[int, int, int]  # requests running, waiting their turn, refused busy


class StoreFiguresReader:
    """The store's figures for scrapes: one read at a time on the store's reader thread, its
    snapshot shared by every scrape within KEPT_FOR seconds. Scrapes may come at any rate
    (without a token, from anyone, on a stand-in gateway), a backlog of callbacks makes a
    read longer, and the API's status reads share that thread."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._kept: StoreFigures | None = None
        self._kept_at = float("-inf")
        self._reading: asyncio.Future[StoreFigures | None] | None = None

    async def figures(self) -> StoreFigures | None:
        if time.monotonic() - self._kept_at < KEPT_FOR:
            return self._kept
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        return await asyncio.shield(self._reading)  # a scrape gone does not end the read

    async def _read(self) -> StoreFigures | None:
        """A scrape must answer while the database is out (that is when it matters): its
        figures are then left out, and ``smsrelay_store_readable`` says so."""
        try:
            figures: StoreFigures | None = await self._store.store_figures(self._clock.now())
        except Exception as exc:  # any engine's error: the scrape still answers
            log.warning("metrics.store_unreadable", extra={"error": str(exc)})
            figures = None
        finally:
            self._reading = None
        self._kept, self._kept_at = figures, time.monotonic()
        return figures


async def gateway_figures(gateway: Gateway, reader: StoreFiguresReader) -> GatewayFigures:
    return GatewayFigures(
        store=await reader.figures(),
        store_trouble=gateway.store_trouble(),
        smsc_binds=gateway.smsc_binds(),
        links_lost=gateway.links_lost(),
        http=gateway.http_load(),
        callbacks_delivered=gateway.callbacks_delivered(),
        callbacks_given_up=gateway.callbacks_given_up(),
        messages_accepted=gateway.messages_accepted,
        sandbox_accepted=gateway.sandbox_accepted,
        submit_outcomes=gateway.submit_outcomes(),
        receipts_received=gateway.receipts_received(),
        replies_received=gateway.replies_received(),
        heavy_reads=(*gateway.heavy_reads.figures(), gateway.heavy_reads.refused),
    )
