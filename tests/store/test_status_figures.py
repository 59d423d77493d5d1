"""What `smsrelay status` reads: parts claimed and not settled, callbacks not delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from smsrelay.domain.states import PartState
from smsrelay.store.message_ops import insert_callback
from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS
from tests.factories import new_message, open_store

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    s = await open_store(store_url, {"+33757000001": "default", "+33757000002": "orange"})
    yield s
    await s.close()


async def _claimed_at(store: SqlStore, part_id: int) -> float | None:
    row = await store.db.read(
        lambda c: c.execute("SELECT claimed_at FROM parts WHERE id = ?", (part_id,)).fetchone()
    )
    return None if row[0] is None else float(row[0])


async def test_a_claim_records_when_and_a_lease_renewal_keeps_it(store: SqlStore) -> None:
    await store.accept_message(new_message())
    [part] = await store.claim_due_parts("default", 200.0, 10, 260.0)
    assert await _claimed_at(store, part.part_id) == 200.0
    assert await store.renew_leases([part.part_id], 900.0) == 1  # a late answer may still come
    assert await _claimed_at(store, part.part_id) == 200.0
    assert await store.sending_parts() == {"default": (1, 200.0)}


async def _submitted(store: SqlStore, part_id: int) -> None:
    assert await store.mark_submitted(part_id, "abc", "abc", 201.0, BUILDERS, 1)


async def _retried(store: SqlStore, part_id: int) -> None:
    assert await store.mark_retry(part_id, 500.0, "no submit_sm_resp")


async def _rejected(store: SqlStore, part_id: int) -> None:
    await store.mark_part_final(part_id, PartState.REJECTED, "ESME_RINVDSTADR", 201.0, BUILDERS, 1)


async def _lease_ran_out(store: SqlStore, part_id: int) -> None:
    assert await store.release_expired_leases(261.0) == 1


@pytest.mark.parametrize("leave", [_submitted, _retried, _rejected, _lease_ran_out])
async def test_every_way_out_of_sending_clears_the_claim_time(
    store: SqlStore, leave: Callable[[SqlStore, int], Awaitable[None]]
) -> None:
    await store.accept_message(new_message())
    [part] = await store.claim_due_parts("default", 200.0, 10, 260.0)
    await leave(store, part.part_id)
    assert await _claimed_at(store, part.part_id) is None
    assert await store.sending_parts() == {}


async def test_sending_parts_per_connector_since_the_oldest_claim(store: SqlStore) -> None:
    for _ in range(2):
        await store.accept_message(new_message())
    await store.accept_message(new_message(sender="+33757000002"))
    [first, second] = await store.claim_due_parts("default", 200.0, 10, 260.0)
    await store.claim_due_parts("orange", 300.0, 10, 360.0)
    assert await store.sending_parts() == {"default": (2, 200.0), "orange": (1, 300.0)}
    # Each claim is timed on its own: a part back from a retry and claimed again is as old
    # as its new claim.
    await store.mark_retry(first.part_id, 400.0, "no submit_sm_resp")
    await store.mark_submitted(second.part_id, "abc", "abc", 401.0, BUILDERS, 1)
    await store.claim_due_parts("default", 400.0, 10, 460.0)
    assert await store.sending_parts() == {"default": (1, 400.0), "orange": (1, 300.0)}


async def test_a_part_claimed_before_claim_times_were_kept_counts_without_a_time(
    store: SqlStore,
) -> None:
    await store.accept_message(new_message())
    assert len(await store.claim_due_parts("default", 200.0, 10, 260.0)) == 1
    await store.db.write(lambda c: c.execute("UPDATE parts SET claimed_at = NULL"))
    assert await store.sending_parts() == {"default": (1, None)}


async def _callback(store: SqlStore, uuid: str, at: float) -> int:
    return await store.db.write(
        lambda c: insert_callback(c, uuid, 1, "dlr", "https://example.com/dlr", b"{}", at)
    )


async def test_a_callback_is_late_from_when_it_was_stored_whatever_its_next_try(
    store: SqlStore,
) -> None:
    assert (await store.callback_backlog(1_000.0)).oldest_due_since is None
    failing = await _callback(store, "cb-1", 10.0)
    # The receiver is down: each failed attempt puts the next try later, not the callback's age.
    await store.record_webhook_attempt(failing, 11.0, 503, 3.0, "HTTP 503", "pending", 2_000.0)
    await _callback(store, "cb-2", 900.0)
    backlog = await store.callback_backlog(late_before=500.0)
    assert (backlog.oldest_due_since, backlog.late, backlog.failed) == (10.0, 1, 0)
    assert (await store.callback_backlog()).late == 0  # no cutoff asked: none counted late


async def test_the_callback_backlog_counts_one_being_posted_not_one_delivered_or_given_up(
    store: SqlStore,
) -> None:
    delivered = await _callback(store, "cb-1", 10.0)
    given_up = await _callback(store, "cb-2", 20.0)
    await _callback(store, "cb-3", 30.0)
    await store.claim_due_webhooks(40.0, 10, 100.0)  # all three are being posted
    await store.record_webhook_attempt(delivered, 41.0, 200, 3.0, None, "delivered", None)
    await store.record_webhook_attempt(given_up, 41.0, 500, 3.0, "HTTP 500", "failed", None)
    backlog = await store.callback_backlog(late_before=1_000.0)
    assert (backlog.oldest_due_since, backlog.late, backlog.failed) == (30.0, 1, 1)
