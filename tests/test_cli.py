"""The CLI against a real database, through the same settings as serve."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from smsrelay.cli import cli
from smsrelay.cli_support import redacted
from smsrelay.store.sql_store import SqlStore


@pytest.fixture
def run(tmp_path: Path):
    runner = CliRunner()
    env = {"SMSRELAY_DATA_DIR": str(tmp_path / "data")}

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, (result.output, result.stderr)
        return result.output

    invoke("db", "upgrade")  # the database serve would have made
    return invoke


def _accept(tmp_path: Path, *messages: Any) -> None:
    """Messages stored as serve would have accepted them (the account and its number were
    made with the CLI)."""
    import asyncio

    from smsrelay.store.sqlite_store import SqliteStore

    async def accept() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        for message in messages:
            await store.accept_message(message)
        await store.close()

    asyncio.run(accept())


def test_a_command_run_where_there_is_no_database_says_so_and_creates_none(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    env = {"SMSRELAY_DATA_DIR": str(tmp_path / "elsewhere")}
    result = runner.invoke(cli, ["accounts", "list"], env=env)
    assert result.exit_code == 2
    assert f"no smsrelay database at {tmp_path / 'elsewhere' / 'smsrelay.db'}" in result.stderr
    assert not (tmp_path / "elsewhere" / "smsrelay.db").exists()
    created = runner.invoke(cli, ["accounts", "create", "shop"], env=env)
    assert created.exit_code == 0 and "note: creating a new database" in created.stderr
    assert (tmp_path / "elsewhere" / "smsrelay.db").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["shop", "--credit", "2000000000000"], "out of range"),
        (["shop", "--credit", "abc"], "not an amount"),
        (["shop", "--credit", "-5"], "below zero"),
        (["sh\u200bop"], "visible characters"),
    ],
)
def test_a_refused_account_create_leaves_no_new_database_behind(
    tmp_path: Path, args: list[str], says: str
) -> None:
    # It made the database, then refused: the next command in that folder found an empty
    # database instead of saying there was none.
    env = {"SMSRELAY_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(cli, ["accounts", "create", *args], env=env)
    assert result.exit_code == 2 and says in result.stderr, result.stderr
    assert "creating a new database" not in result.stderr
    assert not (tmp_path / "data" / "smsrelay.db").exists()


def test_accounts_lifecycle(run) -> None:
    created = json.loads(run("accounts", "create", "shop", "--credit", "12.5", "--json"))
    assert len(created["apiKey"]) == 40 and created["credit"] == "12.500"
    assert "shop\t12.500 EUR\tactive" in run("accounts", "list")
    run("accounts", "credit", "shop", "+2.5")
    run(
        "accounts",
        "set",
        "shop",
        "--quiet-hours",
        "off",
        "--region",
        "alsace-moselle",
        "--reply-url",
        "https://example.com/mo",
    )
    shown = json.loads(run("accounts", "show", "shop", "--json"))
    assert shown["credit"] == "15.000" and shown["quietHours"] is False
    assert shown["region"] == "alsace-moselle" and shown["replyUrl"] == "https://example.com/mo"
    human = run("accounts", "show", "shop")
    assert "disabled: no" in human and "numbers: -" in human and "None" not in human
    run("accounts", "disable", "shop")
    assert json.loads(run("accounts", "show", "shop", "--json"))["disabled"] is True
    rotated = json.loads(run("accounts", "rotate-key", "shop", "--json"))
    assert rotated["apiKey"] != created["apiKey"]


def test_refusals_exit_non_zero_with_a_message(run) -> None:
    run("accounts", "create", "shop")
    refused = run("accounts", "set", "shop", "--reply-url", "ftp://example.com/mo", code=2)
    assert "reply URL must be an http(s) URL with a host" in refused
    run("accounts", "set", "shop", "--reply-url", "", code=0)  # empty: no default reply URL
    run("accounts", "create", "shop", code=1)
    run("accounts", "show", "nobody", code=1)
    run("accounts", "credit", "shop", "lots", code=2)
    run("accounts", "credit", "shop", "-5", code=1)  # would go below zero
    assert "below zero" in run("accounts", "create", "debtor", "--credit", "-5", code=2)
    run("accounts", "create", "typo", "--credit", "abc", code=2)
    run("accounts", "set", "shop", code=2)
    for look_alike in ("sh\u200bop", "ctl\x01x"):  # invisible and control characters
        # typed wrong: a usage error (exit 2), as an amount that is not one (it was 1)
        assert "visible characters" in run("accounts", "create", look_alike, code=2)
    run("numbers", "add", "shop", "33757000001")
    run("numbers", "add", "shop", "33757000001", code=1)  # refused: it is taken


def test_credit_amounts_a_64_bit_column_cannot_hold_are_refused_before_any_write(run) -> None:
    # 9e12 + 1e12 EUR overflowed SQLite's integer: stored as a float, the account could no
    # longer be listed or shown, and its GET /v1/me answered 500.
    run("accounts", "create", "big", "--credit", "9e11")
    assert "cannot exceed" in run("accounts", "credit", "big", "+2e11", code=1)
    for amount in ("1e40", "+1e40"):
        assert "out of range" in run("accounts", "credit", "big", amount, code=2)
    assert "out of range" in run("accounts", "create", "huge", "--credit", "1e40", code=2)
    for amount in ("+-5", "++25"):  # "+-5" removed 5 EUR
        run("accounts", "credit", "big", amount, code=2)
    assert json.loads(run("accounts", "show", "big", "--json"))["credit"] == "900000000000.000"
    run("numbers", "add", "shop", "not-a-number", code=2)


def test_numbers_add_list_remove(run) -> None:
    run("accounts", "create", "shop")
    run("numbers", "add", "shop", "33757000002")
    run("numbers", "add", "shop", "33757000002", code=1)  # already taken
    typo = run("numbers", "add", "shop", "33757000003", "--connector", "orang", code=2)
    assert "no connector 'orang'" in typo and "known: default" in typo
    assert "+33757000002\tshop\tdefault" in run("numbers", "list", "shop")
    run("numbers", "remove", "+33757000002")
    assert run("numbers", "list").strip() == "no numbers"


def test_stop_list_commands(run) -> None:
    run("accounts", "create", "shop")
    run("stop", "add", "shop", "0612345678")
    assert "+33612345678" in run("stop", "list", "shop")
    run("stop", "remove", "shop", "+33612345678")
    assert "empty" in run("stop", "list", "shop")


def test_a_command_leaves_an_older_database_to_db_upgrade(tmp_path: Path) -> None:
    # `status` of a newly installed build (the README's cron check) migrated the database
    # under the older serve still running, and `db upgrade` then said "up to date".
    from smsrelay.store.schema import MIGRATIONS, current_version, upgrade
    from tests.factories import database_at_version

    runner = CliRunner()
    env = {"SMSRELAY_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "data").mkdir()
    db = database_at_version(tmp_path / "data" / "smsrelay.db", len(MIGRATIONS) - 1)
    for args in (["status"], ["accounts", "list"], ["accounts", "create", "other"]):
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 1 and "run `smsrelay db upgrade`" in result.stderr, args
    assert current_version(db) == len(MIGRATIONS) - 1
    done = runner.invoke(cli, ["db", "upgrade"], env=env)
    assert f"applied migrations: [{len(MIGRATIONS)}]" in done.output
    assert upgrade(db) == [] and runner.invoke(cli, ["status"], env=env).exit_code == 0


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    from smsrelay.store.schema import MIGRATIONS

    runner = CliRunner()
    env = {"SMSRELAY_DATA_DIR": str(tmp_path / "data")}
    every = list(range(1, len(MIGRATIONS) + 1))
    assert f"applied migrations: {every}" in runner.invoke(cli, ["db", "upgrade"], env=env).output
    assert "up to date" in runner.invoke(cli, ["db", "upgrade"], env=env).output


def test_webhook_retry_needs_an_id_or_all(run) -> None:
    run("webhooks", "retry", code=2)
    assert "no failed callbacks" in run("webhooks", "retry", "--all")  # cron-safe: exit 0
    assert "no callback 99" in run("webhooks", "retry", "99", code=1)


def test_webhook_retry_of_a_delivered_callback_says_there_is_nothing_to_retry(
    run, tmp_path: Path
) -> None:
    import asyncio

    from smsrelay.store.sqlite_store import SqliteStore
    from tests.webhooks.conftest import add_callback

    async def one_delivered() -> int:  # the database serve would use, a callback delivered
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        try:
            account = await store.create_account("a", "hash-a", 1_000_000, 0.0)
            webhook_id = await add_callback(store, account, "https://example.com/dlr")
            await store.claim_due_webhooks(9e9, 10, 9e9 + 60)
            await store.record_webhook_attempt(webhook_id, 1.0, 200, 1.0, None, "delivered", None)
            return webhook_id
        finally:
            await store.close()

    webhook_id = asyncio.run(one_delivered())
    answer = run("webhooks", "retry", str(webhook_id), code=1)
    assert f"callback {webhook_id} is delivered: nothing to retry" in answer
    assert "no callbacks" in run("webhooks", "list", "--failed")


def test_webhooks_list_hides_the_receivers_password(run, tmp_path: Path) -> None:
    # It printed https://alice:S3cretPw@… in full: the customer's credentials, in what gets
    # pasted into a ticket (the logs already named only the host).
    import asyncio

    from smsrelay.store.sqlite_store import SqliteStore
    from tests.webhooks.conftest import add_callback

    run("status")  # makes the database

    async def one_callback() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        try:
            account = await store.create_account("a", "hash-a", 1_000_000, 0.0)
            url = "https://alice:S3cretPw@hooks.example/dlr?n=1&token=T0ken"
            await add_callback(store, account, url)
        finally:
            await store.close()

    asyncio.run(one_callback())
    for output in (run("webhooks", "list"), run("webhooks", "list", "--json")):
        assert "S3cretPw" not in output and "T0ken" not in output
        assert "https://alice:***@hooks.example/dlr?n=1&token=***" in output


def test_messages_show_unknown_id(run) -> None:
    run("messages", "show", "42", code=1)


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    groups = {
        "accounts": ["create", "list", "show", "set", "credit", "disable", "enable", "rotate-key"],
        "numbers": ["add", "list", "remove"],
        "messages": ["show", "list", "replies"],
        "webhooks": ["list", "retry"],
        "stop": ["list", "add", "remove"],
        "db": ["upgrade", "purge", "backup"],
        "smsc": ["reply"],
    }
    for command in ["serve", "send", "status", "smsc"]:
        output = runner.invoke(cli, [command, "--help"]).output
        assert "Example" in output, command
    for group, commands in groups.items():
        for command in commands:
            output = runner.invoke(cli, [group, command, "--help"]).output
            assert "Example" in output, (group, command)


def serve_refused(tmp_path: Path, env: dict[str, str], stdin: str | None = None) -> str:
    """What serve says when settings it cannot use stop it (exit 1), before it made the
    database or listened."""
    base = {"SMSRELAY_DATA_DIR": str(tmp_path / "data"), "SMSRELAY_PORT": "0"}
    result = CliRunner().invoke(cli, ["serve"], env=base | env, input=stdin)
    assert result.exit_code == 1, result.output
    assert not (tmp_path / "data").exists()  # refused before the database was touched
    return result.output


def test_serve_names_the_connector_whose_settings_are_wrong(tmp_path: Path) -> None:
    said = serve_refused(tmp_path, {"SMSRELAY_SMSC": "smpp://id:pw@127.0.0.1:2775?window=0"})
    assert "could not start: connector default: window must be 1 to 1000" in said


def test_serve_names_a_misspelt_variable_and_the_setting_it_meant(tmp_path: Path) -> None:
    env = {"SMSRELAY_WEBHOOK_TIMOUT": "5", "SMSRELAY_SMSC": "smpp://id:pw@127.0.0.1:2775?window=0"}
    said = serve_refused(tmp_path, env)
    assert (
        "warning: SMSRELAY_WEBHOOK_TIMOUT (did you mean SMSRELAY_WEBHOOK_TIMEOUT?) "
        "is not a setting: ignored"
    ) in said


def test_every_command_names_a_misspelt_variable_once(run) -> None:
    # Only serve did: `SMSRELAY_DATABSE_URL=… smsrelay status` read another database silently.
    result = CliRunner().invoke(
        cli, ["status"], env={"SMSRELAY_DATABSE_URL": "postgresql://x@db/sms"}
    )
    said = "warning: SMSRELAY_DATABSE_URL (did you mean SMSRELAY_DATABASE_URL?) is not a setting"
    assert result.stderr.count(said) == 1, result.stderr


def test_serve_refuses_a_connector_tables_bad_option_before_anything_starts(
    tmp_path: Path,
) -> None:
    config = tmp_path / "smsrelay.toml"
    config.write_text('[connectors.orange]\nurl = "smpp://id:pw@127.0.0.1:2775"\nwindow = "x"\n')
    said = serve_refused(tmp_path, {"SMSRELAY_CONFIG": str(config), "SMSRELAY_LOG_LEVEL": "INFO"})
    assert "could not start: connector orange: window = 'x'" in said
    assert "api.listening" not in said  # it used to listen first


def test_serve_refuses_a_connectors_tls_file_before_anything_starts(tmp_path: Path) -> None:
    missing = tmp_path / "carrier-ca.pem"
    url = f"smpps://id:pw@127.0.0.1:2775?tls_ca={missing}"
    said = serve_refused(tmp_path, {"SMSRELAY_SMSC": url, "SMSRELAY_LOG_LEVEL": "INFO"})
    assert "could not start: connector default: cannot load its TLS files" in said
    assert str(missing) in said
    assert "api.listening" not in said  # it used to listen, and make the database, first


def test_serve_refuses_a_webhook_ca_file_it_cannot_read(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    said = serve_refused(tmp_path, {"SMSRELAY_WEBHOOK_TLS_CA": str(not_pem)})
    assert f"could not start: webhook_tls_ca: cannot load {not_pem}" in said


def test_serve_refuses_an_api_certificate_it_cannot_load(
    tmp_path: Path, certificate: tuple[str, str]
) -> None:
    not_pem = tmp_path / "api.pem"
    not_pem.write_text("not a certificate")
    cert, key = certificate
    for pem, key_file in ((not_pem, ""), (cert, cert)):  # garbage; a certificate as its key
        env = {"SMSRELAY_HTTP_TLS_CERT": str(pem), "SMSRELAY_HTTP_TLS_KEY": key_file}
        assert f"could not start: http_tls_cert: cannot load {pem}" in serve_refused(tmp_path, env)
    broken_key = {"SMSRELAY_HTTP_TLS_CERT": cert, "SMSRELAY_HTTP_TLS_KEY": str(not_pem)}
    said = serve_refused(tmp_path, broken_key)  # OpenSSL's "PEM lib" names neither
    assert f"cannot load {cert} with http_tls_key {not_pem}" in said
    alone = {"SMSRELAY_HTTP_TLS_CERT": cert}  # a certificate alone, its key forgotten
    assert "it holds no private key: set http_tls_key" in serve_refused(tmp_path, alone)
    assert key  # the good pair is served: tests/e2e/test_https.py


def test_serve_refuses_an_encrypted_api_key_instead_of_asking_for_its_passphrase(
    tmp_path: Path,
) -> None:
    # OpenSSL asked on the terminal (or read serve's stdin), blocking serve, even on SIGHUP
    cert, key = tmp_path / "api.pem", tmp_path / "api-key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "2", "-subj", "/CN=x"),
            *("-keyout", str(key), "-out", str(cert), "-passout", "pass:secret"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    env = {"SMSRELAY_HTTP_TLS_CERT": str(cert), "SMSRELAY_HTTP_TLS_KEY": str(key)}
    said = serve_refused(tmp_path, env, stdin="secret\n")
    encrypted = f"cannot load {cert} with http_tls_key {key}: its key is encrypted and serve cannot"
    assert encrypted in said


def test_smsc_reply_goes_to_the_built_in_simulator_the_settings_name(run) -> None:
    runner = CliRunner()
    env = {"SMSRELAY_BUILTIN_SMSC_CONTROL_PORT": "1"}  # nothing listens there
    result = runner.invoke(cli, ["smsc", "reply", "--from", "336", "--to", "337", "x"], env=env)
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:1" in result.stderr


def test_smsc_reply_to_what_is_no_control_api_is_one_error_line(tmp_path: Path) -> None:
    # Both ended in a traceback: a URL without its scheme, and the SMPP port by mistake.
    smpp_like = socket.socket()
    smpp_like.bind(("127.0.0.1", 0))
    smpp_like.listen()
    port = smpp_like.getsockname()[1]

    def answer_binary() -> None:
        conn, _ = smpp_like.accept()
        conn.settimeout(10)
        conn.recv(65536)
        conn.sendall(b"\x00\x00\x00\x10\x80\x00\x00\x00" + bytes(8))  # a generic_nack
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):  # all the client sent, so closing resets nothing
            pass
        conn.close()

    thread = threading.Thread(target=answer_binary, daemon=True)
    thread.start()
    runner = CliRunner()
    cases = {
        "nonsense": "is not a URL",
        "localhost:2776": "is not a URL",
        f"http://127.0.0.1:{port}": "the SMPP port",
    }
    for control, says in cases.items():
        args = ["smsc", "reply", "--control", control, "--from", "336", "--to", "337", "x"]
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and says in result.stderr, result.output
        assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    thread.join(5)
    smpp_like.close()


def test_db_backup_makes_a_private_copy_whatever_the_umask(run, tmp_path: Path) -> None:
    # Made by SQLite's VACUUM INTO, the copy took the umask: 0644, every local user could
    # read the texts, numbers and webhook secrets of a 0600 database.
    run("accounts", "create", "shop")
    copy = tmp_path / "sms.db"
    before = os.umask(0o022)  # a login shell's, systemd's
    serving = sqlite3.connect(tmp_path / "data" / "smsrelay.db", isolation_level=None)
    try:
        serving.execute("BEGIN IMMEDIATE")  # serve in the middle of a write: not waited for
        serving.execute("UPDATE accounts SET name = 'not committed'")
        assert f"copied the database to {copy}" in run("db", "backup", str(copy))
    finally:
        serving.close()
        os.umask(before)
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    with contextlib.closing(sqlite3.connect(copy)) as db:
        assert db.execute("SELECT name FROM accounts").fetchall() == [("shop",)]
    copy.write_bytes(b"an older backup")
    assert "exists: a backup goes to a new file" in run("db", "backup", str(copy), code=2)
    assert copy.read_bytes() == b"an older backup"  # never written over
    missing = tmp_path / "no-such-folder" / "sms.db"
    assert "cannot write" in run("db", "backup", str(missing), code=1)


def test_db_backup_to_a_name_that_reads_as_a_uri_copies_into_that_name(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite read a relative target "file:…" as a URI (the source is opened as one): the
    # copy went to "sms.db" at the umask's mode, and "file:sms.db" stayed empty (the diff
    # review).
    run("accounts", "create", "shop")
    monkeypatch.chdir(tmp_path)
    before = os.umask(0o022)
    try:
        run("db", "backup", "file:sms.db")
    finally:
        os.umask(before)
    copy = tmp_path / "file:sms.db"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and not (tmp_path / "sms.db").exists()
    with contextlib.closing(sqlite3.connect(copy)) as db:
        assert db.execute("SELECT name FROM accounts").fetchall() == [("shop",)]


def test_db_backup_through_a_symlink_and_dotdot_copies_into_the_file_named(
    run, tmp_path: Path
) -> None:
    # "current/../sms.db" with current a symlink: the private file was made where the kernel
    # resolves it, the copy written where abspath's textual ".." pointed, at the umask's mode,
    # the named backup left empty (the diff review).
    run("accounts", "create", "shop")
    (tmp_path / "disk2" / "day").mkdir(parents=True)
    (tmp_path / "backups").mkdir()
    (tmp_path / "backups" / "current").symlink_to(tmp_path / "disk2" / "day")
    before = os.umask(0o022)
    try:
        run("db", "backup", str(tmp_path / "backups" / "current" / ".." / "sms.db"))
    finally:
        os.umask(before)
    copy = tmp_path / "disk2" / "sms.db"  # where the kernel resolves the name
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and copy.stat().st_size > 0
    assert not (tmp_path / "backups" / "sms.db").exists()


def test_db_backup_of_what_is_not_a_sqlite_database_here_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "sms.db"
    pg = ["--database", "postgresql://sms@127.0.0.1:1/sms", "db", "backup", str(copy)]
    nowhere = ["--data-dir", str(tmp_path / "nowhere"), "db", "backup", str(copy)]
    for args, said in [(pg, "pg_dump"), (nowhere, "no smsrelay database at")]:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and said in result.stderr, result.output
    assert not copy.exists() and not (tmp_path / "nowhere").exists()


def test_db_purge_reports_what_it_deleted_and_wants_a_positive_age(run) -> None:
    assert "0 callbacks deleted, 0 unmatched receipts deleted" in run(
        "db", "purge", "--older-than", "30"
    )
    run("db", "purge", "--older-than", "0", code=2)


@pytest.fixture
def serving(tmp_path: Path) -> Any:
    """A serve process's hold on the database (what `status` asks about)."""
    from smsrelay.store.lock import ServeLock

    lock = ServeLock(os.path.realpath(tmp_path / "data" / "smsrelay.db"))
    lock.acquire()
    yield lock
    lock.release()


