"""The gateway's figures for monitoring (``GET /metrics``): the store's, read in one snapshot,
and what serve's running parts know (binds, HTTP connections, the store's health)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from smsrelay.service.gateway import Gateway
from smsrelay.store.records import StoreFigures

log = logging.getLogger("smsrelay.monitoring")


@dataclass(frozen=True)
class GatewayFigures:
    now: float
    store: StoreFigures | None  # None: the store could not be read just now
    store_trouble: str | None  # why sends are refused now (failing commits, a full disk)
    smsc_binds: dict[str, dict[str, bool]]  # connector -> session -> bound
    http: dict[str, int]  # connections, max_connections, turned_away
    callbacks_delivered: int  # by this process since it started


async def gateway_figures(gateway: Gateway) -> GatewayFigures:
    now = gateway.clock.now()
    return GatewayFigures(
        now=now,
        store=await _store_figures(gateway, now),
        store_trouble=gateway.store_trouble(),
        smsc_binds=gateway.smsc_binds(),
        http=gateway.http_load(),
        callbacks_delivered=gateway.callbacks_delivered(),
    )


async def _store_figures(gateway: Gateway, now: float) -> StoreFigures | None:
    """A scrape must answer while the database is out (that is when it matters): its
    figures are then left out, and ``smsrelay_store_readable`` says so."""
    try:
        return await gateway.store.store_figures(now)
    except Exception as exc:  # any engine's error: the scrape still answers
        log.warning("metrics.store_unreadable", extra={"error": str(exc)})
        return None
