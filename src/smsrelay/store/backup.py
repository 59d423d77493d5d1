"""A copy of a SQLite database beside a serving gateway, as private as the database."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from urllib.parse import quote

from smsrelay.store.private_files import create_private_file


def backup_into(database: str, target: str) -> None:
    """Copy ``database`` into ``target``, a new file (an existing one raises
    ``FileExistsError``), with ``VACUUM INTO``: one read transaction, consistent while serve
    writes (``.backup`` starts over at each write and, under traffic, never ends).

    The copy holds what the database holds, so it is made 0600 whatever the umask: created
    empty with that mode first, which SQLite then writes into and keeps. Made by SQLite, it
    took the umask (0644 under the usual 022); a chmod after would leave it readable by
    every local user while it is written."""
    create_private_file(target, exist_ok=False)
    try:
        # mode=rw: a database removed meanwhile is an error, not a new empty one copied
        conn = sqlite3.connect(f"file:{quote(database)}?mode=rw", uri=True, isolation_level=None)
        try:
            # an absolute path: on a connection opened with uri=True, SQLite reads a target
            # starting "file:" as a URI too, and wrote the copy to another file, the umask's;
            # joined, not abspath'd: ".." after a symlink is the kernel's to resolve, as it
            # did for the file made above (abspath's textual ".." left that one empty)
            conn.execute("VACUUM INTO ?", (os.path.join(os.getcwd(), target),))
        finally:
            conn.close()
    except BaseException:
        with contextlib.suppress(OSError):  # no half copy left to be taken for a backup
            os.unlink(target)
        raise