def test_status_reads_as_text_and_as_json(run) -> None:
    assert "parts queued: 0" in run("status") and "callbacks to post: 0" in run("status")
    figures = json.loads(run("status", "--json"))
    disk = figures.pop("disk")
    assert figures == {
        "parts": {"queued": 0, "sending": 0, "submitted": 0},  # zeros said, not left out
        "pendingCallbacks": 0,
        # every connector said, 0 included (a monitor's key was missing when all was well)
        "dueNotSent": {"default": {"parts": 0, "oldestDueSince": None}},
        "sending": {"default": {"parts": 0, "sendingSince": None}},
        "oldestCallbackDueSince": None,
        "failedCallbacks": 0,
        "serveRunning": False,
    }
    assert disk["minFreeMb"] == 100 and isinstance(disk["freeMb"], int)  # serve's reserve
    text = run("status")
    assert "callbacks given up: 0" in text
    assert "MB free (sends refused under 100)" in text.splitlines()[-2]
    assert text.splitlines()[-1] == "serve: not running"


def test_status_as_a_monitoring_check_fails_while_serve_is_not_running(run, tmp_path) -> None:
    # With serve down nothing is accepted, so nothing is overdue: the README's cron check
    # stayed green while the gateway took nothing at all.
    refused = run("status", "--max-overdue", "600", code=1)
    assert "error: serve is not running on this database" in refused
    from smsrelay.store.lock import ServeLock

    lock = ServeLock(os.path.realpath(tmp_path / "data" / "smsrelay.db"))
    lock.acquire()
    try:
        assert "serve: running" in run("status", "--max-overdue", "600")
    finally:
        lock.release()


