"""Answering a batch's writes: every caller hears back, whatever one answer does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from smsrelay.store.answers import resolve_all


class _Refusing(asyncio.Future[Any]):
    """A future that cannot take its answer (a bug of ours would look like this)."""

    def set_result(self, result: Any) -> None:
        raise RuntimeError("cannot take it")


async def test_one_answer_that_fails_is_logged_and_the_rest_are_still_given(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    before, refusing, after = loop.create_future(), _Refusing(loop=loop), loop.create_future()
    resolve_all([(before, 1, None), (refusing, 2, None), (after, None, ValueError("no"))])
    assert before.result() == 1
    assert isinstance(after.exception(), ValueError)
    assert "store.answer.failed" in caplog.text


async def test_a_cancelled_or_already_answered_write_is_left_as_it_is() -> None:
    loop = asyncio.get_running_loop()
    cancelled, answered = loop.create_future(), loop.create_future()
    cancelled.cancel()
    answered.set_result("first")
    resolve_all([(cancelled, 1, None), (answered, "second", None)])
    assert cancelled.cancelled() and answered.result() == "first"
