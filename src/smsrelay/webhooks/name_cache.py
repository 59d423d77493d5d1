"""Name lookups of callback hosts, kept briefly.

A keep-alive connection needs no lookup, but a receiver that closes each connection (or
more receivers than the idle pool keeps) needed one per callback: a resolver thread's round
trip each, and with a slow resolver the lookups queued behind its threads. Answers are kept
for ``KEEP_FOR`` seconds (``KEEP_FAILURE_FOR`` once none of the addresses takes a connection:
a receiver's DNS failover is followed within seconds) and failures for ``KEEP_FAILURE_FOR``
(a dead name's backlog of callbacks is not one lookup each). What is kept is the resolver's
answer: the caller still checks every address before connecting to it, so a cached answer is
held to the same rules.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

KEEP_FOR = 30.0  # seconds an answer is used again; a name moved by DNS is seen after it
KEEP_FAILURE_FOR = 5.0  # seconds a failed lookup is answered from here
MAX_NAMES = 1024  # names kept; the oldest entry makes room

Infos = list[tuple[Any, ...]]
Key = tuple[str, int]  # host, port


class NameCache:
    def __init__(
        self,
        keep_for: float = KEEP_FOR,
        keep_failure_for: float = KEEP_FAILURE_FOR,
        max_names: int = MAX_NAMES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep_for = keep_for
        self._keep_failure_for = keep_failure_for
        self._max_names = max_names
        self._clock = clock
        # key -> (until when, the answer or the failure's errno and text)
        self._entries: dict[Key, tuple[float, Infos | tuple[int, str]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Infos | None:
        """The kept answer (None: look it up); a kept failure is raised again, anew."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, answer = entry
        if self._clock() >= until:
            del self._entries[key]
            return None
        if isinstance(answer, tuple):
            raise socket.gaierror(*answer)
        return answer

    def doubt(self, key: Key) -> None:
        """None of the name's addresses took a connection: keep its answer no longer than a
        failure's (a DNS failover is seen within seconds, and a receiver that is down is not
        one lookup per callback)."""
        entry = self._entries.get(key)
        if entry is not None:
            until, answer = entry
            self._entries[key] = (min(until, self._clock() + self._keep_failure_for), answer)

    def keep(self, key: Key, infos: Infos) -> None:
        self._put(key, self._keep_for, infos)

    def keep_failure(self, key: Key, error: OSError) -> None:
        self._put(key, self._keep_failure_for, (error.errno or 0, error.strerror or str(error)))

    def _put(self, key: Key, keep_for: float, answer: Infos | tuple[int, str]) -> None:
        self._entries.pop(key, None)  # re-inserted last: the dict's order is the age order
        if len(self._entries) >= self._max_names:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + keep_for, answer)
