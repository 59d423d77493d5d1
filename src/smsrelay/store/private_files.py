"""The database holds webhook secrets, the demo key and every text and number: what smsrelay
creates for it (the data folder, the database file, the serve lock) only its user can read,
whatever the umask. SQLite gives a database's -wal, -shm and -journal the mode of the
database file, so creating that file private covers them."""

from __future__ import annotations

import os
import shlex
import stat
from itertools import takewhile
from pathlib import Path

PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600
SHARED_READ = stat.S_IRGRP | stat.S_IROTH


def make_private_folder(folder: Path) -> None:
    """The folder and its missing parents, each 0700 when made here (``mkdir -p``, as
    ``parents=True``, gives the parents the umask's mode: a new ``--database
    /srv/sms/db/smsrelay.db`` left /srv/sms open to all); one that exists is left as it
    is: its owner chose."""
    missing = list(takewhile(lambda f: not f.exists(), folder.parents))
    for parent in reversed(missing):
        parent.mkdir(mode=PRIVATE_FOLDER, exist_ok=True)  # made meanwhile: not ours to change
    folder.mkdir(mode=PRIVATE_FOLDER, exist_ok=True)  # a file by that name is an error


def create_private_file(path: str, exist_ok: bool = True) -> None:
    """An empty file, 0600, unless one is there (``FileExistsError`` without ``exist_ok``):
    SQLite then opens it (an empty file is an empty database), or writes a copy into it,
    instead of creating it with the umask's mode (0644)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        if exist_ok:
            return
        raise
    os.close(fd)


def readable_by_others(mode: int) -> bool:
    """Whether the group or other users of the machine can read a file of this mode."""
    return bool(mode & SHARED_READ)


def readable_warning(path: str, mode: int) -> str:
    """The line serve says at start about a database others can read (made before its files
    were private, or copied with a umask that shares them)."""
    return (
        f"warning: {path} can be read by other users of this machine (mode "
        f"{stat.S_IMODE(mode):o}): it holds webhook secrets, texts and numbers; "
        f"chmod 600 {shlex.quote(path)}*"
    )
