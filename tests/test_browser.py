"""The test harness's Chromium (tests/browser.py) leaves nothing behind: no browser outlives
a test process killed outright, no temp directory is left outside the test's own."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.browser import chromium, chromium_binary
from tests.support import eventually

# a test process that opens a browser, says so, and is then killed before it can close it
KILLED_MID_TEST = """
import asyncio, sys
from pathlib import Path
from tests.browser import chromium

async def main() -> None:
    async with chromium(Path(sys.argv[1])):
        print("open", flush=True)
        await asyncio.Event().wait()  # never set: held open until the test kills this process

asyncio.run(main())
"""


def processes_using(folder: Path) -> list[int]:
    """Live processes whose command line names ``folder`` (a zombie's is empty)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:  # not a process, or gone meanwhile
            continue
        if str(folder).encode() in command:
            found.append(int(entry.name))
    return found


async def test_a_test_process_killed_outright_takes_its_chromium_with_it(tmp_path: Path) -> None:
    chromium_binary()  # skipped (or failed under CI) without one
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_MID_TEST,
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert child.stdout is not None
    try:
        assert await asyncio.wait_for(child.stdout.readline(), 60) == b"open\n"
        assert processes_using(tmp_path)
        child.kill()
        await child.wait()
        assert await eventually(lambda: not processes_using(tmp_path), timeout=20)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        for pid in processes_using(tmp_path):  # what the test found left: not left after it
            os.kill(pid, signal.SIGKILL)


async def test_chromium_keeps_its_temp_files_in_the_tests_folder(tmp_path: Path) -> None:
    async with chromium(tmp_path):
        socket = tmp_path / "chromium-profile" / "SingletonSocket"
        link = await eventually(lambda: socket.is_symlink() and os.readlink(socket), timeout=20)
    # Chromium's socket directory is not removed when it quits: with the test's files, it is
    assert Path(link).is_relative_to(tmp_path)
