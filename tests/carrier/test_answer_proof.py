"""Which deliveries the SMSC surely has our answer to: it answered a request written after."""

from __future__ import annotations

from smsrelay.carrier.answer_proof import AnswerProof


def test_an_answer_is_proven_by_the_answer_to_a_request_written_after_it() -> None:
    proof = AnswerProof()
    first = proof.arrived()
    proof.answered(first)
    proof.requested(sequence=7)  # an enquire_link or a submit_sm, behind the resp
    assert proof.proven == 0  # written is not read
    assert proof.answer_heard(7) is True
    assert proof.proven == first


def test_a_request_written_before_the_answer_proves_nothing_of_it() -> None:
    proof = AnswerProof()
    proof.requested(sequence=7)
    reply = proof.arrived()
    proof.answered(reply)
    assert proof.answer_heard(7) is False
    assert proof.proven == 0


def test_an_unanswered_delivery_holds_back_the_proof_of_later_ones() -> None:
    # The resps go out in the order the store commits: one still waiting for its commit has
    # not left, so a request written meanwhile proves only what came before it.
    proof = AnswerProof()
    first, second, third = proof.arrived(), proof.arrived(), proof.arrived()
    proof.answered(first)
    proof.answered(third)
    proof.requested(sequence=1)
    proof.answer_heard(1)
    assert proof.proven == first
    proof.answered(second)
    proof.requested(sequence=2)
    proof.answer_heard(2)
    assert proof.proven == third


def test_answers_to_requests_out_of_order_never_move_the_proof_back() -> None:
    proof = AnswerProof()
    proof.answered(proof.arrived())
    proof.requested(sequence=1)
    proof.answered(proof.arrived())
    proof.requested(sequence=2)
    assert proof.answer_heard(2) is True and proof.proven == 2
    assert proof.answer_heard(1) is False and proof.proven == 2


def test_requests_never_answered_are_not_kept_once_a_later_one_is() -> None:
    # submits whose answers were lost (the part went again): the marks do not pile up
    proof = AnswerProof()
    for sequence in range(1, 1001):
        proof.answered(proof.arrived())
        proof.requested(sequence)
    proof.answer_heard(1000)
    assert proof.proven == 1000 and not proof._marks


def test_an_answer_asking_a_resend_of_what_may_be_stored_is_never_proven() -> None:
    # ESME_RX_T_APPN while the commit's outcome is unknown: the SMSC sends it again and its
    # row may be there, so the same text on the next bind is that re-send
    proof = AnswerProof()
    refused = proof.arrived()
    proof.answered(refused, provable=False)
    proof.answered(proof.arrived())
    proof.requested(sequence=1)
    assert proof.answer_heard(1) is False
    assert proof.proven == refused - 1


def test_a_link_with_no_deliveries_keeps_nothing_per_request() -> None:
    # a transmitter link: a mark per submit, never pruned, was a leak for the link's life
    proof = AnswerProof()
    for sequence in range(1, 10_001):
        proof.requested(sequence)
    assert not proof._marks


def test_an_answered_reply_wants_a_request_until_one_is_in_flight() -> None:
    # a link busy with deliveries sends no keepalive: the link asks for one instead
    proof = AnswerProof()
    reply = proof.arrived()
    assert proof.unproven_answer(reply) is False  # its answer is not written yet
    proof.answered(reply)
    assert proof.unproven_answer(reply) is True
    proof.requested(sequence=9)
    assert proof.unproven_answer(reply) is False  # one in flight will prove it
    proof.answer_heard(9)
    assert proof.unproven_answer(reply) is False and proof.proven == reply
