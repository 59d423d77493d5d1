"""One semaphore per key (a receiver, a host name), forgotten when nobody holds or waits for it."""

from __future__ import annotations

import asyncio


class KeyedGates:
    def __init__(self, size: int) -> None:
        self.size = size
        self._gates: dict[str, tuple[asyncio.Semaphore, int]] = {}

    def __len__(self) -> int:
        """Keys with a user (holding their gate or waiting for it)."""
        return len(self._gates)

    def enter(self, key: str) -> asyncio.Semaphore:
        """``key``'s semaphore, counted as used until ``leave``."""
        semaphore, users = self._gates.get(key) or (asyncio.Semaphore(self.size), 0)
        self._gates[key] = (semaphore, users + 1)
        return semaphore

    def gate(self, key: str) -> asyncio.Semaphore:
        """The semaphore of ``key``, which has a user now."""
        return self._gates[key][0]

    def in_hand(self, key: str) -> int:
        """Users of ``key``: holding its gate or waiting for it."""
        gate = self._gates.get(key)
        return 0 if gate is None else gate[1]

    def leave(self, key: str) -> None:
        semaphore, users = self._gates[key]
        if users <= 1:
            del self._gates[key]
        else:
            self._gates[key] = (semaphore, users - 1)
