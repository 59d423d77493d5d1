"""The alphabet a sender's SMSC carries GSM text in, when it is narrower than GSM's.

A connector with ``gsm_data_coding`` 1 (IA5) or 3 (Latin-1) sends GSM text in that alphabet:
a character it lacks (``é`` in IA5, ``€`` or ``Δ`` in Latin-1) reached the phone as ``?``. The
accept path asks here which codec the sender's connector uses, so such a text goes as UCS-2 and
is counted and priced so. With no such connector (the usual case) nothing is looked up.
"""

from __future__ import annotations

import time

from smsrelay.domain.data_coding import SMSC_DEFAULT_CODECS
from smsrelay.store.interface import Store

CACHE_SECONDS = 1.0  # numbers move between connectors by hand, rarely; as accounts' cache


class SenderAlphabets:
    """The codec of each number's connector, for the connectors that have a narrow one."""

    def __init__(self, store: Store, gsm_data_codings: dict[str, int]) -> None:
        self._store = store
        self._narrow = {
            name: SMSC_DEFAULT_CODECS[coding]
            for name, coding in gsm_data_codings.items()
            if coding in SMSC_DEFAULT_CODECS
        }
        self._cache: dict[int, tuple[float, dict[str, str]]] = {}  # account -> number -> conn

    @property
    def any_narrow(self) -> bool:
        return bool(self._narrow)

    async def codec_of(self, account_id: int, sender: str) -> str | None:
        """``sender``'s connector's codec when it is narrower than GSM, else None."""
        connector = (await self._connectors_of(account_id)).get(sender)
        return None if connector is None else self._narrow.get(connector)

    async def _connectors_of(self, account_id: int) -> dict[str, str]:
        now = time.monotonic()
        hit = self._cache.get(account_id)
        if hit is not None and 0 <= now - hit[0] < CACHE_SECONDS:
            return hit[1]
        numbers = {n.msisdn: n.connector for n in await self._store.numbers_of(account_id)}
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[account_id] = (now, numbers)
        return numbers
