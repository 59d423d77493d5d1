"""Writing what already happened (a carrier's answer, a receiver's) until the store takes it.

Giving up would undo nothing outside: the part or the callback would go out again, a
duplicate. So a write the store refuses for now (TransientError: locked by a CLI command, a
stalled disk) is tried again, 0.05 s then doubling up to 6.4 s apart, until it is stored or
``give_up`` says the process is stopping (a failed fsync stops the process anyway).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from smsrelay.errors import TransientError

FIRST_DELAY = 0.05
LONGEST_DELAY = 6.4


async def until_stored(
    write: Callable[[], Awaitable[None]],
    *,
    on_refusal: Callable[[TransientError], None],
    give_up: Callable[[], bool] = lambda: False,
) -> None:
    """Await ``write()`` until it succeeds; a refusal is reported, then retried later."""
    delay = FIRST_DELAY
    while True:
        try:
            await write()
            return
        except TransientError as exc:
            if give_up():
                raise
            on_refusal(exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, LONGEST_DELAY)
