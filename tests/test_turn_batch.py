"""TurnBatch: what comes in one event-loop turn goes to one call; nothing is stranded."""

from __future__ import annotations

import asyncio

from smsrelay.turn_batch import TurnBatch


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, items: list[int]) -> None:
        self.calls.append(items)

    def batch(self) -> TurnBatch[int]:
        return TurnBatch(self.handle, self.tasks, asyncio.get_running_loop())

    async def settled(self) -> None:
        while self.tasks:
            await asyncio.gather(*self.tasks)


async def test_the_items_of_one_turn_go_to_one_call_and_later_ones_to_the_next() -> None:
    recorder = Recorder()
    batch = recorder.batch()
    for item in (1, 2, 3):
        batch.add(item)
    await recorder.settled()
    batch.add(4)
    await recorder.settled()
    assert recorder.calls == [[1, 2, 3], [4]]


async def test_items_added_by_callbacks_already_scheduled_join_the_batch() -> None:
    # The answers of one read: each resumes a task of its own, all before the batch starts.
    recorder = Recorder()
    batch = recorder.batch()
    loop = asyncio.get_running_loop()
    for item in (1, 2, 3):
        loop.call_soon(batch.add, item)
    read_done = loop.create_future()
    loop.call_soon(read_done.set_result, None)  # after the three, as callbacks run in order
    await read_done
    await recorder.settled()
    assert recorder.calls == [[1, 2, 3]]


async def test_a_batch_cancelled_before_it_started_strands_nothing() -> None:
    recorder = Recorder()
    batch = recorder.batch()
    batch.add(1)
    for task in list(recorder.tasks):
        task.cancel()  # a stop that cut it short before its first step
    await asyncio.gather(*recorder.tasks, return_exceptions=True)
    batch.add(2)
    await recorder.settled()
    assert recorder.calls == [[1, 2]]