def test_status_shows_parts_due_that_no_link_has_sent(run, tmp_path: Path, serving) -> None:
    import asyncio

    from smsrelay.store.sqlite_store import SqliteStore
    from tests.factories import new_message

    async def accept_one() -> None:  # accepted while no serve runs: due, and not sent
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        await store.create_account("a", "hash-a", 1_000_000, 0.0)
        await store.add_number("a", "+33757000001", "default", 0.0)
        await store.accept_message(new_message())
        await store.close()

    asyncio.run(accept_one())
    assert "connector default: 1 part(s) due, not sent, the oldest since 1970-01-01" in run(
        "status"
    )
    late = json.loads(run("status", "--json"))["dueNotSent"]["default"]
    assert late["parts"] == 1 and late["oldestDueSince"].startswith("1970-01-01")
    # For monitoring: due since 1970 is more than a day late; a week's allowance is not.
    assert "not leaving: connector default" in run("status", "--max-overdue", "86400", code=1)
    run("status", "--max-overdue", str(100 * 365 * 86400))


# The clock `status` reads in the tests below (SMSRELAY_FIXED_CLOCK): an hour after T0.
T0 = 1_772_445_600.0  # 2026-03-02 10:00 UTC
NOW = "2026-03-02T11:00:00+00:00"


