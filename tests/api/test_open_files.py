"""The HTTP connection cap, from the process's limit on open files."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from smsrelay.api.open_files import MIN_CONNECTIONS, RESERVED_FDS, connection_cap


@pytest.mark.parametrize(
    ("configured", "open_files", "cap"),
    [
        (500, 1024, 500),  # set: taken as it is
        (0, 1024, 1024 - RESERVED_FDS),  # not set: the limit less the reserve
        (0, 65536, 65536 - RESERVED_FDS),
        (0, 200, MIN_CONNECTIONS),  # a tiny limit still serves a few clients
    ],
)
def test_the_cap_is_the_setting_or_what_the_limit_leaves(configured, open_files, cap) -> None:
    assert connection_cap(configured, open_files) == cap


def test_serve_raises_the_soft_limit_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 512:
        pytest.skip(f"needs a finite hard limit above 512 (it is {hard})")

    def start_low() -> None:  # in the child, before it runs: a soft limit below the hard one
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))

    code = (
        "import resource; from smsrelay.api.open_files import raise_open_file_limit; "
        "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=start_low,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.split() == [str(hard), str(hard)]
