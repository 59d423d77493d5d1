"""`smsrelay messages show`: the timeline's order and the human lines, on made-up messages."""

from __future__ import annotations

from dataclasses import asdict

from smsrelay.cli_messages import _human_detail, message_detail
from smsrelay.store.records import MessageView, PartView, ReceiptView
from tests.factories import new_message

T = 1_767_225_600.0


def message(**changes: object) -> MessageView:
    made = asdict(new_message(created_at=T, due_at=T))
    stored = {"id": 7, "state": "delivered", "connector": "default", "final_at": None}
    return MessageView(**(made | stored | changes))  # type: ignore[arg-type]


def part(seq: int, state: str, **changes: object) -> PartView:
    fields: dict[str, object] = {
        "id": seq,
        "seq": seq,
        "state": state,
        "attempts": 1,
        "carrier_id": f"c{seq}",
        "stat": None,
        "err": None,
        "submitted_at": None,
        "done_at": None,
        "last_error": None,
    }
    return PartView(**(fields | changes))  # type: ignore[arg-type]


def events(view: MessageView) -> list[str]:
    return [line.split("  ", 1)[1] for line in message_detail(view)["timeline"]]


def test_at_one_instant_the_timeline_keeps_a_parts_order_and_parts_sort_as_numbers() -> None:
    # a receipt stored in the same instant as its submit's answer came out first, and
    # "part 10" before "part 2" (sorted as text)
    parts = tuple(
        part(seq, "delivered", submitted_at=T + 1, done_at=T + 1, stat="DELIVRD") for seq in (2, 10)
    )
    receipts = tuple(ReceiptView(seq, f"c{seq}", "DELIVRD", None, T + 1) for seq in (2, 10))
    view = message(nb_sms=2, parts=parts, receipts=receipts)
    assert events(view) == [
        "accepted",
        "part 2 submitted as c2",
        "part 10 submitted as c10",
        "receipt c2 DELIVRD",
        "receipt c10 DELIVRD",
        "part 2 delivered",
        "part 10 delivered",
    ]


def test_a_message_cancelled_while_held_shows_no_due_time_to_come() -> None:
    held = message(due_at=T + 3600, state="queued", parts=(part(1, "queued"),))
    assert "due (held for quiet hours)" in events(held)
    cancelled = message(
        due_at=T + 3600,
        state="cancelled",
        final_at=T + 60,
        parts=(part(1, "cancelled", carrier_id=None, done_at=T + 60),),
    )
    assert events(cancelled) == ["accepted", "part 1 cancelled"]


def test_the_human_lines_say_what_is_missing_and_what_is_sandbox() -> None:
    view = message(sandbox=True, state="queued", parts=(part(1, "queued", carrier_id=None),))
    text = _human_detail(message_detail(view))
    assert "(sandbox: never sent)" in text.splitlines()[0]
    assert "part 1: queued carrier id - stat -" in text
    assert "None" not in text


def test_a_receipt_stored_before_its_submits_answer_comes_after_the_submit() -> None:
    # The receipt came first (stored ms before the batched write of the SMSC's answer): the
    # timeline read "delivered" before "submitted".
    parts = (part(1, "delivered", submitted_at=T + 1.005, done_at=T + 1.002, stat="DELIVRD"),)
    receipts = (ReceiptView(1, "c1", "DELIVRD", None, T + 1.002),)
    view = message(parts=parts, receipts=receipts)
    assert events(view) == [
        "accepted",
        "part 1 submitted as c1",
        "receipt c1 DELIVRD",
        "part 1 delivered",
    ]


def test_an_earlier_copys_receipt_does_not_move_a_later_submit() -> None:
    # A part sent twice: the first copy's receipt (another carrier id) pulled the second
    # submit's line before it (the diff review).
    parts = (part(1, "delivered", carrier_id="c2", submitted_at=T + 60, done_at=T + 61),)
    receipts = (
        ReceiptView(1, "c1", "DELIVRD", None, T + 5),
        ReceiptView(1, "c2", "DELIVRD", None, T + 61),
    )
    assert events(message(parts=parts, receipts=receipts)) == [
        "accepted",
        "receipt c1 DELIVRD",
        "part 1 submitted as c2",
        "receipt c2 DELIVRD",
        "part 1 delivered",
    ]
