"""Saves how far each bind's answers are proven read by the SMSC (see ``answer_proof``).

The store's duplicate check reads it when the same reply comes again on another bind: proven
means the person wrote twice; unproven, the SMSC re-sending after an outage. Saved at most once
a second per bind, and only when a reply (not a receipt) is among the newly proven: a flow of
receipts writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from smsrelay.carrier.answer_proof import AnswerProof
from smsrelay.logs import SparseLine

SAVE_EVERY_S = 1.0
KEEP_BINDS = 1000
UNSAVED_SAID_EVERY_S = 60.0

Save = Callable[[str, int], Awaitable[None]]


class ProvenLink(Protocol):
    bind_id: str
    proof: AnswerProof
    last_reply: int  # the number of the last reply (not a receipt) that came in


class ProofSaver:
    def __init__(self, save: Save, tasks: set[asyncio.Task[None]], log: logging.Logger) -> None:
        self._save = save
        self._tasks = tasks  # the connector's: its stop waits for them
        self._log = log
        self._saved: dict[str, int] = {}  # bind -> proven through, as saved
        self._due: dict[str, tuple[asyncio.TimerHandle, ProvenLink]] = {}
        self._stopped = False  # after save_now: nothing more is scheduled
        self._unsaved = SparseLine(
            self._log, "smpp.proof.unsaved", UNSAVED_SAID_EVERY_S, "failures"
        )

    @property
    def due(self) -> set[str]:
        """The binds whose proof is to be saved within the second."""
        return set(self._due)

    def proven(self, link: ProvenLink) -> None:
        """``link``'s proof moved on: saved within a second when it covers a new reply."""
        if self._stopped or link.bind_id in self._due or not self._news(link):
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(SAVE_EVERY_S, self._start_save, link.bind_id)
        self._due[link.bind_id] = (handle, link)

    async def save_now(self, links: Sequence[ProvenLink]) -> None:
        """At a stop: what is due is saved now, links already gone included (the unbind's
        answer proved every answer of the links still here)."""
        self._stopped = True
        due = {bind: link for bind, (_, link) in self._due.items()}
        due |= {link.bind_id: link for link in links if self._news(link)}
        for handle, _ in self._due.values():
            handle.cancel()
        self._due = {}
        await asyncio.gather(*(self._write(link) for link in due.values()))

    def _news(self, link: ProvenLink) -> bool:
        """Its proof covers a reply that the saved proof does not."""
        saved = self._saved.get(link.bind_id, 0)
        return link.last_reply > saved and link.proof.proven > saved

    def _start_save(self, bind_id: str) -> None:
        entry = self._due.pop(bind_id, None)
        if entry is None:
            return
        task = asyncio.get_running_loop().create_task(self._write(entry[1]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, link: ProvenLink) -> None:
        through = link.proof.proven
        try:
            await self._save(link.bind_id, through)
        except Exception as exc:  # tried again a second later; meanwhile the reply is unproven
            # a line a minute (a full disk)
            self._unsaved.note({"bind": link.bind_id, "error": str(exc)})
        else:
            self._saved[link.bind_id] = max(self._saved.get(link.bind_id, 0), through)
            if len(self._saved) > KEEP_BINDS:  # binds long gone: the oldest first
                del self._saved[next(iter(self._saved))]
        self.proven(link)  # proven further while it was written, or not written
