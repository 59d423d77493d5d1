"""Items that come in during one event-loop turn, handed over together to one task.

Under load the SMSC answers dozens of ``submit_sm`` in one read: each answer recorded by its
own task costs a task, a store future and a frame chain per part, where one task and one
store write can take them all. The task is made with the turn's first item and takes the
list at its first step, which asyncio runs after the callbacks already scheduled in that turn
(the other answers of the same read), so the batch is whatever came in the meantime; an item
added after that starts the next batch. Nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TurnBatch(Generic[T]):
    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[None]],
        tasks: set[asyncio.Task[None]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._handle = handle
        self._tasks = tasks  # the owner's: what it waits for (or cancels) when it stops
        self._loop = loop
        self._items: list[T] = []
        self._next: asyncio.Task[None] | None = None  # made, not started: it takes the list

    def add(self, item: T) -> None:
        self._items.append(item)
        # none waiting, or one cancelled before it started: then the list would be stranded
        if self._next is None or self._next.done():
            self._next = task = self._loop.create_task(self._run())
            self._tasks.add(task)  # also keeps a reference until it finishes
            task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        self._next = None
        items, self._items = self._items, []
        await self._handle(items)
