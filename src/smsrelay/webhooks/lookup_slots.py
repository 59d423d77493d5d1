"""How many name lookups may run at once: in all, and for one name.

A lookup cannot be cancelled once a resolver thread runs it, so each holds its slots until it
really ends (see ``address_safety._lookup``). The cap per name keeps one receiver whose name
resolves slowly from taking every slot: the others' new connections would wait behind it.
"""

from __future__ import annotations

import asyncio


class LookupSlots:
    def __init__(self, total: int, per_name: int) -> None:
        self._total = asyncio.Semaphore(total)
        self._per_name = per_name
        self._names: dict[str, tuple[asyncio.Semaphore, int]] = {}  # name -> slots, users

    @property
    def names(self) -> int:
        """Names with a lookup running or waiting (their gates are forgotten after)."""
        return len(self._names)

    async def acquire(self, name: str) -> None:
        """A slot of ``name`` and one of the total; cancelled while waiting, holds neither."""
        gate = self._enter(name)
        try:
            await gate.acquire()
        except BaseException:
            self._leave(name)
            raise
        try:
            await self._total.acquire()
        except BaseException:
            gate.release()
            self._leave(name)
            raise

    def release(self, name: str) -> None:
        self._total.release()
        self._names[name][0].release()
        self._leave(name)

    def _enter(self, name: str) -> asyncio.Semaphore:
        gate, users = self._names.get(name) or (asyncio.Semaphore(self._per_name), 0)
        self._names[name] = (gate, users + 1)
        return gate

    def _leave(self, name: str) -> None:
        gate, users = self._names[name]
        if users <= 1:
            del self._names[name]
        else:
            self._names[name] = (gate, users - 1)
