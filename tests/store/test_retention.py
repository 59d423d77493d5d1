"""Retention: finished history older than the cutoff goes, everything else stays."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from smsrelay.store.records import InboundReply, IncomingReceipt
from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS
from tests.factories import delivered_message, new_message, open_store

DAY = 86400.0
CUTOFF = 100 * DAY


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    s = await open_store(store_url, {"+33757000001": "default"})
    yield s
    await s.close()


async def _delivered(store: SqlStore, at: float, carrier_id: str) -> int:
    """A message sent and delivered at ``at``, its DLR callback queued."""
    return await delivered_message(store, at, carrier_id, url_dlr="https://example.com/dlr")


async def _purge_all(store: SqlStore, kind: str) -> int:
    deleted, after_id = 0, 0
    while True:
        step = await store.purge_history(kind, CUTOFF, after_id, 2)  # tiny chunks: the walk
        deleted, after_id = deleted + step.deleted, step.last_id
        if step.done:
            return deleted


async def _count(store: SqlStore, table: str) -> int:
    row = await store.db.read(lambda c: c.execute(f"SELECT COUNT(*) FROM {table}").fetchone())
    return int(row[0])


async def test_finished_history_goes_and_work_still_to_do_stays(store: SqlStore) -> None:
    old_done = await _delivered(store, 10 * DAY, "a1")
    old_waiting_callback = await _delivered(store, 11 * DAY, "a2")
    [job, _] = await store.claim_due_webhooks(20 * DAY, 10, 20 * DAY + 60)
    assert job.id  # the first callback is delivered, the second still to post
    await store.record_webhook_attempt(job.id, 20 * DAY, 200, 5.0, None, "delivered", None)
    old_in_flight = await store.accept_message(new_message(created_at=12 * DAY, due_at=12 * DAY))
    await store.claim_due_parts("default", 12 * DAY, 10, 12 * DAY + 60)
    recent = await _delivered(store, 150 * DAY, "a3")

    assert await _purge_all(store, "messages") == 1
    assert await _purge_all(store, "callbacks") == 1
    kept = {m for m in (old_done, old_waiting_callback, old_in_flight, recent)}
    assert {m for m in kept if await store.get_message(m)} == {
        old_waiting_callback,
        old_in_flight,
        recent,
    }
    assert await _count(store, "webhook_attempts") == 0  # went with its callback
    assert await _count(store, "receipts") == 2 and await _count(store, "webhooks") == 2


async def test_old_replies_go_unless_a_callback_is_still_to_post(store: SqlStore) -> None:
    await store.update_account("a", {"reply_url": "https://example.com/mo"})

    def reply(at: float, text: str) -> InboundReply:
        return InboundReply(
            "default", "+33612345678", "+33757000001", text, "X", lambda _: False, at
        )

    first = await store.record_reply(reply(10 * DAY, "one"), BUILDERS)
    await store.record_reply(reply(11 * DAY, "two"), BUILDERS)
    [job] = await store.claim_due_webhooks(20 * DAY, 10, 20 * DAY + 60)  # one conversation:
    await store.record_webhook_attempt(job.id, 20 * DAY, 200, 5.0, None, "delivered", None)
    assert first.callbacks == 1  # "one" posted; "two" waits its turn

    assert await _purge_all(store, "replies") == 1  # "two" still has a callback to post


async def test_a_receipt_that_never_found_its_part_goes_after_the_cutoff(store: SqlStore) -> None:
    for at, carrier_id in ((10 * DAY, "lost"), (150 * DAY, "early")):
        receipt = IncomingReceipt("default", carrier_id, (carrier_id,), "DELIVRD", None, at)
        assert not await store.record_receipt(receipt, BUILDERS)
    assert await _purge_all(store, "unmatched receipts") == 1
    assert await _count(store, "receipts") == 1
    assert await _count(store, "early_receipt_keys") == 1


async def test_a_message_a_reply_held_for_reassembly_answers_stays(store: SqlStore) -> None:
    # Purged, the reply lost its way: its callback goes to the message's urlResponse, read
    # from the message row when the other parts come (or the hour is up): none was posted.
    await store.update_account("a", {"reassemble_replies": 1})
    answered = await delivered_message(store, 10 * DAY, "m1", url_response="https://e.com/mo")
    part = InboundReply(
        "default",
        "+33612345678",
        "+33757000001",
        "p1",
        "P",
        lambda _: False,
        CUTOFF - 60,
        (7, 2, 1),
    )
    assert (await store.record_reply(part, BUILDERS)).linked_message_id == answered
    assert await _purge_all(store, "messages") == 0
    assert await store.flush_stale_reassemblies(CUTOFF + 4000, CUTOFF + 4000, BUILDERS) == 1
    [callback] = await store.list_webhooks(None, 10)
    assert callback.url == "https://e.com/mo"


async def test_one_row_stamped_in_the_future_does_not_end_every_walk(store: SqlStore) -> None:
    # A clock stepped back after it: every purge stopped in its first chunk, at that row.
    await delivered_message(store, 400 * DAY, "future")
    for n in range(7):
        await delivered_message(store, 10 * DAY + n, f"old{n}")
    await delivered_message(store, 150 * DAY, "recent")
    assert await _purge_all(store, "messages") == 7  # in chunks of 2: it stopped after 1


async def test_an_id_is_never_given_again_after_a_purge(store: SqlStore) -> None:
    # SQLite gives a new row the highest id plus one: with the newest message purged, the
    # next one took its id, and a client holding it read another message's status
    ids = [await delivered_message(store, 10 * DAY + n, f"old{n}") for n in range(3)]
    assert await _purge_all(store, "messages") == 2  # the newest waits for a newer one
    assert await _purge_all(store, "callbacks") == 0 and await _purge_all(store, "replies") == 0
    sandboxed = await store.accept_message(new_message(created_at=11 * DAY, sandbox=True))
    assert await store.purge_sandbox(CUTOFF) == 0  # the newest again
    newer = await delivered_message(store, 12 * DAY, "newer")
    assert newer > sandboxed > ids[-1]
    assert await store.purge_sandbox(CUTOFF) == 1
    assert await _purge_all(store, "messages") == 1  # ids[-1]: no longer the newest
    assert await store.get_message(newer) is not None
    assert await store.accept_message(new_message(created_at=13 * DAY)) > newer
