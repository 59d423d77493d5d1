"""A long message's outcome: final once every part is, reported by the part that decided it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from smsrelay.service.status import describe
from smsrelay.store.records import IncomingReceipt
from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS
from tests.factories import new_message, open_store


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    s = await open_store(store_url, {"+33757000001": "default"})
    yield s
    await s.close()


async def _three_parts_submitted(store: SqlStore) -> int:
    message_id = await store.accept_message(
        new_message(nb_sms=3, text="x" * 400, url_dlr="https://example.com/dlr")
    )
    for part in await store.claim_due_parts("default", 100.0, 10, 160.0):
        carrier_id = f"c{part.seq}"
        await store.mark_submitted(part.part_id, carrier_id, carrier_id, 101.0, BUILDERS, 3)
    return message_id


async def _receipt(store: SqlStore, carrier_id: str, stat: str, at: float) -> None:
    receipt = IncomingReceipt("default", carrier_id, (carrier_id,), stat, None, at)
    assert await store.record_receipt(receipt, BUILDERS)


async def test_a_part_refused_first_waits_for_its_siblings_then_one_report_tells_all(
    store: SqlStore,
) -> None:
    message_id = await _three_parts_submitted(store)
    await _receipt(store, "c1", "REJECTD", 102.0)
    message = await store.get_message(message_id)
    assert message is not None and message.state == "submitted"  # parts 2 and 3 still out
    assert await store.list_webhooks(None, 10) == []
    await _receipt(store, "c2", "DELIVRD", 103.0)
    await _receipt(store, "c3", "DELIVRD", 104.0)

    message = await store.get_message(message_id)
    assert message is not None and message.state == "rejected"
    assert describe(message).stat == "REJECTD"  # not the last part's DELIVRD
    [callback] = await store.claim_due_webhooks(200.0, 10, 260.0)
    body = json.loads(callback.body)
    assert (body["status"], body["stat"]) == ("Not delivered", "REJECTD")
    assert [p["stat"] for p in body["parts"]] == ["REJECTD", "DELIVRD", "DELIVRD"]


async def test_a_final_message_never_moves_again_nor_reports_twice(store: SqlStore) -> None:
    message_id = await _three_parts_submitted(store)
    for seq in (1, 2, 3):
        await _receipt(store, f"c{seq}", "DELIVRD", 102.0 + seq)
    final = await store.get_message(message_id)
    assert final is not None and (final.state, final.final_at) == ("delivered", 105.0)

    def refresh_as_if_still_moving(conn: object) -> str:
        from smsrelay.domain.states import PartState
        from smsrelay.store.settle import refresh

        return refresh(
            conn,  # type: ignore[arg-type]
            message_id,
            200.0,
            BUILDERS,
            only_part=PartState.SUBMITTED,
        )

    await store.db.write(refresh_as_if_still_moving)
    again = await store.get_message(message_id)
    assert again is not None and (again.state, again.final_at) == ("delivered", 105.0)
    assert len(await store.list_webhooks(None, 10)) == 1  # the one report, queued once
