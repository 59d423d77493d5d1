"""Grouped writes (``store.grouped``): a run of one kind of write done as ONE call must answer
and leave the database exactly as the same items done one after another.

Each equivalence test builds the same state in two databases, runs its items through the
grouped function in one call in the first and one call per item in the second, and compares
the answers and every row of every table. The concurrency tests go through the public store
methods, where the engine makes the groups."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from smsrelay.domain.states import PartState
from smsrelay.errors import DomainError
from smsrelay.smpp.receipts import carrier_id_candidates, normalise_carrier_id
from smsrelay.store import grouped, sql_store
from smsrelay.store.accept_batch import accept_many
from smsrelay.store.factory import is_postgres
from smsrelay.store.message_ops import insert_callback
from smsrelay.store.receipt_batch import Receipt, record_receipts
from smsrelay.store.records import (
    CallbackBuilders,
    ClaimedPart,
    IncomingReceipt,
    NewMessage,
    TakenPart,
    WebhookAttempt,
)
from smsrelay.store.sql import Conn
from smsrelay.store.sql_store import SqlStore
from smsrelay.store.submit_outcomes import Submitted, mark_submitted_many
from smsrelay.store.webhook_attempts import record_attempts
from smsrelay.store.webhook_ops import PARKED
from smsrelay.webhooks.payloads import BUILDERS
from tests.factories import new_message, open_store

T0 = 1_000.0
CONNECTOR = "carrier-a"
NUMBERS = {"+33757000001": CONNECTOR, "+33757000002": CONNECTOR}
DLR_URL = "https://example.com/dlr"
REPLY_URL = "https://example.com/mo"
Many = Callable[[Conn, Sequence[Any]], list[Any]]
Scenario = Callable[[SqlStore, CallbackBuilders], Awaitable[Sequence[Any]]]
Dump = dict[str, list[dict[str, Any]]]


# -- the equivalence harness ------------------------------------------------------------------


@pytest.fixture
def twin_urls(store_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two empty databases on the engine under test."""
    if not is_postgres(store_url):
        return store_url, f"sqlite:///{tmp_path}/twin.db"
    server: Any = request.getfixturevalue("postgres")
    return store_url, str(server.new_database())


def counting_builders() -> CallbackBuilders:
    """The real callback bodies, with ids from a counter: the real ids are random, and two
    databases each given a fresh one see the same ids in the same order."""
    ids = itertools.count(1)
    return CallbackBuilders(BUILDERS.dlr, BUILDERS.reply, lambda: f"cb-{next(ids)}")


async def grouped_vs_in_turn(
    urls: tuple[str, str], many: Many, scenario: Scenario
) -> tuple[list[Any], Dump]:
    """Asserts that ``scenario``'s items give the same answers and the same tables run
    grouped (first database) as one at a time (second); returns those answers and tables."""
    grouped_start, grouped_answers, grouped_tables = await _run(urls[0], many, scenario, True)
    turn_start, turn_answers, turn_tables = await _run(urls[1], many, scenario, False)
    assert grouped_start == turn_start, "the scenario must build the same state in both"
    assert grouped_answers == turn_answers
    assert grouped_tables.keys() == turn_tables.keys()
    for table, rows in grouped_tables.items():  # table by table: a readable difference
        assert (table, rows) == (table, turn_tables[table])
    return grouped_answers, grouped_tables


async def _run(
    url: str, many: Many, scenario: Scenario, grouped: bool
) -> tuple[Dump, list[Any], Dump]:
    """The tables before the items, their answers, the tables after."""
    store = await open_store(url, NUMBERS)
    try:
        items = await scenario(store, counting_builders())
        start = await store.db.read(_dump)
        if grouped:
            answers = await store.db.write(_one_call(many, items))
        else:
            answers = []
            for item in items:
                answers += await store.db.write(_one_call(many, [item]))
        return start, [_comparable(answer) for answer in answers], await store.db.read(_dump)
    finally:
        await store.close()


def _one_call(many: Many, items: Sequence[Any]) -> Callable[[Conn], list[Any]]:
    """A write that runs ``items`` through ``many`` in one call."""
    return lambda conn: many(conn, items)


def _comparable(answer: Any) -> Any:
    """Exceptions compare by identity: a refusal by its kind and code instead."""
    if isinstance(answer, BaseException):
        return (type(answer).__name__, getattr(answer, "code", str(answer)))
    return answer


def _dump(conn: Any) -> Dump:
    """Every row of every table of the schema, ordered by its columns (the primary key
    first where the table has one), each row a dict of its columns."""
    tables = _table_names(conn)
    assert {"accounts", "messages", "parts", "receipts", "webhooks"} <= set(tables)
    dump: Dump = {}
    for table in tables:
        cursor = conn.execute(f"SELECT * FROM {table}")
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, _plain(row), strict=True)) for row in cursor.fetchall()]
        dump[table] = sorted(rows, key=_order)
    return dump