def test_status_names_the_connector_whose_parts_the_smsc_does_not_answer(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving
) -> None:
    import asyncio

    from smsrelay.service.dates import iso_text
    from smsrelay.store.sqlite_store import SqliteStore
    from smsrelay.webhooks.payloads import BUILDERS
    from tests.factories import new_message

    numbers = {"stuck": "+33757000001", "fresh": "+33757000002", "answered": "+33757000003"}

    async def one_part_each() -> None:  # what serve's dispatcher left in the database
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        await store.create_account("a", "hash-a", 1_000_000, 0.0)
        for connector, number in numbers.items():
            await store.add_number("a", number, connector, 0.0)
            await store.accept_message(new_message(sender=number, created_at=T0, due_at=T0))
        await store.claim_due_parts("stuck", T0, 10, T0 + 60)  # never answered since
        await store.claim_due_parts("fresh", T0 + 3590, 10, T0 + 3650)
        [answered] = await store.claim_due_parts("answered", T0, 10, T0 + 60)
        await store.mark_submitted(answered.part_id, "abc", "abc", T0 + 1, BUILDERS, 1)
        await store.close()

    asyncio.run(one_part_each())
    monkeypatch.setenv("SMSRELAY_FIXED_CLOCK", NOW)
    sending = json.loads(run("status", "--json"))["sending"]
    assert sending == {
        "default": {"parts": 0, "sendingSince": None},
        "stuck": {"parts": 1, "sendingSince": iso_text(T0)},
        "fresh": {"parts": 1, "sendingSince": iso_text(T0 + 3590)},
    }
    assert f"connector stuck: 1 part(s) sending, the oldest claimed at {iso_text(T0)}" in run(
        "status"
    )
    refused = run("status", "--max-overdue", "600", code=1)
    assert "parts sending for more than 600 s are not answered: connector stuck\n" in refused
    # both messages have been due an hour and the SMSC has taken neither: a part claimed
    # again after each unanswered try no longer looks fresh (the metrics review)
    assert "parts due for more than 600 s are not leaving: connector fresh, stuck" in refused
    run("status", "--max-overdue", "3600")  # the stuck part's hour is within the allowance


