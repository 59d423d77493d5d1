"""Quiet hours asked again when a part is claimed: a message that could not leave before 20:00
does not go out in the night (both engines)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS
from tests.factories import new_message, open_store

NOW = 1_000.0
RELEASE = 50_000.0  # the release time the quiet regions are given: a stand-in for 08:00
QUIET = {"metropole": RELEASE}


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    s = await open_store(store_url, {"+33757000001": "default"})
    await s.update_account("a", {"quiet_hours": 1})
    yield s
    await s.close()


async def _state(store: SqlStore, message_id: int) -> tuple[str, float | None, list[tuple]]:
    message = await store.get_message(message_id)
    assert message is not None
    parts = [(p.state, p.attempts) for p in message.parts]
    return message.state, message.due_at, parts


async def _a_transactional_accounts_message(store: SqlStore) -> int:
    """A message due now from account "b" (id 2), whose quiet hours are off."""
    await store.create_account("b", "hash-b", 1_000_000, 0.0)
    await store.update_account("b", {"quiet_hours": 0})
    await store.add_number("b", "+33757000002", "default", 0.0)
    return await store.accept_message(
        new_message(account_id=2, sender="+33757000002", created_at=NOW, due_at=NOW)
    )


async def test_a_due_part_claimed_in_quiet_hours_goes_back_held_until_the_release(
    store: SqlStore,
) -> None:
    message_id = await store.accept_message(new_message(created_at=NOW - 5, due_at=NOW - 5))

    assert await store.claim_due_parts("default", NOW, 10, NOW + 60, QUIET) == []
    assert await _state(store, message_id) == ("held", RELEASE, [("queued", 0)])
    assert await store.claim_due_parts("default", RELEASE - 1, 10, RELEASE + 60) == []

    [part] = await store.claim_due_parts("default", RELEASE, 10, RELEASE + 60)
    assert part.message_id == message_id and part.attempts == 1
    assert (await _state(store, message_id))[0] == "queued"


async def test_the_accounts_setting_now_decides_not_the_one_at_the_accept(
    store: SqlStore,
) -> None:
    message_id = await store.accept_message(new_message(created_at=NOW, due_at=NOW))
    await store.update_account("a", {"quiet_hours": 0})  # a transactional account now

    [part] = await store.claim_due_parts("default", NOW, 10, NOW + 60, QUIET)
    assert part.message_id == message_id


async def test_only_the_regions_quiet_now_hold(store: SqlStore) -> None:
    # Good Friday: a holiday in Alsace-Moselle only; a metropolitan account sends.
    message_id = await store.accept_message(new_message(created_at=NOW, due_at=NOW))
    good_friday = {"alsace-moselle": RELEASE}
    [part] = await store.claim_due_parts("default", NOW, 10, NOW + 60, good_friday)
    assert part.message_id == message_id

    await store.update_account("a", {"region": "alsace-moselle"})
    other = await store.accept_message(new_message(created_at=NOW, due_at=NOW))
    assert await store.claim_due_parts("default", NOW, 10, NOW + 60, good_friday) == []
    assert (await _state(store, other))[:2] == ("held", RELEASE)


async def test_a_message_that_began_to_leave_is_finished(store: SqlStore) -> None:
    # Part 1 left at 19:59; part 2, refused for a moment, is retried after 20:00: holding it
    # until the morning would split the text across the night on the handset.
    await store.accept_message(
        new_message(nb_sms=2, text="x" * 200, created_at=NOW - 60, due_at=NOW - 60)
    )
    first, second = await store.claim_due_parts("default", NOW - 60, 10, NOW)
    await store.mark_submitted(first.part_id, "c1", "c1", NOW - 59, BUILDERS, 2)
    await store.mark_retry(second.part_id, NOW - 1, "throttled", counted=False)

    [again] = await store.claim_due_parts("default", NOW, 10, NOW + 60, QUIET)
    assert again.part_id == second.part_id


async def test_only_the_quiet_messages_of_a_claim_go_back(store: SqlStore) -> None:
    held = await store.accept_message(new_message(created_at=NOW, due_at=NOW))
    sent = await _a_transactional_accounts_message(store)

    claimed = await store.claim_due_parts("default", NOW, 10, NOW + 60, QUIET)
    assert [part.message_id for part in claimed] == [sent]
    assert (await _state(store, held))[0] == "held"


async def test_a_message_whose_part_may_have_left_is_finished(store: SqlStore) -> None:
    # Part 1 was out at 19:59 when the link was lost: requeued, and the handset may have it.
    # Holding both parts until the morning could split the text across the night.
    message_id = await store.accept_message(
        new_message(nb_sms=2, text="x" * 200, created_at=NOW - 60, due_at=NOW - 60)
    )
    [first] = await store.claim_due_parts("default", NOW - 60, 1, NOW)  # a window of 1
    await store.mark_retry(first.part_id, NOW - 1, "lost", may_have_left=True)

    claimed = await store.claim_due_parts("default", NOW, 10, NOW + 60, QUIET)
    assert sorted(part.message_id for part in claimed) == [message_id, message_id]


async def test_a_claim_goes_past_a_backlog_that_quiet_hours_hold(store: SqlStore) -> None:
    # At 20:00 the first due parts are all held again: the claim looks further in the same
    # transaction, so the parts behind them (another account's) do not wait a poll per batch.
    for _ in range(6):
        await store.accept_message(new_message(created_at=NOW - 10, due_at=NOW - 10))
    sent = await _a_transactional_accounts_message(store)

    claimed = await store.claim_due_parts("default", NOW, 2, NOW + 60, QUIET)
    assert [part.message_id for part in claimed] == [sent]
