"""Which part a receipt is for: per SMSC, ids in two bases, receipts before their resp."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from smsrelay.smpp.receipts import carrier_id_candidates, normalise_carrier_id
from smsrelay.store.records import IncomingReceipt
from smsrelay.store.sql_store import SqlStore
from smsrelay.webhooks.payloads import BUILDERS
from tests.factories import new_message, open_store

T0 = 1_000.0


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    s = await open_store(store_url, {"+33757000001": "carrier-a", "+33757000002": "carrier-b"})
    yield s
    await s.close()


async def _submitted(store: SqlStore, sender: str, carrier_id: str, now: float = T0) -> int:
    """A one-part message the SMSC of ``sender``'s connector accepted as ``carrier_id``."""
    message_id = await store.accept_message(
        new_message(sender=sender, cost_micros=1, created_at=now, due_at=now)
    )
    connector = "carrier-a" if sender.endswith("1") else "carrier-b"
    [part] = await store.claim_due_parts(connector, now, 10, now + 60)
    key = normalise_carrier_id(carrier_id)
    assert await store.mark_submitted(part.part_id, carrier_id, key, now, BUILDERS, 1)
    return message_id


def _receipt(
    carrier_id: str, connector: str = "carrier-a", form: str = "auto", at: float = T0 + 1
) -> IncomingReceipt:
    keys = carrier_id_candidates(carrier_id, form)
    return IncomingReceipt(connector, carrier_id, keys, "DELIVRD", "000", at)


async def _state(store: SqlStore, message_id: int) -> str:
    message = await store.get_message(message_id)
    assert message is not None
    return message.state


async def test_a_receipt_is_for_a_message_of_the_smsc_that_sent_it(store: SqlStore) -> None:
    on_a = await _submitted(store, "+33757000001", "5000")
    on_b = await _submitted(store, "+33757000002", "5000")  # the other SMSC's 5000, newer
    assert await store.record_receipt(_receipt("5000", "carrier-a"), BUILDERS)
    assert (await _state(store, on_a), await _state(store, on_b)) == ("delivered", "submitted")


async def test_a_receipt_goes_to_the_part_still_waiting_not_a_finished_one(
    store: SqlStore,
) -> None:
    # An SMSC that answers hex ids and reports them in decimal: 0x123's receipt says "291".
    # The part whose own id is "291" already has its receipt; the one waiting is 0x123.
    finished = await _submitted(store, "+33757000001", "291")
    assert await store.record_receipt(_receipt("291"), BUILDERS)
    waiting = await _submitted(store, "+33757000001", "00000123")
    assert await store.record_receipt(_receipt("291", at=T0 + 2), BUILDERS)
    assert (await _state(store, finished), await _state(store, waiting)) == (
        "delivered",
        "delivered",
    )


async def test_a_known_id_form_resolves_two_waiting_parts(store: SqlStore) -> None:
    # Both 0x123 and 0x291 wait: "291" fits both readings. Only the setting can tell.
    hex_123 = await _submitted(store, "+33757000001", "00000123")
    hex_291 = await _submitted(store, "+33757000001", "00000291")
    assert await store.record_receipt(_receipt("291", form="decimal"), BUILDERS)
    assert (await _state(store, hex_123), await _state(store, hex_291)) == (
        "delivered",
        "submitted",
    )


async def test_an_early_receipt_waits_for_its_id_on_its_own_smsc_only(
    store: SqlStore,
) -> None:
    assert not await store.record_receipt(_receipt("777", "carrier-b"), BUILDERS)
    on_a = await _submitted(store, "+33757000001", "777", now=T0 + 2)
    assert await _state(store, on_a) == "submitted"
    on_b = await _submitted(store, "+33757000002", "777", now=T0 + 3)
    assert await _state(store, on_b) == "delivered"


async def test_an_early_receipt_kept_too_long_is_not_taken_by_a_later_id(
    store: SqlStore,
) -> None:
    assert not await store.record_receipt(_receipt("888"), BUILDERS)
    late = await _submitted(store, "+33757000001", "888", now=T0 + 1 + 121)
    assert await _state(store, late) == "submitted"
    assert not await store.record_receipt(_receipt("999", at=T0 + 200), BUILDERS)
    soon = await _submitted(store, "+33757000001", "999", now=T0 + 201)
    assert await _state(store, soon) == "delivered"


def test_a_known_form_gives_one_key() -> None:
    assert carrier_id_candidates("291") == ("291", "123", "657")
    assert carrier_id_candidates("291", "same") == ("291",)
    assert carrier_id_candidates("291", "decimal") == ("123",)
    assert carrier_id_candidates("00000123", "hex") == ("291",)
    assert carrier_id_candidates("abc", "decimal") == ("abc",)  # not decimal: taken as written


