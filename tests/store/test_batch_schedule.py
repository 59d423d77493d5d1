"""The order a batch runs in: grouped kinds together, submit outcomes first (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from smsrelay.store.grouped import Answers, Grouped, go_first, schedule
from smsrelay.store.sql import Conn
from smsrelay.store.submit_outcomes import mark_submitted_many


def _receipts(conn: Conn, items: Sequence[Any]) -> Answers:
    return list(items)


def _accepts(conn: Conn, items: Sequence[Any]) -> Answers:
    return list(items)


@go_first
def _outcomes(conn: Conn, items: Sequence[Any]) -> Answers:
    return list(items)


def _plain(conn: Conn) -> None:
    return None


def test_a_kind_runs_together_where_it_first_came_and_plain_writes_keep_their_place() -> None:
    ops = [
        Grouped(_receipts, 1),
        _plain,
        Grouped(_accepts, 2),
        Grouped(_receipts, 3),
        _plain,
        Grouped(_accepts, 4),
    ]
    assert schedule(ops) == [[0, 3], [1], [2, 5], [4]]


def test_kinds_that_go_first_run_ahead_of_everything_in_their_order() -> None:
    ops = [Grouped(_receipts, 1), Grouped(_outcomes, 2), _plain, Grouped(_outcomes, 3)]
    assert schedule(ops) == [[1, 3], [0], [2]]


def test_submit_outcomes_go_first() -> None:
    ops = [Grouped(_receipts, 1), Grouped(mark_submitted_many, 2)]
    assert schedule(ops) == [[1], [0]]


def test_an_empty_batch_has_no_runs() -> None:
    assert schedule([]) == []