def test_status_fails_when_callbacks_have_waited_too_long_and_says_how_many(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving
) -> None:
    import asyncio

    from smsrelay.service.dates import iso_text
    from smsrelay.store.sqlite_store import SqliteStore
    from tests.webhooks.conftest import add_callback

    monkeypatch.setenv("SMSRELAY_FIXED_CLOCK", NOW)
    run("status", "--max-callback-overdue", "0")  # none due: all is well

    async def a_receiver_down() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        account = await store.create_account("a", "hash-a", 1_000_000, 0.0)
        url = "https://example.com/dlr"
        for stored_at in (T0, T0 + 60):  # each tried once, the next try after status runs
            webhook_id = await add_callback(store, account, url, now=stored_at)
            await store.record_webhook_attempt(
                webhook_id, stored_at, 503, 2.0, "HTTP 503", "pending", T0 + 7200
            )
        given_up = await add_callback(store, account, url, now=T0 - 86400)
        await store.record_webhook_attempt(given_up, T0, 503, 2.0, "HTTP 503", "failed", None)
        await add_callback(store, account, url, now=T0 + 3590)  # just stored
        await store.close()

    asyncio.run(a_receiver_down())
    figures = json.loads(run("status", "--json"))
    assert figures["oldestCallbackDueSince"] == iso_text(T0)
    assert (figures["failedCallbacks"], figures["pendingCallbacks"]) == (1, 3)
    human = run("status")
    assert f"the oldest callback to post has been due since {iso_text(T0)}" in human
    assert "callbacks given up: 1" in human
    refused = run("status", "--max-callback-overdue", "600", code=1)
    assert "2 callback(s) due for more than 600 s are not delivered" in refused
    # Given up, a callback is no longer late: the check went quiet while it stayed lost.
    refused = run("status", "--max-callback-overdue", "3600", code=1)
    assert refused.endswith(
        "error: 1 callback(s) given up (smsrelay webhooks list --failed; "
        "smsrelay webhooks retry --all posts them again)\n"
    )


def test_status_names_every_problem_on_its_own_line(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving
) -> None:
    import asyncio

    from smsrelay.store.sqlite_store import SqliteStore
    from tests.factories import new_message
    from tests.webhooks.conftest import add_callback

    async def everything_late() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        account = await store.create_account("a", "hash-a", 1_000_000, 0.0)
        await store.add_number("a", "+33757000001", "default", 0.0)
        await store.accept_message(new_message(created_at=T0, due_at=T0))
        await store.accept_message(new_message(created_at=T0, due_at=T0))
        await store.claim_due_parts("default", T0, 1, T0 + 60)  # one sending, one queued
        await add_callback(store, account, "https://example.com/dlr", now=T0)
        await store.close()

    asyncio.run(everything_late())
    monkeypatch.setenv("SMSRELAY_FIXED_CLOCK", NOW)
    refused = run("status", "--max-overdue", "600", "--max-callback-overdue", "600", code=1)
    assert refused.endswith(
        "error: parts due for more than 600 s are not leaving: connector default\n"
        "error: parts sending for more than 600 s are not answered: connector default\n"
        "error: 1 callback(s) due for more than 600 s are not delivered "
        "(a receiver down? see smsrelay webhooks list)\n"
    )


def test_messages_replies_lists_what_came_in(run, tmp_path: Path) -> None:
    import asyncio

    from smsrelay.store.records import InboundReply
    from smsrelay.store.sqlite_store import SqliteStore
    from smsrelay.webhooks.payloads import BUILDERS

    assert run("messages", "replies") == "no replies\n"

    async def receive() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        reply = InboundReply("default", "+33612345678", "+33757000009", "Oui", "OUI", bool, 1.0)
        await store.record_reply(reply, BUILDERS)
        await store.close()

    asyncio.run(receive())
    listed = run("messages", "replies")
    assert (
        "+33612345678 -> +33757000009" in listed and "(no owner: a number no account has" in listed
    )
    [row] = json.loads(run("messages", "replies", "--json"))
    assert (row["text"], row["answers"], row["owned"]) == ("Oui", None, False)


def test_the_cli_works_on_a_postgresql_database(postgres: Any) -> None:
    """Any machine that reaches the shared database can run the CLI (no file to find)."""
    runner = CliRunner()
    env = {"SMSRELAY_DATABASE_URL": postgres.new_database("cli")}

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, (result.output, result.stderr)
        return result.output

    from smsrelay.store.pg_schema import MIGRATIONS

    every = list(range(1, len(MIGRATIONS) + 1))
    assert f"applied migrations: {every}" in run("db", "upgrade")
    assert "up to date" in run("db", "upgrade")
    key = json.loads(run("accounts", "create", "shop", "--credit", "12.5", "--json"))["apiKey"]
    assert key
    run("numbers", "add", "shop", "33757000009")
    assert "33757000009" in run("numbers", "list")
    run("accounts", "create", "shop", code=1)  # a name is taken once, whatever the engine
    assert "shop\t12.500 EUR\tactive" in run("accounts", "list")
    assert json.loads(run("status", "--json"))["pendingCallbacks"] == 0