async def test_an_id_used_by_many_old_parts_still_reaches_the_newest_one(
    store: SqlStore,
) -> None:
    # An SMSC whose ids restart (a counter reset) has given "77" to 60 parts over time; the
    # last one waits for its receipt. The lookup caps its candidates: it must keep the newest.
    for n in range(59):
        await _submitted(store, "+33757000001", "77", now=T0 + n)
        assert await store.record_receipt(_receipt("77", at=T0 + n + 0.5), BUILDERS)
    waiting = await _submitted(store, "+33757000001", "77", now=T0 + 100)
    assert await store.record_receipt(_receipt("77", at=T0 + 101), BUILDERS)
    assert await _state(store, waiting) == "delivered"


async def test_a_receipt_overtaking_the_resp_of_a_reused_id_waits_for_the_new_part(
    store: SqlStore,
) -> None:
    # An SMSC whose counter restarted gives "4242" again, and reports the new part before its
    # submit_sm_resp. The only part with that id had ended long before: it took the receipt
    # (a second one, ignored) and the new part waited 49 h to expire.
    old = await _submitted(store, "+33757000001", "4242")
    assert await store.record_receipt(_receipt("4242", at=T0 + 1), BUILDERS)
    assert not await store.record_receipt(_receipt("4242", at=T0 + 600), BUILDERS)  # kept early
    new = await _submitted(store, "+33757000001", "4242", now=T0 + 600.5)
    assert (await _state(store, old), await _state(store, new)) == ("delivered", "delivered")
    message = await store.get_message(old)
    assert message is not None and len(message.receipts) == 1


async def test_a_repeated_receipt_soon_after_the_first_is_still_its_parts(store: SqlStore) -> None:
    done = await _submitted(store, "+33757000001", "4343")
    assert await store.record_receipt(_receipt("4343", at=T0 + 1), BUILDERS)
    assert await store.record_receipt(_receipt("4343", at=T0 + 60), BUILDERS)  # a re-send
    message = await store.get_message(done)
    assert message is not None and len(message.receipts) == 2


async def test_an_early_receipt_is_not_taken_as_a_repeat_under_another_reading(
    store: SqlStore,
) -> None:
    # A fast SMSC with a small counter: part "24" has its receipt; the receipt of "36" comes
    # before its resp. Read as hex, "36" is 0x24: taken as a repeat of part 24's receipt, it
    # was dropped, and message 36 waited 49 h to expire.
    done = await _submitted(store, "+33757000001", "24")
    assert await store.record_receipt(_receipt("24", at=T0 + 1), BUILDERS)
    assert not await store.record_receipt(_receipt("36", at=T0 + 2), BUILDERS)  # kept early
    new = await _submitted(store, "+33757000001", "36", now=T0 + 2.5)
    assert (await _state(store, done), await _state(store, new)) == ("delivered", "delivered")
    message = await store.get_message(done)
    assert message is not None and len(message.receipts) == 1


async def test_a_repeat_under_another_reading_stays_its_parts(store: SqlStore) -> None:
    # The mirror case: an SMSC answering hex ids reports 0x24 as "36", then sends that receipt
    # again. Kept as early, the repeat went to the next part given "36" (another message) as
    # its DELIVRD. A part that took receipt "36" takes its repeat too.
    done = await _submitted(store, "+33757000001", "24")
    assert await store.record_receipt(_receipt("36", at=T0 + 1), BUILDERS)
    assert await store.record_receipt(_receipt("36", at=T0 + 2), BUILDERS)  # the re-send
    later = await _submitted(store, "+33757000001", "36", now=T0 + 3)
    assert (await _state(store, done), await _state(store, later)) == ("delivered", "submitted")
    message = await store.get_message(done)
    assert message is not None and len(message.receipts) == 2


async def test_a_repeat_under_another_reading_stays_its_parts_after_a_later_resp(
    store: SqlStore,
) -> None:
    # The same, the later part's resp first: waiting, with "36" as written, it outranked the
    # part that took "36" under its other reading, and got another message's DELIVRD.
    done = await _submitted(store, "+33757000001", "24")
    assert await store.record_receipt(_receipt("36", at=T0 + 1), BUILDERS)
    later = await _submitted(store, "+33757000001", "36", now=T0 + 2)
    assert await store.record_receipt(_receipt("36", at=T0 + 3), BUILDERS)  # the re-send
    assert (await _state(store, done), await _state(store, later)) == ("delivered", "submitted")
