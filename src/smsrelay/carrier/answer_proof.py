"""Which of a link's inbound PDUs the SMSC surely has our answer to (sans-I/O).

An SMSC sends a ``deliver_sm`` again, on a later bind, when it did not get our
``deliver_sm_resp``. Whether it got it cannot be asked, but it can be proven: the SMSC reads
a connection in order, so when it answers a request we wrote *after* a resp (a submit_sm, an
enquire_link), it had read that resp. A reply proven so is never sent again, and the same
text later on another bind is the person writing twice; a reply never proven may come again
after an outage of any length (the store's duplicate check reads this: ``store/inbound_ops``).

Inbound PDUs are numbered per link in the order they arrive; ``proven`` is the highest number
through which every one is proven answered.
"""

from __future__ import annotations

from collections import deque

NO_CEILING = 1 << 62


class AnswerProof:
    def __init__(self) -> None:
        self.arrivals = 0  # inbound PDUs numbered so far (1, 2, ...)
        self.proven = 0  # every inbound PDU numbered up to this has its answer read
        self._open: deque[int] = deque()  # numbered, in order; the answered are dropped
        self._answered_early: set[int] = set()  # answered behind one still open
        # one answered "send it again" (not stored): nothing from it on can be proven
        self._ceiling = NO_CEILING
        # our requests in flight -> the answers written before them; only requests that
        # could prove more than the one before are kept (a link with no deliveries keeps none)
        self._marks: dict[int, int] = {}
        self._last_mark = 0

    def arrived(self) -> int:
        """Number an inbound PDU: it waits for its answer."""
        self.arrivals += 1
        self._open.append(self.arrivals)
        return self.arrivals

    def answered(self, number: int, provable: bool = True) -> None:
        """Its answer was written to the connection; ``provable`` False when it asked the SMSC
        to send it again while its row may exist all the same (a commit whose outcome is
        unknown): it must never count as proven, nor, the proof being one number, anything
        after it on this link. (A refusal surely not stored is provable: no row to mistake.)"""
        if not provable:
            self._ceiling = min(self._ceiling, number - 1)
        self._answered_early.add(number)
        while self._open and self._open[0] in self._answered_early:
            self._answered_early.discard(self._open.popleft())

    def requested(self, sequence: int) -> None:
        """A request was written: every inbound PDU before the first still open is answered
        ahead of it in the stream."""
        mark = min(self._open[0] - 1 if self._open else self.arrivals, self._ceiling)
        if mark > max(self.proven, self._last_mark):
            self._marks[sequence] = self._last_mark = mark

    def unproven_answer(self, number: int) -> bool:
        """``number`` is answered, not proven, and no request in flight would prove it: a
        request is needed (a link busy with deliveries sends no keepalive)."""
        answered = not self._open or self._open[0] > number
        return self.proven < number <= self._ceiling and answered and self._last_mark < number

    def answer_heard(self, sequence: int) -> bool:
        """The SMSC answered request ``sequence``: what was answered ahead of it is proven.
        True when that moved ``proven`` on."""
        mark = self._marks.pop(sequence, None)
        if mark is None or mark <= self.proven:
            return False
        self.proven = mark
        # requests written earlier prove no more than this: dropped (none stays for ever)
        while self._marks:
            first = next(iter(self._marks))
            if self._marks[first] > mark:
                break
            del self._marks[first]
        return True