def test_a_postgresql_database_without_smsrelay_s_tables_is_not_quietly_made_one(
    postgres: Any,
) -> None:
    # pointed at the wrong database (even `postgres`), `accounts list` made 11 tables there
    # and `status` reported all well: a monitoring job then watched an empty gateway
    # the test server trusts loopback: the password is only there to be kept out of messages
    url = postgres.new_database("wrong").replace("postgres@", "postgres:s3cret@", 1)
    runner = CliRunner()
    for args in (["accounts", "list"], ["status"], ["messages", "list"]):
        result = runner.invoke(cli, ["--database", url, *args])
        assert result.exit_code == 2, (args, result.output)
        assert "no smsrelay tables in" in result.stderr and "db upgrade" in result.stderr
        assert "s3cret" not in result.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)
    made = runner.invoke(cli, ["--database", url, "accounts", "create", "shop"])
    assert made.exit_code == 0 and "creating smsrelay's tables" in made.stderr
    assert runner.invoke(cli, ["--database", url, "accounts", "list"]).exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ("messages", "show", "99999999999999999999"),
        ("messages", "list", "--limit", "99999999999999999999"),
        ("messages", "list", "--limit", "-1"),  # quietly meant no limit
        ("messages", "replies", "--limit", "0"),
        ("webhooks", "list", "--failed", "--pending"),  # showed the failed ones only
        ("webhooks", "retry", "99999999999999999999"),
    ],
)
def test_ids_and_limits_a_database_cannot_hold_are_usage_errors(run, args: tuple[str, ...]) -> None:
    said = run(*args, code=2)  # was an OverflowError traceback (or the wrong list)
    assert "Invalid value" in said or "choose one" in said


def test_a_data_dir_that_cannot_hold_a_database_is_one_error_line(tmp_path: Path) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("")
    runner = CliRunner()
    for args in (["accounts", "create", "x"], ["db", "upgrade"]):
        result = runner.invoke(cli, ["--data-dir", str(a_file), *args])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert "error: cannot use the database" in result.stderr  # was a FileExistsError
        assert "note: creating" not in result.stderr  # said first, then the error


def test_a_database_servers_refusal_is_one_error_line(postgres: Any) -> None:
    # a role that may not make tables (PostgreSQL 15's public schema: its owner's only) got
    # a psycopg traceback from `db upgrade` and `serve`
    url = postgres.new_database("refusing")
    role = f"visitor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    visitor = url.replace("postgres@", f"{role}@", 1)
    for args in (["db", "upgrade"], ["serve", "--port", "0"]):
        result = CliRunner().invoke(cli, ["--database", visitor, *args])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert "the database server refused: permission denied for schema public" in (result.stderr)
        assert "Traceback" not in result.output


def test_db_upgrade_on_an_unreachable_database_is_one_error_line() -> None:
    result = CliRunner().invoke(
        cli, ["--database", "postgresql://nobody@127.0.0.1:1/x", "db", "upgrade"]
    )
    assert result.exit_code == 1 and result.stderr.startswith("error:"), result.output


@pytest.mark.parametrize(
    ("url", "message"),
    [("sqlite:///", "needs a path"), ("postgresql://x@[bad", "cannot be read")],
)
def test_a_database_url_that_cannot_work_is_refused(url: str, message: str) -> None:
    # sqlite:/// opened an in-memory database: an account made there was gone at once
    result = CliRunner().invoke(cli, ["--database", url, "accounts", "create", "mem"])
    assert result.exit_code == 2 and message in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--max-overdue", "nan"),  # accepted: the check could never fire
        ("smsc", "--port", "65535"),  # its control port would be 65536: an OverflowError
        ("smsc", "--port", "-1"),
        ("smsc", "--password", "x"),  # without --system-id it bound anyone, any password
        ("smsc", "--tls-cert", "/nonexistent/cert.pem"),  # "[Errno 2]" without the file
    ],
)
def test_values_that_cannot_work_are_usage_errors_before_anything_runs(
    args: tuple[str, ...],
) -> None:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_quiet_hours_off_lets_what_they_hold_leave_now(run, tmp_path: Path) -> None:
    # It changed only the next sends: the newcomer's first message, sent in the evening,
    # still waited for 08:00 after `accounts set demo --quiet-hours off`.
    import asyncio

    from smsrelay.store.sqlite_store import SqliteStore
    from tests.factories import new_message

    run("accounts", "create", "shop", "--credit", "10")
    run("numbers", "add", "shop", "33757000001")
    url = f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}"

    async def in_store(work: Any) -> Any:
        store = SqliteStore(url)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    async def accept(store: SqliteStore) -> int:
        return await store.accept_message(new_message(created_at=100.0, due_at=9e9))

    async def claim(store: SqliteStore) -> list[Any]:
        return await store.claim_due_parts("default", 200.0, 10, 260.0)

    message_id = asyncio.run(in_store(accept))
    assert "1 part(s) held for quiet hours leave now" in run(
        "accounts", "set", "shop", "--quiet-hours", "off"
    )
    assert [part.message_id for part in asyncio.run(in_store(claim))] == [message_id]


def test_a_command_keeps_the_store_s_warnings_for_serve_s_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # beside running PostgreSQL nodes, `accounts credit` printed bare `store.batch.run_alone`
    # lines (Python's last-resort handler): cron mail full of what looked like failures
    real = SqlStore.list_accounts

    async def listing_beside_nodes(self: SqlStore) -> Any:
        logging.getLogger("smsrelay.store").warning("store.batch.run_alone")
        return await real(self)

    monkeypatch.setattr(SqlStore, "list_accounts", listing_beside_nodes)
    env = {"SMSRELAY_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    assert runner.invoke(cli, ["accounts", "create", "shop"], env=env).exit_code == 0
    quiet = runner.invoke(cli, ["accounts", "list"], env=env)
    assert quiet.exit_code == 0 and "shop" in quiet.output
    assert "run_alone" not in quiet.stderr
    asked = runner.invoke(cli, ["accounts", "list"], env={**env, "SMSRELAY_LOG_LEVEL": "WARNING"})
    assert "store.batch.run_alone" in asked.stderr  # shown when asked for


def test_a_log_level_no_one_knows_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path), "serve"], env={"SMSRELAY_LOG_LEVEL": "verbose"}
    )
    assert result.exit_code == 2 and "log_level must be one of" in result.stderr
    assert not isinstance(result.exception, ValueError)  # was "Unknown level" from logging


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=s3cret&sslmode=require", "?password=***&sslmode=require"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_a_database_url_s_password_is_kept_out_of_messages(url: str, shown: str) -> None:
    assert shown in redacted(url) and "s3cret" not in redacted(url)


