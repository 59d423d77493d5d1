"""Part and message states: the whole transition table, message status, the SMPP vocabulary."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrelay.domain.states import (
    FINAL_PART_STATES,
    PART_TRANSITIONS,
    MessageState,
    PartState,
    advance,
    can_move,
    message_state,
    message_state_of,
    part_state_for_stat,
    part_state_of,
    public_status,
    reported_stat,
    stat_for_message_state_tlv,
)
from smsrelay.errors import DomainError

P = PartState
M = MessageState

# The table, written out independently of the module: every allowed (current, new) pair.
ALLOWED = {
    (P.QUEUED, P.SENDING),
    (P.QUEUED, P.CANCELLED),
    (P.SENDING, P.SUBMITTED),
    (P.SENDING, P.QUEUED),  # retry, or the worker's lease expired
    (P.SENDING, P.REJECTED),  # permanent SMSC error
    (P.SENDING, P.FAILED),  # retries exhausted
    (P.SENDING, P.DELIVERED),  # receipts that raced ahead of submit_sm_resp
    (P.SENDING, P.UNDELIVERED),
    (P.SENDING, P.EXPIRED),
    (P.SUBMITTED, P.SUBMITTED),  # intermediate receipt
    (P.SUBMITTED, P.DELIVERED),
    (P.SUBMITTED, P.UNDELIVERED),
    (P.SUBMITTED, P.EXPIRED),
    (P.SUBMITTED, P.REJECTED),
}
ALL_PAIRS = list(itertools.product(PartState, PartState))


def test_the_vocabularies() -> None:
    assert [s.value for s in PartState] == [
        "queued",
        "sending",
        "submitted",
        "delivered",
        "undelivered",
        "expired",
        "rejected",
        "failed",
        "cancelled",
    ]
    assert [s.value for s in MessageState] == [
        "held",
        "queued",
        "submitted",
        "delivered",
        "undelivered",
        "expired",
        "rejected",
        "failed",
        "cancelled",
    ]
    assert {P.DELIVERED, P.UNDELIVERED, P.EXPIRED, P.REJECTED, P.FAILED, P.CANCELLED} == (
        FINAL_PART_STATES
    )


def test_the_table_covers_every_state_and_is_read_only() -> None:
    assert set(PART_TRANSITIONS) == set(PartState)
    assert {(a, b) for a, targets in PART_TRANSITIONS.items() for b in targets} == ALLOWED
    with pytest.raises(TypeError):
        PART_TRANSITIONS[P.QUEUED] = frozenset()  # type: ignore[index]


@pytest.mark.parametrize(("current", "new"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_move(current: PartState, new: PartState) -> None:
    allowed = (current, new) in ALLOWED
    assert can_move(current, new) is allowed
    if allowed:
        assert advance(current, new) is new
    else:
        with pytest.raises(DomainError) as refused:
            advance(current, new)
        assert refused.value.code == "state.illegal"
        assert str(current) in refused.value.message


@pytest.mark.parametrize("final", sorted(FINAL_PART_STATES))
def test_a_second_receipt_for_a_final_part_is_not_a_move(final: PartState) -> None:
    for receipt in (P.DELIVERED, P.UNDELIVERED, P.EXPIRED, P.REJECTED, P.SUBMITTED):
        assert not can_move(final, receipt)
    with pytest.raises(DomainError, match="is final"):
        advance(final, P.DELIVERED)


def test_a_submitted_part_never_goes_back_to_the_queue() -> None:
    assert not can_move(P.SUBMITTED, P.QUEUED)
    assert not can_move(P.SUBMITTED, P.SENDING)


# --- message state ------------------------------------------------------------------------

MESSAGE_CASES = [
    # (parts, held, expected)
    ([P.QUEUED], False, M.QUEUED),
    ([P.QUEUED], True, M.HELD),
    ([P.QUEUED, P.QUEUED], True, M.HELD),
    ([P.QUEUED, P.SENDING], True, M.QUEUED),
    ([P.SENDING], False, M.QUEUED),
    ([P.SENDING, P.SUBMITTED], False, M.QUEUED),
    ([P.QUEUED, P.SUBMITTED], False, M.QUEUED),
    ([P.SUBMITTED], False, M.SUBMITTED),
    ([P.SUBMITTED], True, M.SUBMITTED),
    ([P.SUBMITTED, P.SUBMITTED], False, M.SUBMITTED),
    ([P.DELIVERED, P.SUBMITTED], False, M.SUBMITTED),
    ([P.UNDELIVERED, P.SUBMITTED], False, M.SUBMITTED),
    ([P.EXPIRED, P.SUBMITTED], False, M.SUBMITTED),
    ([P.DELIVERED, P.QUEUED], False, M.QUEUED),
    ([P.DELIVERED, P.QUEUED], True, M.QUEUED),
    ([P.CANCELLED, P.QUEUED], False, M.QUEUED),
    ([P.DELIVERED], False, M.DELIVERED),
    ([P.DELIVERED, P.DELIVERED, P.DELIVERED], False, M.DELIVERED),
    ([P.DELIVERED], True, M.DELIVERED),
    ([P.UNDELIVERED], False, M.UNDELIVERED),
    ([P.DELIVERED, P.UNDELIVERED], False, M.UNDELIVERED),
    ([P.EXPIRED, P.UNDELIVERED], False, M.UNDELIVERED),
    ([P.EXPIRED], False, M.EXPIRED),
    ([P.DELIVERED, P.EXPIRED], False, M.EXPIRED),
    ([P.DELIVERED, P.CANCELLED], False, M.UNDELIVERED),
    ([P.CANCELLED], False, M.CANCELLED),
    ([P.CANCELLED, P.CANCELLED], True, M.CANCELLED),
    ([P.REJECTED], False, M.REJECTED),
    ([P.REJECTED, P.QUEUED], False, M.QUEUED),  # final only once every part is
    ([P.REJECTED, P.SUBMITTED], False, M.SUBMITTED),
    ([P.REJECTED, P.FAILED], False, M.REJECTED),
    ([P.DELIVERED, P.REJECTED], False, M.REJECTED),
    ([P.CANCELLED, P.REJECTED], False, M.REJECTED),
    ([P.FAILED], False, M.FAILED),
    ([P.FAILED, P.SENDING], False, M.QUEUED),
    ([P.FAILED, P.DELIVERED], False, M.FAILED),
    ([P.FAILED, P.EXPIRED, P.UNDELIVERED], False, M.FAILED),
]


@pytest.mark.parametrize(
    ("parts", "held", "expected"),
    MESSAGE_CASES,
    ids=["+".join(parts) + ("/held" if held else "") for parts, held, _ in MESSAGE_CASES],
)
def test_message_state(parts: list[PartState], held: bool, expected: MessageState) -> None:
    assert message_state(parts, held=held) is expected
    assert message_state(reversed(parts), held=held) is expected  # any iterable, any order


def test_a_message_without_parts_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        message_state([])


PART_LISTS = st.lists(st.sampled_from(PartState), min_size=1, max_size=8)


@settings(max_examples=500)
@given(parts=PART_LISTS, held=st.booleans(), data=st.data())
def test_message_state_invariants(parts: list[PartState], held: bool, data: st.DataObject) -> None:
    state = message_state(parts, held=held)
    present = set(parts)
    # The order of the parts never matters.
    assert message_state(data.draw(st.permutations(parts)), held=held) is state
    # Held only matters while every part is still queued.
    if present != {P.QUEUED}:
        assert state is message_state(parts, held=not held)
    assert (state is M.HELD) == (held and present == {P.QUEUED})
    # A message is waiting exactly when a part is still moving (its report waits for all).
    waiting = state in {M.HELD, M.QUEUED, M.SUBMITTED}
    assert waiting == (not present <= FINAL_PART_STATES)
    assert (state is M.DELIVERED) == (present == {P.DELIVERED})
    assert (state is M.CANCELLED) == (present == {P.CANCELLED})
    if state in {M.UNDELIVERED, M.EXPIRED}:
        assert present <= FINAL_PART_STATES
        assert present != {P.DELIVERED}
    if P.UNDELIVERED in present:
        assert state not in {M.DELIVERED, M.EXPIRED}
    # A finished message stays finished whatever legal move one of its parts makes next.
    if not waiting:
        for index, part in enumerate(parts):
            for new in PART_TRANSITIONS[part]:
                moved = [*parts[:index], new, *parts[index + 1 :]]
                assert message_state(moved, held=held) not in {M.HELD, M.QUEUED, M.SUBMITTED}
    assert public_status(state) in {"Delivered", "Not delivered", "Waiting", "ko"}


# --- SMS Partner and SMPP vocabulary ------------------------------------------------------

PUBLIC_STATUS = {
    M.HELD: "Waiting",
    M.QUEUED: "Waiting",
    M.SUBMITTED: "Waiting",
    M.DELIVERED: "Delivered",
    M.UNDELIVERED: "Not delivered",
    M.EXPIRED: "Not delivered",
    M.REJECTED: "Not delivered",
    M.FAILED: "ko",
    M.CANCELLED: "ko",  # SMS Partner has no other word for it
}


@pytest.mark.parametrize(("state", "word"), PUBLIC_STATUS.items())
def test_public_status(state: MessageState, word: str) -> None:
    assert public_status(state) == word


def test_public_status_covers_every_message_state() -> None:
    assert set(PUBLIC_STATUS) == set(MessageState)


STATS = [
    ("DELIVRD", P.DELIVERED),
    ("UNDELIV", P.UNDELIVERED),
    ("EXPIRED", P.EXPIRED),
    ("REJECTD", P.REJECTED),
    ("DELETED", P.UNDELIVERED),
    ("UNKNOWN", P.UNDELIVERED),
    ("ACCEPTD", P.SUBMITTED),
    ("ENROUTE", P.SUBMITTED),
    ("PENDING", P.SUBMITTED),
    ("delivrd", P.DELIVERED),
    ("  Undeliv\r\n", P.UNDELIVERED),
    ("\tacceptd ", P.SUBMITTED),
    ("DELIVERED", None),
    ("DELIV RD", None),
    ("", None),
    ("   ", None),
    ("ok", None),
    ("0", None),
]


@pytest.mark.parametrize(("stat", "expected"), STATS, ids=[repr(s) for s, _ in STATS])
def test_part_state_for_stat(stat: str, expected: PartState | None) -> None:
    assert part_state_for_stat(stat) is expected


TLV = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}


@pytest.mark.parametrize("value", range(-1, 12))
def test_stat_for_message_state_tlv(value: int) -> None:
    assert stat_for_message_state_tlv(value) == TLV.get(value)


@pytest.mark.parametrize("value", sorted(TLV))
def test_every_tlv_stat_leads_to_a_part_state_a_submitted_part_may_take(value: int) -> None:
    stat = stat_for_message_state_tlv(value)
    assert stat is not None
    new = part_state_for_stat(stat)
    assert new is not None
    assert can_move(P.SUBMITTED, new)


@pytest.mark.parametrize(
    ("parts", "stat"),
    [
        ([("delivered", "DELIVRD")], "DELIVRD"),
        ([("undelivered", "UNDELIV"), ("delivered", "DELIVRD")], "UNDELIV"),  # it decided
        ([("delivered", "DELIVRD"), ("expired", "EXPIRED")], "EXPIRED"),
        ([("rejected", None), ("delivered", "DELIVRD")], "DELIVRD"),  # no stat of its own
        ([("submitted", "ENROUTE")], "ENROUTE"),
        ([("queued", None)], None),
    ],
)
def test_the_stat_a_message_reports_is_the_one_that_decided_it(
    parts: list[tuple[str, str | None]], stat: str | None
) -> None:
    assert reported_stat(parts) == stat


def test_states_read_back_as_text_map_to_the_same_members_as_the_enum_does() -> None:
    for part in PartState:
        assert part_state_of(str(part)) is PartState(str(part))
    for message in MessageState:
        assert message_state_of(str(message)) is MessageState(str(message))
    with pytest.raises(KeyError):
        part_state_of("lost")
    with pytest.raises(KeyError):
        message_state_of("lost")
