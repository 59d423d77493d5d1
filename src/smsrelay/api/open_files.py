"""How many HTTP connections the gateway keeps open at once, from the process's file limit.

Every connection is a file descriptor, and so is every SQLite file, SMPP link and callback
connection. A flood of HTTP clients that took the last descriptor would stop the gateway
delivering and storing (an SMPP reconnect or a callback failing with EMFILE): the cap keeps a
reserve for that work, and clients over it get a 503 at once instead of a hang.
"""

from __future__ import annotations

import resource

# The database (files, WAL, shm, three connections), SMPP links, callbacks in flight, logs.
RESERVED_FDS = 256
MIN_CONNECTIONS = 16
UNLIMITED = 1 << 20  # what an unlimited soft limit counts as


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one (the administrator's ceiling: many
    systems start processes at 1,024); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return int(soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # a container may forbid it: the soft limit stands
        return int(soft)
    return int(hard)


def connection_cap(configured: int, open_files: int) -> int:
    """``configured`` when set (> 0); else what the file limit leaves after the reserve."""
    if configured > 0:
        return configured
    return max(MIN_CONNECTIONS, open_files - RESERVED_FDS)