def test_a_command_against_an_unreachable_postgresql_is_one_error_line() -> None:
    # the tables check (before the store opens) meets the connection error first
    url = "postgresql://nobody:s3cret@127.0.0.1:1/x"
    result = CliRunner().invoke(cli, ["--database", url, "accounts", "list"])
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot use the database")
    assert "s3cret" not in result.stderr and "Traceback" not in result.output


def test_a_command_does_not_import_what_only_serve_and_the_simulator_need() -> None:
    # Every command, --help included, imported every country's holiday calendar and aiohttp:
    # 1.5-3 s before it did anything, paid by each CLI call of a CI job.
    code = (
        "import sys, smsrelay.cli; "
        "print(sorted(m for m in ('holidays', 'aiohttp') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_stop_add_and_numbers_remove_say_what_they_did_to_waiting_messages(
    run, tmp_path: Path
) -> None:
    # `stop add` cancelled and refunded a waiting message without a word, and `numbers
    # remove` left queued messages to leave from the number with the answers going nowhere.
    from tests.factories import new_message

    run("accounts", "create", "shop", "--credit", "1")
    run("numbers", "add", "shop", "33757000001")
    recipients = ("+33611111111", "+33622222222", "+33633333333")
    _accept(tmp_path, *(new_message(recipient=to, due_at=9e9) for to in recipients))
    said = run("stop", "add", "shop", "0611111111")
    assert "added, id 1" in said and "1 waiting message cancelled and refunded" in said
    assert "cancelled" not in run("stop", "add", "shop", "0699999999")  # nothing waited
    said = run("numbers", "remove", "33757000001")
    assert "2 messages from it not finished: queued ones still leave from it" in said


@pytest.mark.parametrize(
    ("args", "env", "secret"),
    [
        (
            ["--database", "postgresql://u:s3cretpw@127.0.0.1:notaport/sms", "status"],
            {},
            "s3cretpw",
        ),
        (["--database", "postgresql://u:pw%ZZtoken@127.0.0.1:1/sms", "status"], {}, "pw%ZZtoken"),
        (["serve"], {"SMSRELAY_SMSC": "smpp://id:s3c#retpw@127.0.0.1:2775"}, "s3c"),
    ],
)
def test_no_error_line_shows_a_password_of_the_settings(
    tmp_path: Path, args: list[str], env: dict[str, str], secret: str
) -> None:
    # The URL a parser could not read was named whole, and libpq quotes the token it could
    # not decode: both went to the journal and to cron's mail in clear.
    env = {"SMSRELAY_DATA_DIR": str(tmp_path / "data"), **env}
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code != 0 and result.stderr.startswith("error:"), result.output
    assert secret not in result.stderr and "***" in result.stderr, result.stderr


def test_webhooks_retry_all_queues_every_failed_callback_in_steps(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from smsrelay.service import retention
    from smsrelay.store.sqlite_store import SqliteStore
    from tests.webhooks.conftest import add_callback

    async def five_given_up() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        account = await store.create_account("a", "hash-a", 1_000_000, 0.0)
        for _ in range(5):
            webhook_id = await add_callback(store, account, "https://example.com/dlr", now=T0)
            await store.record_webhook_attempt(webhook_id, T0, 503, 2.0, "HTTP 503", "failed", None)
        await store.close()

    asyncio.run(five_given_up())
    monkeypatch.setattr(retention, "STEP", 2)  # three steps
    monkeypatch.setattr(retention, "YIELD_S", 0.0)
    assert "queued 5 callback(s) for retry" in run("webhooks", "retry", "--all")
    assert json.loads(run("status", "--json"))["failedCallbacks"] == 0


def test_an_account_name_is_one_name_however_its_accents_were_typed(run) -> None:
    # "café" with é and "café" with e + a combining accent were two accounts that looked
    # the same in every list.
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    run("accounts", "create", composed)
    run("accounts", "create", decomposed, code=1)
    assert composed in run("accounts", "show", decomposed)
    assert len(json.loads(run("accounts", "list", "--json"))) == 1


def test_disabling_an_account_says_what_it_queued_still_leaves(run, tmp_path: Path) -> None:
    from tests.factories import new_message

    run("accounts", "create", "shop", "--credit", "1")
    run("numbers", "add", "shop", "33757000001")
    _accept(tmp_path, new_message(due_at=9e9), new_message(due_at=9e9))
    said = run("accounts", "disable", "shop")
    assert "disabled" in said and "2 messages it queued before still leave" in said
    assert "still leave" not in run("accounts", "enable", "shop")


def test_messages_list_json_carries_what_a_test_asserts_on(run, tmp_path: Path) -> None:
    # Only id, to, state, parts and dates: a CI suite ran `messages show` (a process) each.
    from tests.factories import new_message

    run("accounts", "create", "shop", "--credit", "1")
    run("numbers", "add", "shop", "33757000001")
    _accept(tmp_path, new_message(text="Votre code: 1234", tag="otp"))
    [row] = json.loads(run("messages", "list", "--json"))
    assert (row["from"], row["to"], row["text"]) == (
        "+33757000001",
        "+33612345678",
        "Votre code: 1234",
    )
    assert (row["tag"], row["cost"]) == ("otp", "0.045")


def test_every_json_listing_has_camel_case_keys_and_iso_times(run, tmp_path: Path) -> None:
    # webhooks, numbers and STOP lists dumped the store's records: snake_case keys, Unix
    # floats, history as positional arrays; db purge had a key with a space.
    import asyncio

    from smsrelay.store.sqlite_store import SqliteStore
    from tests.webhooks.conftest import add_callback

    run("accounts", "create", "shop")
    run("numbers", "add", "shop", "33757000001")
    run("stop", "add", "shop", "0612345678")

    async def one_attempted_callback() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'data' / 'smsrelay.db'}")
        await store.open()
        account = await store.find_account("shop")
        assert account is not None
        webhook_id = await add_callback(store, account, "https://example.com/dlr", now=T0)
        await store.record_webhook_attempt(webhook_id, T0, 503, 2.0, "HTTP 503", "failed", None)
        await store.close()

    asyncio.run(one_attempted_callback())
    [callback] = json.loads(run("webhooks", "list", "--json"))
    assert callback["createdAt"].startswith("2026-03-02T11:00:00+01:00")
    assert callback["history"] == [
        {"at": "2026-03-02T11:00:00+01:00", "status": 503, "latencyMs": 2.0, "error": "HTTP 503"}
    ]
    assert {"callbackId", "lastError", "deliveredAt", "dueAt"} <= set(callback)
    [number] = json.loads(run("numbers", "list", "--json"))
    assert number == {"msisdn": "+33757000001", "account": "shop", "connector": "default"}
    [entry] = json.loads(run("stop", "list", "shop", "--json"))
    assert set(entry) == {"id", "phoneNumber", "createdAt"}
    purged = json.loads(run("db", "purge", "--older-than", "30", "--json"))
    assert set(purged) == {"messages", "replies", "callbacks", "unmatchedReceipts"}


