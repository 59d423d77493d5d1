"""Fixtures shared by several test folders."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg_server, support


def _self_signed(folder: Path, name: str, subject: str, extension: str) -> tuple[str, str]:
    """A self-signed certificate (it is its own CA) and its key, made by openssl."""
    cert, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            subject,
            "-addext",
            extension,
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(cert), str(key)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A server certificate for 127.0.0.1."""
    return _self_signed(
        tmp_path_factory.mktemp("tls"), "server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1"
    )


@pytest.fixture(scope="session")
def renewed_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Another server certificate for 127.0.0.1: the first one renewed."""
    return _self_signed(
        tmp_path_factory.mktemp("tls-renewed"),
        "renewed",
        "/CN=127.0.0.1/O=renewed",
        "subjectAltName=IP:127.0.0.1",
    )


@pytest.fixture(scope="session")
def client_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A client certificate (mutual TLS): what a carrier issues to the ESME it lets in."""
    return _self_signed(
        tmp_path_factory.mktemp("tls-client"), "client", "/CN=esme", "extendedKeyUsage=clientAuth"
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg_server.PostgresServer]:
    """A real PostgreSQL server for the whole session; ``new_database()`` per test."""
    binaries = pg_server.find_binaries()
    if binaries is None:
        missing = "PostgreSQL (initdb, pg_ctl, postgres) not found under /usr/lib/postgresql/*/bin"
        if os.environ.get("CI"):
            pytest.fail(f"{missing} or on PATH: CI must install it (.ci/run does)")
        pytest.skip(f"{missing} or on PATH: apt-get install postgresql")
    server = pg_server.start(binaries)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    """A test that failed or timed out before stopping its `serve` or simulator (one that
    hangs may also ignore SIGTERM) must not leave it running under the next tests."""
    yield
    support.kill_leftovers()


@pytest.fixture(autouse=True)
def _root_logger_as_it_was() -> Iterator[None]:
    """Each CLI command (run in this process by CliRunner) sets up logging as a command's
    process would: its handler and level must not stay for the tests after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
