"""How many name lookups may run at once: in all, and for one name.

A lookup cannot be cancelled once a resolver thread runs it, so each holds its slots until it
really ends (see ``address_safety._lookup``). The cap per name keeps one receiver whose name
resolves slowly from taking every slot: the others' new connections would wait behind it.
"""

from __future__ import annotations

import asyncio

from smsrelay.webhooks.keyed_gates import KeyedGates


class LookupSlots:
    def __init__(self, total: int, per_name: int) -> None:
        self._total = asyncio.Semaphore(total)
        self._names = KeyedGates(per_name)

    @property
    def names(self) -> int:
        """Names with a lookup running or waiting (their gates are forgotten after)."""
        return len(self._names)

    async def acquire(self, name: str) -> None:
        """A slot of ``name`` and one of the total; cancelled while waiting, holds neither."""
        gate = self._names.enter(name)
        try:
            await gate.acquire()
        except BaseException:
            self._names.leave(name)
            raise
        try:
            await self._total.acquire()
        except BaseException:
            gate.release()
            self._names.leave(name)
            raise

    def release(self, name: str) -> None:
        self._total.release()
        self._names.gate(name).release()
        self._names.leave(name)
