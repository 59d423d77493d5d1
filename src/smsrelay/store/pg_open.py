"""The PostgreSQL engine's open connections, and how its stop ends the queries left running.

A stop that waited for every query to end was held for as long as a frozen or unreachable
server stayed so, and by a heavy read for its whole run. ``cancel`` asks the server to end a
read (a read changes nothing; the server's own work stops too, where a closed socket is only
noticed when the backend next writes to it). ``cut`` shuts every socket down: a thread
blocked reading one wakes with an error, even when the server cannot take a cancel request.
Neither frees libpq's connection under the thread using it, as ``close`` from another thread
would: the socket is cut through a copy of its descriptor taken at connect (a number read
later could by then name another file), and once the stop has begun ending queries, only
``close_all`` closes connections (a cancel may be reading one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

log = logging.getLogger("smsrelay.store")


class OpenConnections:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: dict[psycopg.Connection[Any], socket.socket] = {}
        self._reads: set[psycopg.Connection[Any]] = set()
        self._ending = False

    def add(self, conn: psycopg.Connection[Any], *, reads: bool) -> bool:
        """``conn``, just connected by the thread that will use it; ``reads``: it runs only
        reads (those are what a stop cancels). False once a stop ends queries: connected
        after the cut, its query would be out of the stop's reach (the caller closes it)."""
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        with self._lock:
            if not self._ending:
                self._sockets[conn] = sock
                if reads:
                    self._reads.add(conn)
                return True
        sock.close()
        return False

    def close(self, conn: psycopg.Connection[Any]) -> None:
        """``conn`` closed; once a stop ends queries, left for ``close_all``."""
        with self._lock:
            if self._ending:
                return
            sock = self._sockets.pop(conn, None)
            self._reads.discard(conn)
        conn.close()
        if sock is not None:
            sock.close()

    def running_reads(self) -> list[psycopg.Connection[Any]]:
        """The reads under way; from now on a connection is closed by ``close_all`` only."""
        with self._lock:
            self._ending = True
            return [c for c in self._reads if c.info.transaction_status == TransactionStatus.ACTIVE]

    def cut(self) -> None:
        """Every socket shut down: its thread's wait on the server ends with an error."""
        with self._lock:
            self._ending = True
            sockets = list(self._sockets.values())
        for sock in sockets:
            with contextlib.suppress(OSError):  # the server closed it first
                sock.shutdown(socket.SHUT_RDWR)

    def close_all(self) -> None:
        """Only once no thread uses a connection any more."""
        with self._lock:
            entries, self._sockets = self._sockets, {}
            self._reads.clear()
        for conn, sock in entries.items():
            conn.close()
            sock.close()


def cancel(conn: psycopg.Connection[Any], within: float) -> None:
    """Ask the server to cancel what runs on ``conn`` (a thread of its own: it may wait for the
    server up to ``within``). Only with a libpq that can give up (17+, psycopg's binary has it):
    an older one's cancel waits for a frozen server for as long."""
    if not psycopg.capabilities.has_cancel_safe():
        return
    try:
        conn.cancel_safe(timeout=within)
    except psycopg.Error as exc:  # a server that cannot take it: the cut ends the wait
        log.warning("store.stop.cancel_failed", extra={"error": str(exc)})
