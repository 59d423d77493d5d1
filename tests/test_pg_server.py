"""The ``postgres`` fixture: a real server on 127.0.0.1 with one fresh database per call."""

from __future__ import annotations

import socket

import psycopg
import pytest

from tests import pg_server
from tests.pg_server import PostgresServer


def test_each_new_database_is_empty_and_independent(postgres: PostgresServer) -> None:
    first, second = postgres.new_database("independent"), postgres.new_database("independent")
    assert first != second
    with psycopg.connect(first, autocommit=True) as one:
        one.execute("CREATE TABLE queued (id integer)")
    with psycopg.connect(second) as other:
        found = other.execute("SELECT to_regclass('queued')").fetchone()
    assert found == (None,)


def test_the_url_names_the_database_it_made(postgres: PostgresServer) -> None:
    url = postgres.new_database("Odd Name-ß!")
    assert url.startswith(f"postgresql://postgres@127.0.0.1:{postgres.port}/odd_name_")
    with psycopg.connect(url) as db:
        assert db.execute("SELECT current_database()").fetchone() == (url.rsplit("/", 1)[1],)


def test_the_server_listens_on_127_0_0_1_only(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.new_database("listen")) as db:
        assert db.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert db.execute("SELECT host(inet_server_addr())").fetchone() == ("127.0.0.1",)
    # All of 127/8 reaches loopback on Linux: a server bound to every address would answer here.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", postgres.port), 2):
        pass


def test_a_port_taken_between_probe_and_bind_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    binaries = pg_server.find_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL's binaries are not installed")
    with socket.socket() as squatter:  # what another process does in that instant
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = pg_server._free_port
        monkeypatch.setattr(pg_server, "_free_port", lambda: next(ports, None) or real_free_port())
        server = pg_server.start(binaries)
        try:
            assert server.port != taken
            with psycopg.connect(server.new_database("retry")) as db:
                assert db.execute("SELECT 1").fetchone() == (1,)
        finally:
            server.stop()
