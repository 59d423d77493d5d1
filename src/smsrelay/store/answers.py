"""Answering the callers of a batch of writes, whichever engine ran it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

# Each write's future, its result, and the exception it raised (None if it succeeded).
Outcomes = list[tuple[asyncio.Future[Any], Any, BaseException | None]]
log = logging.getLogger("smsrelay.store")


def resolve_all(outcomes: Outcomes) -> None:
    """Answer every write; one answer that cannot be given is logged, never raised: the engine
    resumes its next batch after this, and a raise here would leave it waiting for good."""
    for future, result, error in outcomes:
        if future.done():  # cancelled: the caller gave up waiting; the write stands all the same
            continue
        try:
            if error is not None:
                future.set_exception(_settable(error))
            else:
                future.set_result(result)
        except Exception:
            log.exception("store.answer.failed")


def _settable(error: BaseException) -> BaseException:
    """A Future refuses StopIteration (TypeError), which would leave the rest unanswered."""
    if isinstance(error, StopIteration):
        return RuntimeError(f"a write raised StopIteration: {error!r}")
    return error
