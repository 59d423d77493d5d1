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


class AnswerProof:
    def __init__(self) -> None:
        self.arrivals = 0  # inbound PDUs numbered so far (1, 2, ...)
        self.proven = 0  # every inbound PDU numbered up to this has its answer read
        # inbound PDUs not answered yet (insertion order is number order: the first is least)
        self._open: dict[int, None] = {}
        # our requests in flight -> the answers written before them (in request order)
        self._marks: dict[int, int] = {}

    def arrived(self) -> int:
        """Number an inbound PDU: it waits for its answer."""
        self.arrivals += 1
        self._open[self.arrivals] = None
        return self.arrivals

    def answered(self, number: int) -> None:
        """Its answer was written to the connection."""
        self._open.pop(number, None)

    def requested(self, sequence: int) -> None:
        """A request was written: every inbound PDU before the first still open is answered
        ahead of it in the stream."""
        first_open = next(iter(self._open), None)
        self._marks[sequence] = self.arrivals if first_open is None else first_open - 1

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
