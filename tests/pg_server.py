"""A throwaway PostgreSQL server for tests: initdb into a temp directory, run, throw away."""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# Durability buys nothing in a database thrown away after the tests; skipping it is faster.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "lc_messages": "C",  # READY_LINE is read in English
}
START_TIMEOUT = 30.0
READY_LINE = b"ready to accept connections"  # the postmaster's own word
PORT_TAKEN = "could not create any TCP/IP sockets"  # its word when the port is in use
PORT_TRIES = 3
STOP_TIMEOUT = 10.0
NEEDED = ("initdb", "pg_ctl", "postgres")


def find_binaries() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: Debian's newest, else the PATH's."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all((folder / name).is_file() for name in NEEDED):
            return folder
    return None


def _version(bin_folder: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/9.6/bin -> (9, 6): compared as numbers, so 10 sorts above 9.6."""
    return tuple(int(part) for part in re.findall(r"\d+", bin_folder.parent.name))


def _free_port() -> int:
    """A port nobody listens on now (the kernel's pick; free again once the socket closes)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd | None:
    """Who runs initdb and postgres: they refuse root, so root hands them to Debian's user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root needs the 'postgres' system user") from None


def _as_server_user() -> dict[str, Any]:
    """subprocess arguments that run the command as ``_server_user()`` (no root groups kept)."""
    user = _server_user()
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    """One running server; ``new_database`` hands out an empty database per test."""

    bin: Path
    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    ready: threading.Event  # set when the server says it accepts connections, or exits
    _names: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, name_hint: str = "test") -> str:
        """Create an empty database and return its URL; the counter keeps names unique."""
        base = re.sub(r"[^a-z0-9_]+", "_", name_hint.lower())[:40]
        name = f"{base}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        """Immediate shutdown (no checkpoint: the data is thrown away), then remove the files."""
        try:
            subprocess.run(
                [self.bin / "pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w"],
                check=False,  # a server that already died is stopped too
                capture_output=True,
                timeout=STOP_TIMEOUT,
                cwd=self.folder,
                **_as_server_user(),
            )
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start(bin_folder: Path) -> PostgresServer:
    """initdb into a fresh temp directory and start the server on a free 127.0.0.1 port."""
    folder = Path(tempfile.mkdtemp(prefix="smsrelay-pg-"))
    try:
        user = _server_user()
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
        _initdb(bin_folder, folder)
        log = ""
        for _ in range(PORT_TRIES):
            # the port was free when probed; another process may take it before postgres binds
            server = _launch(bin_folder, folder, _free_port())
            if _came_up(server):
                return server
            log = (folder / "server.log").read_text(errors="replace")
            _halt(server)
            if PORT_TAKEN not in log:
                break
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not come up (server log below):\n{log}")


def _initdb(bin_folder: Path, folder: Path) -> None:
    command = [bin_folder / "initdb", "-D", folder / "data", "--auth=trust", "-U", "postgres"]
    # --no-sync: no fsync of the new files, for the same reason as fsync=off.
    command += ["--encoding=UTF8", "--locale=C", "--no-sync"]
    done = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
        **_as_server_user(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _launch(bin_folder: Path, folder: Path, port: int) -> PostgresServer:
    """postgres itself as our child (not daemonized by pg_ctl): its pid and exit are ours to see."""
    settings = {**SETTINGS, "port": str(port), "unix_socket_directories": str(folder)}
    command: list[str | Path] = [bin_folder / "postgres", "-D", folder / "data"]
    for key, value in settings.items():
        command += ["-c", f"{key}={value}"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=folder,
        **_as_server_user(),
    )
    ready = threading.Event()
    copier = threading.Thread(
        target=_copy_log, args=(process, folder / "server.log", ready), daemon=True
    )
    copier.start()
    return PostgresServer(bin_folder, folder, port, process, ready)


def _copy_log(process: subprocess.Popen[bytes], path: Path, ready: threading.Event) -> None:
    """The server's output into server.log (read to its end, so the server never blocks on
    a full pipe); ``ready`` set at its "ready to accept connections" line, or at its exit."""
    assert process.stdout is not None
    with process.stdout, open(path, "wb") as log:
        for line in process.stdout:
            log.write(line)
            log.flush()
            if READY_LINE in line:
                ready.set()
    ready.set()  # exited: the waiter looks at why


def _came_up(server: PostgresServer) -> bool:
    """Wait for the server's own "ready" line (or its exit) with a deadline; then connect
    once, so a server that says ready but refuses us counts as not up."""
    came_up = server.ready.wait(START_TIMEOUT)
    return came_up and server.process.poll() is None and _accepts_connections(server)


def _halt(server: PostgresServer) -> None:
    """The postmaster gone (it has usually exited already), its files kept for another try."""
    if server.process.poll() is None:
        server.process.kill()
    server.process.wait(timeout=STOP_TIMEOUT)


def _accepts_connections(server: PostgresServer) -> bool:
    try:
        psycopg.connect(server.url(), connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True
