"""The database holds webhook secrets and every text: what serve creates for it only its user
can read, and a database others can read is said at start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from smsrelay import runtime
from tests.support import gateway_settings, start_gateway


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """022, as a login shell or systemd gives: files 0644 unless made otherwise."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.mark.usefixtures("usual_umask")
async def test_a_new_database_its_folder_wal_and_lock_are_private(tmp_path: Path) -> None:
    gw = await start_gateway(gateway_settings(tmp_path))
    try:
        _, answer = await gw.send(message="a text", to="0612345678")  # the -wal holds it
        assert answer["success"], answer
        data = tmp_path / "data"
        files = ["smsrelay.db", "smsrelay.db-wal", "smsrelay.db-shm", "smsrelay.db.serve-lock"]
        assert {name: _mode(data / name) for name in files} == dict.fromkeys(files, 0o600)
        assert _mode(data) == 0o700
    finally:
        await runtime.stop(gw.running)
    assert not [line for line in gw.lines if line.startswith("warning:")]


@pytest.mark.usefixtures("usual_umask")
async def test_a_database_others_can_read_is_one_warning_at_start(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)
    await runtime.stop((await start_gateway(settings)).running)
    database = tmp_path / "data" / "smsrelay.db"
    database.chmod(0o644)  # as serve made it before its files were private
    shared = await start_gateway(settings)
    await runtime.stop(shared.running)
    [warning] = [line for line in shared.lines if line.startswith("warning:")]
    assert warning == (
        f"warning: {database} can be read by other users of this machine (mode 644): it holds "
        f"webhook secrets, texts and numbers; chmod 600 {database}*"
    )
    database.chmod(0o600)
    private = await start_gateway(settings)
    await runtime.stop(private.running)
    assert not [line for line in private.lines if line.startswith("warning:")]


@pytest.mark.usefixtures("usual_umask")
async def test_the_folders_made_for_a_nested_database_are_private_and_no_other(
    tmp_path: Path,
) -> None:
    # mkdir -p gave the parents the umask's mode: /srv/sms of a new /srv/sms/db/x.db was 0755.
    os.chmod(tmp_path, 0o755)  # there already: its owner chose
    database = tmp_path / "srv" / "sms" / "db" / "smsrelay.db"
    gw = await start_gateway(gateway_settings(tmp_path, database_url=f"sqlite:///{database}"))
    await runtime.stop(gw.running)
    made = [tmp_path / "srv", tmp_path / "srv" / "sms", database.parent]
    assert {folder: _mode(folder) for folder in made} == dict.fromkeys(made, 0o700)
    assert _mode(tmp_path) == 0o755 and _mode(database) == 0o600