def _table_names(conn: Any) -> list[str]:
    if isinstance(conn, sqlite3.Connection):
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    else:
        query = (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
    return sorted(str(row[0]) for row in conn.execute(query).fetchall())


def _order(row: dict[str, Any]) -> list[tuple[bool, Any]]:
    return [(value is None, 0 if value is None else value) for value in row.values()]


def _plain(row: Sequence[Any]) -> list[Any]:
    return [bytes(v) if isinstance(v, memoryview) else v for v in row]


def rows(tables: Dump, table: str, **match: Any) -> list[dict[str, Any]]:
    return [row for row in tables[table] if all(row[k] == v for k, v in match.items())]


def by_id(tables: Dump, table: str, *columns: str) -> dict[int, tuple[Any, ...]]:
    """``columns`` of each row of ``table``, by id."""
    return {row["id"]: tuple(row[c] for c in columns) for row in tables[table]}


# -- building the starting state --------------------------------------------------------------


def message(**changes: Any) -> NewMessage:
    return new_message(**{"created_at": T0, "due_at": T0, **changes})


def long_message(**changes: Any) -> NewMessage:
    return message(**{"nb_sms": 2, "text": "x" * 200, "cost_micros": 90_000, **changes})


async def sending(store: SqlStore, *messages: NewMessage) -> list[ClaimedPart]:
    """The messages accepted and all their parts claimed ('sending'), in part id order."""
    for each in messages:
        await store.accept_message(each)
    return await store.claim_due_parts(CONNECTOR, T0, 1000, T0 + 60)


def submitted(
    part: ClaimedPart, carrier_id: str, at: float, builders: CallbackBuilders
) -> Submitted:
    return Submitted(part.part_id, carrier_id, carrier_id, at, builders, part.nb_sms)


async def early(store: SqlStore, carrier_id: str, stat: str, at: float) -> None:
    """A receipt for an id the store does not know yet: kept for its submit outcome."""
    receipt = IncomingReceipt(CONNECTOR, carrier_id, (carrier_id,), stat, None, at)
    assert not await store.record_receipt(receipt, BUILDERS)


async def add_callback(
    store: SqlStore, builders: CallbackBuilders, at: float, key: str | None
) -> int:
    """A reply callback; one stored behind an open one of its key is parked."""
    return await store.db.write(
        partial(
            insert_callback,
            uuid=builders.new_id(),
            account_id=1,
            kind="reply",
            url=REPLY_URL,
            body=b"{}",
            now=at,
            order_key=key,
        )
    )


async def claim_callbacks(store: SqlStore, at: float) -> list[int]:
    return [job.id for job in await store.claim_due_webhooks(at, 1000, at + 60)]


def delivered(webhook_id: int, at: float) -> WebhookAttempt:
    return WebhookAttempt(webhook_id, at, 200, 5.0, None, "delivered", None)


def given_up(webhook_id: int, at: float) -> WebhookAttempt:
    return WebhookAttempt(webhook_id, at, 500, 5.0, "HTTP 500", "failed", None)


def retried(webhook_id: int, at: float, next_due: float) -> WebhookAttempt:
    return WebhookAttempt(webhook_id, at, None, 5.0, "timeout", "pending", next_due)


# -- submit outcomes ----------------------------------------------------------------------------


async def test_submits_of_one_and_two_part_messages(twin_urls: tuple[str, str]) -> None:
    """A long message is submitted once every part is: with both parts in one run it must
    read both parts' new states; with one of them, it is still queued."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Submitted]:
        single, both_1, both_2, half_1, _ = await sending(
            store, message(url_dlr=DLR_URL), long_message(url_dlr=DLR_URL), long_message()
        )
        return [
            submitted(both_1, "L1", T0 + 1, builders),
            submitted(single, "S1", T0 + 2, builders),
            submitted(half_1, "H1", T0 + 3, builders),
            submitted(both_2, "L2", T0 + 4, builders),
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, mark_submitted_many, scenario)
    assert answers == [True, True, True, True]
    assert by_id(tables, "messages", "state") == {
        1: ("submitted",),
        2: ("submitted",),
        3: ("queued",),
    }
    assert by_id(tables, "parts", "state", "carrier_id", "submitted_at", "lease_until") == {
        1: ("submitted", "S1", T0 + 2, None),
        2: ("submitted", "L1", T0 + 1, None),
        3: ("submitted", "L2", T0 + 4, None),
        4: ("submitted", "H1", T0 + 3, None),
        5: ("sending", None, None, T0 + 60),
    }
    assert tables["webhooks"] == []


async def test_a_part_no_longer_sending_is_answered_false_and_left_alone(
    twin_urls: tuple[str, str],
) -> None:
    """A part put back in the queue or refused for good before its outcome was recorded (a
    lease that expired): the late outcome changes nothing, its neighbours in the run do."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Submitted]:
        requeued, refused, fine = await sending(
            store, message(), message(url_dlr=DLR_URL), message()
        )
        assert await store.mark_retry(requeued.part_id, T0 + 30, "lease expired")
        await store.mark_part_final(
            refused.part_id, PartState.REJECTED, "refused", T0 + 5, builders, 1
        )
        return [
            submitted(requeued, "R1", T0 + 10, builders),
            submitted(fine, "F1", T0 + 11, builders),
            submitted(refused, "X1", T0 + 12, builders),
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, mark_submitted_many, scenario)
    assert answers == [False, True, False]
    assert by_id(tables, "parts", "state", "carrier_id") == {
        1: ("queued", None),
        2: ("rejected", None),
        3: ("submitted", "F1"),
    }
    assert by_id(tables, "messages", "state", "final_at") == {
        1: ("queued", None),
        2: ("rejected", T0 + 5),
        3: ("submitted", None),
    }
    assert [row["message_id"] for row in tables["webhooks"]] == [2]  # its DLR, once


async def test_the_same_part_twice_in_one_run_keeps_its_first_outcome(
    twin_urls: tuple[str, str],
) -> None:
    """An outcome recorded twice (a resp answered twice): the second finds the part
    submitted already, answers False and changes nothing."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Submitted]:
        single, long_1, long_2 = await sending(store, message(), long_message())
        return [
            submitted(single, "A", T0 + 1, builders),
            submitted(long_1, "B", T0 + 2, builders),
            submitted(single, "A-again", T0 + 3, builders),
            submitted(long_2, "C", T0 + 4, builders),
            submitted(long_1, "B-again", T0 + 5, builders),
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, mark_submitted_many, scenario)
    assert answers == [True, True, False, True, False]
    assert by_id(tables, "parts", "state", "carrier_id", "submitted_at") == {
        1: ("submitted", "A", T0 + 1),
        2: ("submitted", "B", T0 + 2),
        3: ("submitted", "C", T0 + 4),
    }
    assert by_id(tables, "messages", "state") == {1: ("submitted",), 2: ("submitted",)}


async def test_receipts_that_came_before_their_submit_outcome_are_applied(
    twin_urls: tuple[str, str],
) -> None:
    """The SMSC's receipt can beat its submit_sm_resp: kept early, it is applied when the
    run gives its part that id. A message ends once (one DLR callback, none without a URL);
    an early receipt for an id the run does not give stays kept."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Submitted]:
        single, long_1, long_2, no_url, waiting = await sending(
            store,
            message(url_dlr=DLR_URL),
            long_message(url_dlr=DLR_URL),
            message(),
            message(url_dlr=DLR_URL),
        )
        await early(store, "E1", "DELIVRD", T0 + 1)
        await early(store, "E2a", "DELIVRD", T0 + 2)
        await early(store, "E2b", "UNDELIV", T0 + 3)
        await early(store, "E3", "DELIVRD", T0 + 4)
        await early(store, "E9", "DELIVRD", T0 + 5)  # no part gets this id
        return [
            submitted(long_1, "E2a", T0 + 10, builders),
            submitted(single, "E1", T0 + 11, builders),
            submitted(waiting, "W1", T0 + 12, builders),
            submitted(no_url, "E3", T0 + 13, builders),
            submitted(long_2, "E2b", T0 + 14, builders),
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, mark_submitted_many, scenario)
    assert answers == [True] * 5
    assert by_id(tables, "messages", "state", "final_at") == {
        1: ("delivered", T0 + 1),
        2: ("undelivered", T0 + 3),
        3: ("delivered", T0 + 4),
        4: ("submitted", None),
    }
    assert by_id(tables, "parts", "state", "stat", "carrier_id") == {
        1: ("delivered", "DELIVRD", "E1"),
        2: ("delivered", "DELIVRD", "E2a"),
        3: ("undelivered", "UNDELIV", "E2b"),
        4: ("delivered", "DELIVRD", "E3"),
        5: ("submitted", None, "W1"),
    }
    dlrs = rows(tables, "webhooks", kind="dlr")
    assert sorted(row["message_id"] for row in dlrs) == [1, 2]
    assert [row["carrier_key"] for row in tables["early_receipt_keys"]] == ["E9"]
    assert rows(tables, "receipts", matched=0)[0]["carrier_id"] == "E9"
    assert sorted(row["part_id"] for row in rows(tables, "receipts", matched=1)) == [1, 2, 3, 4]


# -- callback attempts --------------------------------------------------------------------------


async def _two_chains_and_a_loner(store: SqlStore, builders: CallbackBuilders) -> None:
    """Callbacks 1, 2 (key k1), 3, 4 (key k2: 2 and 4 parked behind 1 and 3) and 5 (no key);
    1, 3 and 5 claimed."""
    for at, key in ((T0, "k1"), (T0 + 1, "k1"), (T0 + 2, "k2"), (T0 + 3, "k2"), (T0 + 4, None)):
        await add_callback(store, builders, at, key)
    assert await claim_callbacks(store, T0 + 10) == [1, 3, 5]


async def test_callbacks_delivered_or_given_up_let_the_next_of_their_key_go(
    twin_urls: tuple[str, str],
) -> None:
    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[WebhookAttempt]:
        await _two_chains_and_a_loner(store, builders)
        return [delivered(1, T0 + 11), delivered(5, T0 + 12), given_up(3, T0 + 13)]

    answers, tables = await grouped_vs_in_turn(twin_urls, record_attempts, scenario)
    assert answers == [None, None, None]
    columns = ("state", "attempts", "due_at", "delivered_at", "last_error", "lease_until")
    assert by_id(tables, "webhooks", *columns) == {
        1: ("delivered", 1, T0, T0 + 11, None, None),
        2: ("pending", 0, T0 + 1, None, None, None),  # unparked: due since it was stored
        3: ("failed", 1, T0 + 2, None, "HTTP 500", None),
        4: ("pending", 0, T0 + 3, None, None, None),
        5: ("delivered", 1, T0 + 4, T0 + 12, None, None),
    }
    history = [(row["webhook_id"], row["at"], row["status"]) for row in tables["webhook_attempts"]]
    assert history == [(1, T0 + 11, 200), (5, T0 + 12, 200), (3, T0 + 13, 500)]


async def test_a_run_with_a_retry_parks_nothing_it_should_not(twin_urls: tuple[str, str]) -> None:
    """A callback to retry keeps its key's next one parked; a delivered one in the same run
    still lets its own next one go."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[WebhookAttempt]:
        await _two_chains_and_a_loner(store, builders)
        return [delivered(1, T0 + 11), retried(3, T0 + 12, T0 + 600), given_up(5, T0 + 13)]

    _, tables = await grouped_vs_in_turn(twin_urls, record_attempts, scenario)
    assert by_id(tables, "webhooks", "state", "attempts", "due_at") == {
        1: ("delivered", 1, T0),
        2: ("pending", 0, T0 + 1),
        3: ("pending", 1, T0 + 600),
        4: ("pending", 0, PARKED),
        5: ("failed", 1, T0 + 4),
    }
    assert len(tables["webhook_attempts"]) == 3


async def test_the_same_callback_twice_in_one_run_counts_both_attempts(
    twin_urls: tuple[str, str],
) -> None:
    """Both attempts in its history and its count; the later one decides its state."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[WebhookAttempt]:
        await _two_chains_and_a_loner(store, builders)
        return [given_up(1, T0 + 11), delivered(5, T0 + 12), delivered(1, T0 + 13)]

    _, tables = await grouped_vs_in_turn(twin_urls, record_attempts, scenario)
    assert by_id(tables, "webhooks", "state", "attempts", "delivered_at", "due_at")[1] == (
        "delivered",
        2,
        T0 + 13,
        T0,
    )
    assert by_id(tables, "webhooks", "due_at")[2] == (T0 + 1,)  # its head is done: due
    assert [row["webhook_id"] for row in tables["webhook_attempts"]] == [1, 5, 1]


async def test_a_callback_released_while_still_posting_then_delivered_after_its_head(
    twin_urls: tuple[str, str],
) -> None:
    """Two nodes: callback 2 is posted by one whose lease ran out, so another node's sweep
    put it back to pending, parked behind callback 1 (given up, retried by hand, claimed
    again). Both then succeed: 1's delivery lets 2 go (due again) before 2's own is
    recorded, so 2 ends delivered with a due time, not parked."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[WebhookAttempt]:
        for at in (T0, T0 + 1, T0 + 2):
            await add_callback(store, builders, at, "k")
        assert await claim_callbacks(store, T0 + 10) == [1]
        await store.record_webhook_attempt(1, T0 + 11, 500, 1.0, "500", "failed", None)
        assert await claim_callbacks(store, T0 + 12) == [2]  # lease until T0 + 72
        assert await store.retry_webhooks(1, T0 + 20) == 1
        assert await claim_callbacks(store, T0 + 21) == [1]  # lease until T0 + 81
        assert await store.release_expired_webhook_leases(T0 + 75) == 1  # 2's, elsewhere
        return [delivered(1, T0 + 76), delivered(2, T0 + 77)]

    _, tables = await grouped_vs_in_turn(twin_urls, record_attempts, scenario)
    assert by_id(tables, "webhooks", "state", "due_at") == {
        1: ("delivered", T0 + 20),
        2: ("delivered", T0 + 1),
        3: ("pending", T0 + 2),
    }


# -- accepts ------------------------------------------------------------------------------------

B_NUMBER = "+33757000003"  # account 2's
C_NUMBER = "+33757000004"  # account 3's (disabled)
STOPPED = "+33600000001"  # in account 1's STOP list


async def three_accounts(store: SqlStore) -> None:
    """Account 1 (plenty of credit, ``STOPPED`` in its STOP list), account 2 with credit
    for 100_000 µ€, account 3 disabled."""
    await store.create_account("b", "hash-b", 100_000, 0.0)
    await store.add_number("b", B_NUMBER, CONNECTOR, 0.0)
    await store.create_account("c", "hash-c", 1_000_000, 0.0)
    await store.add_number("c", C_NUMBER, CONNECTOR, 0.0)
    await store.update_account("c", {"disabled": 1})
    await store.stop_add(1, STOPPED, 0.0, BUILDERS)


def refused(code: str) -> tuple[str, str]:
    return ("DomainError", code)


async def test_accepts_are_decided_against_the_credit_the_ones_before_left(
    twin_urls: tuple[str, str],
) -> None:
    """A refused accept debits nothing: a cheaper message after it still fits."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[NewMessage]:
        await three_accounts(store)
        b = {"account_id": 2, "sender": B_NUMBER}
        return [
            message(**b, cost_micros=60_000),
            message(**b, cost_micros=60_000),  # 40_000 left
            message(cost_micros=45_000),  # another account's credit
            message(**b, cost_micros=30_000),
            message(**b, cost_micros=20_000),  # 10_000 left
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, accept_many, scenario)
    assert answers == [1, refused("credit.insufficient"), 2, 3, refused("credit.insufficient")]
    assert by_id(tables, "accounts", "credit_micros")[2] == (10_000,)
    assert by_id(tables, "accounts", "credit_micros")[1] == (1_000_000 - 45_000,)
    assert [row["message_id"] for row in tables["parts"]] == [1, 2, 3]


async def test_refused_accepts_write_nothing_and_their_neighbours_stand(
    twin_urls: tuple[str, str],
) -> None:
    """A STOPped recipient, another account's number, a disabled account, nobody's number:
    each refused with its own code, in the order ``accept`` checks them."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[NewMessage]:
        await three_accounts(store)
        return [
            message(recipient=STOPPED),
            message(text="first"),
            message(sender=B_NUMBER),  # account 2's number
            message(account_id=3, sender=C_NUMBER),  # disabled
            message(sender="+33757000099"),  # nobody's
            message(text="second"),
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, accept_many, scenario)
    assert answers == [
        refused("recipient.stopped"),
        1,
        refused("sender.not_owned"),
        refused("account.disabled"),
        refused("sender.not_owned"),
        2,
    ]
    assert by_id(tables, "messages", "text") == {1: ("first",), 2: ("second",)}
    assert by_id(tables, "accounts", "credit_micros") == {
        1: (1_000_000 - 2 * 45_000,),
        2: (100_000,),
        3: (1_000_000,),
    }


async def test_sandbox_held_and_long_messages_are_stored_as_accepted(
    twin_urls: tuple[str, str],
) -> None:
    """A sandbox message costs nothing and has no parts; one due later is held, its parts
    due then; a long one has a part per SMS. Each message's fields stored as given."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[NewMessage]:
        await three_accounts(store)
        return [
            message(sandbox=True, tag="sand"),
            message(due_at=T0 + 3600, url_dlr=DLR_URL, url_response=REPLY_URL),
            message(nb_sms=3, text="y" * 400, cost_micros=135_000, stop_sms=True),
            message(account_id=3, sender=C_NUMBER, sandbox=True),  # disabled
            message(account_id=2, sender=B_NUMBER, sandbox=True, cost_micros=10**9),
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, accept_many, scenario)
    # a sandbox message is not charged, so credit does not refuse it; a disabled account's
    # is refused all the same (the API's account cache may be a second old)
    assert answers == [1, 2, 3, refused("account.disabled"), 4]
    columns = ("state", "sandbox", "cost_micros", "due_at", "tag", "url_dlr", "stop_sms")
    messages = by_id(tables, "messages", *columns)
    assert messages[1] == ("queued", 1, 0, T0, "sand", None, 0)
    assert messages[2] == ("held", 0, 45_000, T0 + 3600, None, DLR_URL, 0)
    assert messages[3] == ("queued", 0, 135_000, T0, None, None, 1)
    parts = [
        (row["message_id"], row["seq"], row["state"], row["due_at"]) for row in tables["parts"]
    ]
    assert parts == [
        (2, 1, "queued", T0 + 3600),
        (3, 1, "queued", T0),
        (3, 2, "queued", T0),
        (3, 3, "queued", T0),
    ]
    assert by_id(tables, "accounts", "credit_micros")[1] == (1_000_000 - 45_000 - 135_000,)
    assert by_id(tables, "accounts", "credit_micros")[2] == (100_000,)


# -- receipts -----------------------------------------------------------------------------------


async def submitted_parts(
    store: SqlStore, builders: CallbackBuilders, *messages: NewMessage
) -> list[ClaimedPart]:
    """The messages accepted and their parts submitted, part n as carrier id "Cn"."""
    parts = await sending(store, *messages)
    for part in parts:
        carrier_id = f"C{part.part_id}"
        assert await store.mark_submitted(
            part.part_id, carrier_id, carrier_id, T0 + 1, builders, part.nb_sms
        )
    return parts


def receipt(carrier_id: str, stat: str, at: float, builders: CallbackBuilders) -> Receipt:
    return Receipt(IncomingReceipt(CONNECTOR, carrier_id, (carrier_id,), stat, None, at), builders)


async def test_receipts_for_both_parts_of_a_message_end_it_once(
    twin_urls: tuple[str, str],
) -> None:
    """The message ends with its last part's receipt: one DLR callback, reporting both
    parts; a message with one part still out stays submitted."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Receipt]:
        await submitted_parts(
            store, builders, long_message(url_dlr=DLR_URL), long_message(url_dlr=DLR_URL)
        )
        return [
            receipt("C1", "DELIVRD", T0 + 10, builders),
            receipt("C3", "UNDELIV", T0 + 11, builders),
            receipt("C2", "DELIVRD", T0 + 12, builders),
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, record_receipts, scenario)
    assert answers == [True, True, True]
    assert by_id(tables, "messages", "state", "final_at") == {
        1: ("delivered", T0 + 12),
        2: ("submitted", None),
    }
    [dlr] = tables["webhooks"]
    assert (dlr["message_id"], dlr["created_at"], dlr["due_at"]) == (1, T0 + 12, T0 + 12)
    body = json.loads(dlr["body"])
    assert [(p["carrierId"], p["stat"]) for p in body["parts"]] == [
        ("C1", "DELIVRD"),
        ("C2", "DELIVRD"),
    ]


async def test_an_intermediate_then_a_final_receipt_for_one_part(
    twin_urls: tuple[str, str],
) -> None:
    """The final receipt must see the part as the intermediate one left it (still
    submitted, so it may move): the message ends, with the final receipt's stat."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Receipt]:
        await submitted_parts(store, builders, message(url_dlr=DLR_URL), long_message())
        return [
            receipt("C1", "ENROUTE", T0 + 10, builders),
            receipt("C2", "ACCEPTD", T0 + 11, builders),
            receipt("C1", "DELIVRD", T0 + 12, builders),
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, record_receipts, scenario)
    assert answers == [True, True, True]
    assert by_id(tables, "parts", "state", "stat", "done_at") == {
        1: ("delivered", "DELIVRD", T0 + 12),
        2: ("submitted", "ACCEPTD", None),
        3: ("submitted", None, None),
    }
    assert by_id(tables, "messages", "state") == {1: ("delivered",), 2: ("submitted",)}
    assert [row["message_id"] for row in tables["webhooks"]] == [1]
    assert [row["stat"] for row in tables["receipts"]] == ["ENROUTE", "ACCEPTD", "DELIVRD"]


async def test_unknown_ids_are_kept_early_and_repeats_are_recorded_without_a_move(
    twin_urls: tuple[str, str],
) -> None:
    """A receipt for an id no part has yet is kept for its submit outcome (answer False);
    one repeated after its part ended is stored, moves nothing and queues no second DLR."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Receipt]:
        await submitted_parts(store, builders, message(url_dlr=DLR_URL))
        return [
            receipt("X1", "DELIVRD", T0 + 10, builders),
            receipt("C1", "DELIVRD", T0 + 11, builders),
            receipt("C1", "DELIVRD", T0 + 12, builders),
            receipt("X1", "DELIVRD", T0 + 13, builders),
            receipt("C1", "UNDELIV", T0 + 14, builders),
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, record_receipts, scenario)
    assert answers == [False, True, True, False, True]
    assert by_id(tables, "parts", "state", "stat", "done_at") == {
        1: ("delivered", "DELIVRD", T0 + 11)
    }
    assert by_id(tables, "messages", "state", "final_at") == {1: ("delivered", T0 + 11)}
    assert len(tables["webhooks"]) == 1
    kept = rows(tables, "receipts", matched=0)
    assert [(row["carrier_id"], row["part_id"]) for row in kept] == [("X1", None), ("X1", None)]
    assert sorted(row["receipt_id"] for row in tables["early_receipt_keys"]) == [
        row["id"] for row in kept
    ]


async def test_messages_ending_in_one_run_queue_their_dlrs_in_the_order_they_end(
    twin_urls: tuple[str, str],
) -> None:
    """Message 1's first receipt comes before message 2's, but message 1 ends after it:
    one receipt after another queues message 2's callback first (its id and uuid)."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Receipt]:
        await submitted_parts(
            store, builders, long_message(url_dlr=DLR_URL), message(url_dlr=DLR_URL)
        )
        return [
            receipt("C1", "DELIVRD", T0 + 10, builders),
            receipt("C3", "DELIVRD", T0 + 11, builders),
            receipt("C2", "DELIVRD", T0 + 12, builders),
        ]

    _, tables = await grouped_vs_in_turn(twin_urls, record_receipts, scenario)
    assert by_id(tables, "webhooks", "message_id", "uuid") == {1: (2, "cb-1"), 2: (1, "cb-2")}


async def test_a_reused_id_goes_to_the_part_still_waiting_for_it(
    twin_urls: tuple[str, str],
) -> None:
    """An SMSC whose ids restarted gave "77" to two parts: the first receipt goes to the
    newest, the second to the one still waiting (not again to the one it just ended)."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Receipt]:
        older, newer = await sending(store, message(), message())
        for part in (older, newer):
            assert await store.mark_submitted(part.part_id, "77", "77", T0 + 1, builders, 1)
        return [
            receipt("77", "DELIVRD", T0 + 10, builders),
            receipt("77", "UNDELIV", T0 + 11, builders),
        ]

    _, tables = await grouped_vs_in_turn(twin_urls, record_receipts, scenario)
    assert by_id(tables, "parts", "state") == {1: ("undelivered",), 2: ("delivered",)}


# -- concurrent writes through the store: the engine makes the groups ---------------------------


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    s = await open_store(store_url, NUMBERS)
    yield s
    await s.close()


def run_sizes(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Spies on the grouped function ``name`` the store hands its engine: each run's size
    (the concurrent writes below must have made real groups, or they test nothing new)."""
    sizes: list[int] = []
    real = getattr(sql_store, name)

    def spy(conn: Conn, items: Sequence[Any]) -> list[Any]:
        sizes.append(len(items))
        answers: list[Any] = real(conn, items)
        return answers

    monkeypatch.setattr(sql_store, name, spy)
    return sizes


async def test_concurrent_submit_outcomes(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """40 one-part and 5 two-part messages, receipts already in for 3 of the former and both
    parts of one of the latter: every outcome recorded, those messages delivered, once."""
    singles = [message(url_dlr=DLR_URL, cost_micros=1) for _ in range(40)]
    longs = [long_message(url_dlr=DLR_URL, cost_micros=1) for _ in range(5)]
    parts = await sending(store, *singles, *longs)
    assert len(parts) == 50
    early_ids = {"K1", "K2", "K3", "K41", "K42"}  # parts 41 and 42: message 41's two parts
    for carrier_id in sorted(early_ids):
        await early(store, carrier_id, "DELIVRD", T0 + 1)
    sizes = run_sizes(monkeypatch, "mark_submitted_many")

    answers = await asyncio.gather(
        *(
            store.mark_submitted(
                p.part_id, f"K{p.part_id}", f"K{p.part_id}", T0 + 2, BUILDERS, p.nb_sms
            )
            for p in reversed(parts)
        )
    )

    assert answers == [True] * 50
    assert max(sizes) > 1 and sum(sizes) == 50
    tables = await store.db.read(_dump)
    for row in tables["parts"]:
        carrier_id = f"K{row['id']}"
        expected = "delivered" if carrier_id in early_ids else "submitted"
        assert (row["state"], row["carrier_id"]) == (expected, carrier_id)
    delivered_messages = [1, 2, 3, 41]
    assert [row["id"] for row in rows(tables, "messages", state="delivered")] == delivered_messages
    assert len(rows(tables, "messages", state="submitted")) == 45 - 4
    assert sorted(row["message_id"] for row in tables["webhooks"]) == delivered_messages
    assert tables["early_receipt_keys"] == []


async def test_a_dispatcher_turn_of_outcomes_is_one_write_answered_per_part(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two turns' worth of outcomes and a single one waiting together: the turns run as one
    call, their answers split back per turn; the same part again keeps its first outcome."""
    single, long_1, long_2, other = await sending(
        store, message(url_dlr=DLR_URL), long_message(), message()
    )
    taken = {
        p.part_id: TakenPart(p.part_id, f"T{p.part_id}", f"T{p.part_id}", p.nb_sms)
        for p in (single, long_1, long_2)
    }
    turns = run_sizes(monkeypatch, "mark_submitted_runs")
    singles = run_sizes(monkeypatch, "mark_submitted_many")

    answers = await asyncio.gather(
        store.mark_submitted_many([taken[single.part_id], taken[long_1.part_id]], T0 + 1, BUILDERS),
        store.mark_submitted(other.part_id, "X", "X", T0 + 1, BUILDERS, 1),
        store.mark_submitted_many([taken[long_2.part_id], taken[single.part_id]], T0 + 2, BUILDERS),
    )

    assert answers == [[True, True], True, [True, False]]
    assert (turns, singles) == ([2], [1])
    tables = await store.db.read(_dump)
    assert by_id(tables, "parts", "state", "carrier_id", "submitted_at") == {
        1: ("submitted", "T1", T0 + 1),
        2: ("submitted", "T2", T0 + 1),
        3: ("submitted", "T3", T0 + 2),
        4: ("submitted", "X", T0 + 1),
    }
    assert by_id(tables, "messages", "state") == {
        1: ("submitted",),
        2: ("submitted",),
        3: ("submitted",),
    }


async def test_a_connector_turn_of_receipts_is_one_write_answered_per_receipt(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two turns of receipts and a single one waiting together: the turns run as one call,
    each answered with its own receipts' answers (an unknown id is kept, False)."""
    parts = await sending(store, *(message(url_dlr=DLR_URL) for _ in range(3)))
    for p in parts:
        assert await store.mark_submitted(
            p.part_id, f"R{p.part_id}", f"R{p.part_id}", T0, BUILDERS, 1
        )

    def delivered_receipt(carrier_id: str) -> IncomingReceipt:
        return IncomingReceipt(CONNECTOR, carrier_id, (carrier_id,), "DELIVRD", None, T0 + 5)

    turns = run_sizes(monkeypatch, "record_receipt_runs")
    singles = run_sizes(monkeypatch, "record_receipts")
    answers = await asyncio.gather(
        store.record_receipts_many([delivered_receipt("R1"), delivered_receipt("zz")], BUILDERS),
        store.record_receipt(delivered_receipt("R2"), BUILDERS),
        store.record_receipts_many([delivered_receipt("R3")], BUILDERS),
    )

    assert answers == [[True, False], True, [True]]
    assert (turns, singles) == ([2], [1])
    tables = await store.db.read(_dump)
    assert {row["state"] for row in tables["parts"]} == {"delivered"}
    assert sorted(row["message_id"] for row in tables["webhooks"]) == [1, 2, 3]  # one DLR each
    assert [row["carrier_key"] for row in tables["early_receipt_keys"]] == ["zz"]


async def test_concurrent_callback_attempts(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 keys with two callbacks each: the 50 heads delivered or given up together, and
    then the 50 callbacks behind them (and only those) are due."""
    builders = counting_builders()
    await asyncio.gather(*(add_callback(store, builders, T0 + n, f"k{n // 2}") for n in range(100)))
    heads = await claim_callbacks(store, T0 + 200)
    assert heads == list(range(1, 101, 2))
    sizes = run_sizes(monkeypatch, "record_attempts")

    await asyncio.gather(
        *(
            store.record_webhook_attempt(head, T0 + 300, 200, 1.0, None, "delivered", None)
            if head % 3
            else store.record_webhook_attempt(head, T0 + 300, 500, 1.0, "500", "failed", None)
            for head in heads
        )
    )

    assert max(sizes) > 1 and sum(sizes) == 50
    tables = await store.db.read(_dump)
    states = by_id(tables, "webhooks", "state", "attempts")
    assert {states[head] for head in heads} == {("delivered", 1), ("failed", 1)}
    assert [row["webhook_id"] for row in tables["webhook_attempts"]] == heads
    assert await claim_callbacks(store, T0 + 301) == [head + 1 for head in heads]


async def test_concurrent_receipts_for_two_part_messages(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 messages of two parts, their 50 receipts together (each message's two in the same
    group or not): every message delivered, one DLR callback each."""
    await submitted_parts(
        store, BUILDERS, *(long_message(url_dlr=DLR_URL, cost_micros=1) for _ in range(25))
    )
    sizes = run_sizes(monkeypatch, "record_receipts")

    answers = await asyncio.gather(
        *(
            store.record_receipt(
                IncomingReceipt(CONNECTOR, f"C{n}", (f"C{n}",), "DELIVRD", None, T0 + 10),
                BUILDERS,
            )
            for n in range(1, 51)
        )
    )

    assert answers == [True] * 50
    assert max(sizes) > 1 and sum(sizes) == 50
    tables = await store.db.read(_dump)
    assert {row["state"] for row in tables["messages"]} == {"delivered"}
    assert sorted(row["message_id"] for row in tables["webhooks"]) == list(range(1, 26))
    assert len(rows(tables, "receipts", matched=1)) == 50


async def test_a_refused_accept_in_a_group_leaves_the_others_stored(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal is that item's answer, not the group's failure: the nine others are
    stored and debited, the refused one wrote nothing."""
    sizes = run_sizes(monkeypatch, "accept_many")
    senders = ["+33757000001"] * 10
    senders[4] = "+33757000099"  # nobody's number

    answers = await asyncio.gather(
        *(store.accept_message(message(sender=s, text=f"m{n}")) for n, s in enumerate(senders)),
        return_exceptions=True,
    )

    refusal = answers.pop(4)
    assert isinstance(refusal, DomainError) and refusal.code == "sender.not_owned"
    assert answers == list(range(1, 10))
    assert max(sizes) > 1 and sum(sizes) == 10
    tables = await store.db.read(_dump)
    assert [row["text"] for row in tables["messages"]] == [f"m{n}" for n in range(10) if n != 4]
    assert by_id(tables, "accounts", "credit_micros")[1] == (1_000_000 - 9 * 45_000,)


# -- long mixed runs: past a statement's chunk, every case at once -----------------------------


async def test_a_long_mixed_run_of_submit_outcomes(twin_urls: tuple[str, str]) -> None:
    """Some 300 parts of one to three parts' messages, in a shuffled order: some moved on,
    some with a receipt kept early (some kept too long to be theirs)."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Submitted]:
        rng = random.Random(7)
        messages = [
            message(nb_sms=rng.choice((1, 1, 2, 3)), cost_micros=1, url_dlr=DLR_URL)
            for _ in range(150)
        ]
        parts = await sending(store, *messages)
        for part in rng.sample(parts, 15):
            assert await store.mark_retry(part.part_id, T0 + 500, "lease expired")
        for part in rng.sample(parts, 60):
            stat = rng.choice(("DELIVRD", "UNDELIV", "ENROUTE"))
            await early(store, f"S{part.part_id}", stat, rng.choice((T0 + 50, T0 + 150)))
        rng.shuffle(parts)
        return [
            submitted(part, f"S{part.part_id}", T0 + 200 + n / 10, builders)
            for n, part in enumerate(parts)
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, mark_submitted_many, scenario)
    assert len(answers) > grouped.CHUNK and answers.count(False) == 15
    states = {row["state"] for row in tables["parts"]}
    assert {"queued", "submitted", "delivered", "undelivered"} <= states
    assert rows(tables, "webhooks", kind="dlr") and tables["early_receipt_keys"]


async def test_a_long_mixed_run_of_callback_attempts(twin_urls: tuple[str, str]) -> None:
    """600 callbacks, half of them over 60 keys, half with none: every one due delivered or
    given up, in a shuffled order; each key's next one due, the rest still parked."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[WebhookAttempt]:
        rng = random.Random(11)
        keys = [f"k{n}" for n in range(60)]
        for n in range(600):
            await add_callback(store, builders, T0 + n, rng.choice(keys) if n % 2 else None)
        heads = await claim_callbacks(store, T0 + 1000)
        rng.shuffle(heads)
        return [
            (delivered if rng.random() < 0.8 else given_up)(head, T0 + 1001 + n)
            for n, head in enumerate(heads)
        ]

    answers, tables = await grouped_vs_in_turn(twin_urls, record_attempts, scenario)
    assert len(answers) > grouped.CHUNK
    chains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in tables["webhooks"]:
        if row["order_key"] is not None:
            chains[row["order_key"]].append(row)
    for head, *behind in chains.values():  # each chain: its head done, the next one due
        assert head["state"] in {"delivered", "failed"}
        dues = [(row["state"], row["due_at"]) for row in behind]
        assert dues == [
            ("pending", row["created_at"] if n == 0 else PARKED) for n, row in enumerate(behind)
        ]


async def test_a_long_mixed_run_of_accepts(twin_urls: tuple[str, str]) -> None:
    """500 messages from three accounts (one of them short of credit, one disabled), some
    from a number they do not own, to numbers some of which are STOPped; sandbox, held and
    long ones among them."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[NewMessage]:
        await three_accounts(store)
        rng = random.Random(13)
        senders = {1: "+33757000001", 2: B_NUMBER, 3: C_NUMBER}
        items = []
        for _ in range(500):
            account = rng.choice((1, 1, 1, 2, 3))
            nb_sms = rng.choice((1, 1, 2, 3))
            items.append(
                message(
                    account_id=account,
                    sender=senders[rng.choice((1, 2, 3))]
                    if rng.random() < 0.1
                    else senders[account],
                    recipient=STOPPED if rng.random() < 0.1 else "+33612345678",
                    nb_sms=nb_sms,
                    cost_micros=nb_sms * 1_000,
                    sandbox=rng.random() < 0.1,
                    due_at=T0 + 3600 if rng.random() < 0.1 else T0,
                )
            )
        return items

    answers, tables = await grouped_vs_in_turn(twin_urls, accept_many, scenario)
    codes = {answer[1] for answer in answers if isinstance(answer, tuple)}
    assert codes == {
        "sender.not_owned",
        "recipient.stopped",
        "account.disabled",
        "credit.insufficient",
    }
    assert len(tables["messages"]) == sum(isinstance(answer, int) for answer in answers) > 256


async def test_a_long_mixed_run_of_receipts(twin_urls: tuple[str, str]) -> None:
    """300 receipts, final, intermediate or unknown words, for parts of one to three parts'
    messages whose ids an SMSC reused and that read in two bases (as "291" is 0x123), and
    for ids no part has."""

    async def scenario(store: SqlStore, builders: CallbackBuilders) -> list[Receipt]:
        rng = random.Random(17)
        messages = [
            message(
                nb_sms=rng.choice((1, 1, 2, 3)),
                cost_micros=1,
                url_dlr=DLR_URL if rng.random() < 0.7 else None,
            )
            for _ in range(100)
        ]
        for part in await sending(store, *messages):
            carrier_id = str(rng.randrange(100, 400))
            key = normalise_carrier_id(carrier_id)
            await store.mark_submitted(part.part_id, carrier_id, key, T0 + 1, builders, part.nb_sms)
        stats = ("DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "ENROUTE", "ACCEPTD", "UNKNOWN", "?")
        items = []
        for n in range(300):
            carrier_id = str(rng.randrange(100, 450))
            incoming = IncomingReceipt(
                CONNECTOR,
                carrier_id,
                carrier_id_candidates(carrier_id),
                rng.choice(stats),
                rng.choice((None, "000", "001")),
                T0 + 10 + n,
            )
            items.append(Receipt(incoming, builders))
        return items

    answers, tables = await grouped_vs_in_turn(twin_urls, record_receipts, scenario)
    assert len(answers) > grouped.CHUNK and True in answers and False in answers
    assert rows(tables, "webhooks", kind="dlr") and rows(tables, "messages", state="submitted")