def test_accounts_set_says_what_took_and_warns_of_a_reply_url_serve_refuses(
    run, tmp_path: Path
) -> None:
    # Every `accounts set` printed the same summary line whatever was set, and a private
    # reply URL on a gateway serving a real SMSC was taken silently: every reply then failed.
    run("accounts", "create", "shop")
    secret = "s3cret-of-16-chr"
    said = run("accounts", "set", "shop", "--reassemble-replies", "on", "--webhook-secret", secret)
    assert "reassembleReplies: yes" in said and "webhookSecret: set" in said
    short = run("accounts", "set", "shop", "--webhook-secret", secret[:-1], code=2)
    assert "at least 16 characters" in short  # it took "short": guessed from one callback
    env = {
        "SMSRELAY_DATA_DIR": str(tmp_path / "data"),
        "SMSRELAY_SMSC": "smpp://a:b@smsc.example:2775",
    }
    args = ["accounts", "set", "shop", "--reply-url", "http://10.0.0.1/hook"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0 and "replyUrl: http://10.0.0.1/hook" in result.output
    assert "warning: 10.0.0.1 is a private or reserved address" in result.stderr
    assert "warning" not in run("accounts", "set", "shop", "--reply-url", "http://10.0.0.1/h")


def test_allowed_ips_are_set_shown_and_cleared_and_a_malformed_list_changes_nothing(
    run,
) -> None:
    run("accounts", "create", "shop")
    said = run("accounts", "set", "shop", "--allowed-ips", "203.0.113.7, 2001:DB8::/32")
    assert "allowedIps: 203.0.113.7, 2001:db8::/32" in said  # as stored: canonical
    assert "allowed-ips 203.0.113.7,2001:db8::/32" in run("accounts", "list")
    assert "allowedIps: 203.0.113.7, 2001:db8::/32" in run("accounts", "show", "shop")
    shown = json.loads(run("accounts", "show", "shop", "--json"))
    assert shown["allowedIps"] == ["203.0.113.7", "2001:db8::/32"]
    for malformed, says in [
        ("203.0.113.7,10.0.0.300", "'10.0.0.300' is not an IPv4 or IPv6 address or network"),
        ("198.51.100.5/24", "has host bits set: write 198.51.100.0/24 for the network"),
        (" , ", "no address given"),
    ]:
        refused = run("accounts", "set", "shop", "--allowed-ips", malformed, code=2)
        assert says in refused, refused
    listed = json.loads(run("accounts", "list", "--json"))
    assert listed[0]["allowedIps"] == ["203.0.113.7", "2001:db8::/32"]  # unchanged
    for anywhere in ("", "any"):
        run("accounts", "set", "shop", "--allowed-ips", "192.0.2.1")
        assert "allowedIps: any" in run("accounts", "set", "shop", "--allowed-ips", anywhere)
        assert json.loads(run("accounts", "show", "shop", "--json"))["allowedIps"] == []
        assert "allowed-ips" not in run("accounts", "list")


def test_a_common_password_hides_itself_not_the_words_it_is_made_of(tmp_path: Path) -> None:
    # "postgres" as the password made "postgresql://" read "***ql://" (the diff review).
    args = ["--database", "postgresql://postgres:postgres@127.0.0.1:notaport/sms", "status"]
    result = CliRunner().invoke(cli, args, env={"SMSRELAY_DATA_DIR": str(tmp_path)})
    assert "postgresql://postgres:***@127.0.0.1:notaport/sms" in result.stderr, result.stderr


def test_a_start_whose_first_commit_a_full_disk_refuses_says_to_free_space() -> None:
    # serve on a full disk: "could not start: database commit failed: database or disk is
    # full", without the hint the README promises (the storage review)
    from smsrelay.cli_support import disk_full_hint
    from smsrelay.errors import TransientError

    full = TransientError("database commit failed: database or disk is full")
    assert disk_full_hint(full) == " (the disk holding the database is full: free some space)"
    assert disk_full_hint(TransientError("database commit failed: database is locked")) == ""


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    smsrelay = Path(sys.executable).with_name("smsrelay")
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(smsrelay)]
    return subprocess.run(
        [*command, *args], check=False, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_a_folder_or_database_the_user_cannot_write_is_named_in_one_error_line(
    tmp_path: Path,
) -> None:
    # It said "note: creating a new database" and then SQLite's "unable to open database
    # file"; on a database it could read but not write, "attempt to write a readonly database".
    shared = Path(tempfile.mkdtemp(prefix="smsrelay-perm-"))  # pytest's tmp_path is 0700
    try:
        shared.chmod(0o755)
        locked = shared / "data"
        locked.mkdir(mode=0o755)
        made = _as_nobody("--data-dir", str(locked), "accounts", "create", "shop")
        assert made.returncode == 1, made.stderr
        assert (
            made.stderr == f"error: cannot use the database: {locked} cannot be written by nobody\n"
        )
        smsrelay = str(Path(sys.executable).with_name("smsrelay"))
        subprocess.run([smsrelay, "--data-dir", str(locked), "db", "upgrade"], check=True)
        (locked / "smsrelay.db").chmod(0o644)
        listed = _as_nobody("--data-dir", str(locked), "accounts", "list")
        assert listed.returncode == 1 and listed.stderr.count("\n") == 1, listed.stderr
        assert f"{locked / 'smsrelay.db'} cannot be written by nobody" in listed.stderr
        locked.chmod(0o700)  # as serve makes its folder: nobody may not even look in
        status = _as_nobody("--data-dir", str(locked), "status")
        assert status.returncode == 1 and "Traceback" not in status.stderr, status.stderr
        assert (
            status.stderr == f"error: cannot use the database: {locked} cannot be read by "
            "nobody (serve's data folder is its user's only: run this as serve's user)\n"
        )
    finally:
        shutil.rmtree(shared)
