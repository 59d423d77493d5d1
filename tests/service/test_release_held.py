"""Quiet hours switched off beside a serving process: a message it accepted from the old
setting (its account cache) after the first release pass is released by the second."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smsrelay.service.accounts import release_held
from tests.factories import new_message, open_store


def _held() -> object:
    return new_message(created_at=100.0, due_at=5_000.0)  # held until 5,000


async def test_an_accept_from_the_old_setting_between_the_passes_is_released(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path, {"+33757000001": "default"})
    try:
        first = await store.accept_message(_held())
        between = asyncio.Event()
        second_pass = asyncio.Event()

        async def settled() -> None:
            between.set()
            await second_pass.wait()

        releasing = asyncio.create_task(release_held(store, 1, beside_serve=True, settled=settled))
        await asyncio.wait_for(between.wait(), 10)
        late = await store.accept_message(_held())  # a serving process's cached setting
        second_pass.set()
        assert await asyncio.wait_for(releasing, 10) == 2
        claimed = await store.claim_due_parts("default", 200.0, 10, 260.0)
        assert sorted(part.message_id for part in claimed) == [first, late]
    finally:
        await store.close()
