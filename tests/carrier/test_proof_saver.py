"""ProofSaver: each bind's proof saved once a second at most, at a stop, and again on failure."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from smsrelay.carrier.answer_proof import AnswerProof
from smsrelay.carrier.proof_saver import ProofSaver

pytestmark = pytest.mark.asyncio


@dataclass
class _Link:
    bind_id: str
    proof: AnswerProof = field(default_factory=AnswerProof)
    last_reply: int = 0

    def prove_a_reply(self) -> None:
        number = self.proof.arrived()
        self.last_reply = number
        self.proof.answered(number)
        self.proof.requested(sequence=number)
        assert self.proof.answer_heard(number)


class _Store:
    def __init__(self, failures: int = 0) -> None:
        self.saved: list[tuple[str, int]] = []
        self.failures = failures

    async def save(self, bind_id: str, through: int) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("database or disk is full")
        self.saved.append((bind_id, through))


def _saver(store: _Store) -> ProofSaver:
    return ProofSaver(store.save, set(), logging.getLogger("test"))


async def test_a_stop_saves_what_is_due_and_leaves_no_timer_behind() -> None:
    # the popped timer was left armed: a KeyError in the loop a second after every stop
    store = _Store()
    saver = _saver(store)
    link = _Link("b1")
    link.prove_a_reply()
    saver.proven(link)
    [(handle, _)] = saver._due.values()
    await saver.save_now([link])
    assert store.saved == [("b1", 1)]
    assert handle.cancelled() and not saver.due
    link.prove_a_reply()
    saver.proven(link)  # after the stop nothing is scheduled
    assert not saver.due


async def test_a_stop_saves_the_due_proof_of_a_link_already_gone() -> None:
    store = _Store()
    saver = _saver(store)
    gone = _Link("b-gone")
    gone.prove_a_reply()
    saver.proven(gone)  # due; then the link dropped before its second came
    await saver.save_now([])
    assert store.saved == [("b-gone", 1)]


async def test_a_save_the_store_refused_is_due_again() -> None:
    store = _Store(failures=1)
    saver = _saver(store)
    link = _Link("b1")
    link.prove_a_reply()
    await saver._write(link)
    assert store.saved == [] and saver.due == {"b1"}
    await saver.save_now([link])
    assert store.saved == [("b1", 1)]
