"""The smsrelay command line: serve, accounts, numbers, send, messages, db, smsc."""

from __future__ import annotations

import errno
import math
import os
import signal
import sqlite3
import ssl
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from smsrelay.cli_accounts import accounts, numbers
from smsrelay.cli_messages import messages, stop, webhooks
from smsrelay.cli_support import (
    camel_case,
    disk_full_hint,
    emit,
    fail,
    fail_all,
    is_server_error,
    refuse_missing_database,
    run,
    run_or_fail,
    settings_from,
    with_gateway,
)
from smsrelay.errors import SmsRelayError
from smsrelay.logs import configure as configure_logging
from smsrelay.service import retention
from smsrelay.service.dates import iso_text
from smsrelay.service.gateway import Gateway
from smsrelay.settings import API_KEY_VARIABLE, LOG_LEVELS, Settings, url_host
from smsrelay.store.backup import backup_into
from smsrelay.store.engine import path_from_url
from smsrelay.store.factory import is_postgres, store_for
from smsrelay.store.health import MIB, free_bytes
from smsrelay.store.lock import ServeLock

FC = TypeVar("FC", bound=Callable[..., Any])  # a click command being decorated


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", help="Folder for the SQLite database (default ./data).")
@click.option(
    "--database",
    "database_url",
    help="Database URL: sqlite:////srv/sms.db (four slashes: an absolute path), or "
    "postgresql://user@host/db to share it.",
)
@click.option("--config", type=click.Path(dir_okay=False), help="A TOML settings file.")
@click.pass_context
def cli(
    ctx: click.Context, data_dir: str | None, database_url: str | None, config: str | None
) -> None:
    """smsrelay: a self-hosted SMS gateway speaking SMS Partner's long-number API.

    \b
    Example:
      smsrelay serve
      smsrelay accounts create shop --credit 50
    """
    ctx.obj = {"data_dir": data_dir, "database_url": database_url, "config": config}
    # A command's outcome is its output or its error line; the store's warnings meant for
    # serve's log (a batch run alone beside running nodes) filled cron mail as bare lines.
    # serve sets its own level; SMSRELAY_LOG_LEVEL shows them for a command too.
    asked = (os.environ.get("SMSRELAY_LOG_LEVEL") or "").upper()
    configure_logging(asked if asked in LOG_LEVELS else "ERROR")  # a bad one: serve says so


@cli.command()
@click.option("--host", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="HTTP port (default 8080).")
@click.option("--data-dir", help="Folder for the SQLite database (default ./data).")
@click.option("--database", "database_url", help="Database URL (overrides --data-dir).")
@click.option("--smsc", help="smpp://ID:PASSWORD@HOST:PORT of a real SMSC (default: built-in).")
@click.option(
    "--allow-private-webhooks/--no-allow-private-webhooks",
    default=None,
    help="Allow callbacks to private/loopback addresses (default: only with the built-in SMSC).",
)
@click.pass_context
def serve(ctx: click.Context, /, **flags: Any) -> None:
    """Run the HTTP API, the dispatcher, the webhook sender and (by default) the built-in SMSC.

    On an empty database it creates the demo account and number and prints them.

    \b
    Example:
      smsrelay serve --port 8080
      SMSRELAY_SMSC=smpp://user:secret@smsc.example.net:2775 smsrelay serve
    """
    # SIGHUP asks for a certificate reload, never a stop: ignored until serve's handler is
    # in place (the files are read after this, so none is missed)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from smsrelay.runtime import serve_forever

    settings = settings_from(ctx, **flags)  # a misspelt variable said first
    try:
        code = run(serve_forever(settings))
    except OSError as exc:
        # only a port in use is helped by the ports hint (not a bad host, a data dir that is
        # a file or cannot be written)
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = (
                " (another smsrelay running? choose free ports with --port and "
                "SMSRELAY_BUILTIN_SMSC_PORT / SMSRELAY_BUILTIN_SMSC_CONTROL_PORT)"
            )
        fail(f"could not start: {exc}{hint or disk_full_hint(exc)}")
    except sqlite3.Error as exc:
        fail(f"could not start: the database: {exc}{disk_full_hint(exc)}")
    except SmsRelayError as exc:
        fail(f"could not start: {exc}{disk_full_hint(exc)}")
    except Exception as exc:
        if not is_server_error(exc):
            raise
        fail(f"could not start: the database server refused: {exc}")
    if code:
        ctx.exit(code)


PEM_BEGIN, PEM_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"


def _own_gateway(settings: Settings) -> tuple[str, ssl.SSLContext | None]:
    """The serve these settings describe, and with ``http_tls_cert`` the trust for it: that
    very certificate (pinned, so a self-signed one works and the listen address, perhaps
    0.0.0.0, need not be among its names). Only the file's first certificate, the server's
    own, is trusted: with the whole chain (certbot's fullchain.pem) any certificate its
    intermediate issued, for any name, passed."""
    host = url_host(settings.host, to_connect=True)
    if not settings.http_tls_cert:
        return f"http://{host}:{settings.port}", None
    context = ssl.create_default_context(cadata=_first_certificate(settings.http_tls_cert))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the anchor
    context.check_hostname = False
    return f"https://{host}:{settings.port}", context


def _first_certificate(pem_file: str) -> str:
    try:
        with open(pem_file, encoding="ascii", errors="replace") as pem:
            text = pem.read()
    except OSError as exc:
        fail(f"http_tls_cert: cannot read {pem_file}: {exc.strerror}")
    begin = text.find(PEM_BEGIN)
    end = text.find(PEM_END, begin)
    if begin < 0 or end < 0:
        fail(f"http_tls_cert: no certificate in {pem_file}")
    return text[begin : end + len(PEM_END)]


def _gateway_base(url: str) -> str:
    """http(s)://HOST[:PORT], whether or not the user added the API's /v1 (as SMS Partner's
    documentation writes its base URL) or the whole endpoint, /v1/vn/send (a 404 before)."""
    base = url.rstrip("/").removesuffix("/vn/send").removesuffix("/v1").rstrip("/")
    if not base.startswith(("http://", "https://")) or base.endswith("://"):
        fail(f"--url {url!r}: give the gateway's address, e.g. http://127.0.0.1:8080", code=2)
    return base


@cli.command()
@click.option(
    "--api-key",
    envvar=API_KEY_VARIABLE,
    show_envvar=True,
    help="The account's API key (every local user reads a command line in ps: the "
    "variable keeps it out).",
)
@click.option("--from", "sender", required=True, help="One of the account's numbers.")
@click.option("--to", "to", required=True, help="The recipient, e.g. 0612345678.")
@click.option(
    "--url", default=None, help="The gateway, e.g. http://127.0.0.1:8080 (default: settings)."
)
@click.argument("text")
@click.pass_context
def send(
    ctx: click.Context, api_key: str | None, sender: str, to: str, url: str | None, text: str
) -> None:
    """Send one SMS through a running gateway's HTTP API and print its answer.

    \b
    Example:
      smsrelay send --api-key KEY --from 33757000001 --to 0612345678 "Hello"
      SMSRELAY_API_KEY=KEY smsrelay send --from 33757000001 --to 0612345678 "Hello"
    """
    import aiohttp
    import orjson

    if not api_key:
        fail(
            f"no API key: give --api-key KEY, or set {API_KEY_VARIABLE} (kept out of the "
            "command line that ps shows)",
            code=2,
        )

    settings = settings_from(ctx)
    base, tls = (_gateway_base(url), None) if url else _own_gateway(settings)
    body = {"apiKey": api_key, "from": sender, "to": to, "message": text}

    async def post() -> tuple[int, bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base}/v1/vn/send",
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
                ssl=tls if tls is not None else True,
            ) as resp,
        ):
            return resp.status, await resp.read()

    try:
        status, answer = run(post())
    except aiohttp.ClientConnectorCertificateError as exc:  # it answered: it runs
        if tls is None:  # --url: the system's CAs
            fail(
                f"the gateway at {base} answered with a certificate the system's CAs do not "
                f"trust ({exc.certificate_error}): for a private CA or a self-signed "
                "certificate, SSL_CERT_FILE=its-ca.pem smsrelay send …"
            )
        fail(
            f"the gateway at {base} answered with a certificate other than http_tls_cert's "
            f"({exc.certificate_error}): a renewed certificate not loaded yet? (kill -HUP "
            "serve's pid reloads it)"
        )
    except aiohttp.ClientConnectorError as exc:  # its text shows the TLS context's repr
        reason = exc.os_error.strerror or exc.os_error
        fail(f"could not reach the gateway at {base}: {reason} (is `smsrelay serve` running?)")
    except aiohttp.ClientError as exc:
        fail(f"could not reach the gateway at {base}: {exc} (is `smsrelay serve` running?)")
    click.echo(answer.decode("utf-8", "replace"))
    if status != 200:
        raise SystemExit(1)


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Apply pending schema migrations (serve does this on start).

    \b
    Example:
      smsrelay db upgrade
    """
    settings = settings_from(ctx)

    async def go() -> list[int]:
        store = store_for(settings.resolved_database_url)
        try:
            return await store.open()
        finally:
            await store.close()

    applied = run_or_fail(go())
    click.echo(f"applied migrations: {applied}" if applied else "database is up to date")


@db.command()
@click.argument("target", type=click.Path(dir_okay=False))
@click.pass_context
def backup(ctx: click.Context, target: str) -> None:
    """Copy the SQLite database to TARGET, a new file only this user can read (0600,
    whatever the umask): consistent, and serve may run (PostgreSQL: pg_dump).

    \b
    Example:
      smsrelay db backup /backups/sms-$(date +%F).db
    """
    url = settings_from(ctx).resolved_database_url
    if is_postgres(url):
        fail("db backup copies a SQLite database: back up PostgreSQL with pg_dump", code=2)
    refuse_missing_database(url, creates=False)
    try:
        backup_into(path_from_url(url), target)
    except FileExistsError:
        fail(f"{target} exists: a backup goes to a new file", code=2)
    except OSError as exc:  # its folder missing or not ours to write; a full disk
        fail(f"cannot write {target}: {exc.strerror}{disk_full_hint(exc)}")
    except sqlite3.Error as exc:
        fail(f"could not copy the database: {exc}{disk_full_hint(exc)}")
    click.echo(f"copied the database to {target} (mode 600)")


@db.command()
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=1),
    required=True,
    help="Days of history to keep.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def purge(ctx: click.Context, days: int, as_json: bool) -> None:
    """Delete finished history older than DAYS: final messages (parts, receipts), replies and
    callbacks delivered or given up. Work still to do is never touched; serve may run.

    \b
    Example:
      smsrelay db purge --older-than 90
    """

    async def work(gw: Gateway) -> dict[str, int]:
        cutoff = gw.clock.now() - days * retention.DAY
        return await retention.purge(gw.store, cutoff, _purge_progress, beside_serve=True)

    deleted = with_gateway(ctx, work)
    if as_json:  # camelCase keys, as every other --json ("unmatched receipts" had a space)
        emit({camel_case(kind): n for kind, n in deleted.items()}, True, str)
        return
    click.echo(", ".join(f"{n} {kind} deleted" for kind, n in deleted.items()))


def _purge_progress(kind: str, deleted: int, at_id: int) -> None:
    if sys.stderr.isatty():  # for a person waiting; a cron job's mail carries errors only
        click.echo(f"{kind}: {deleted} deleted so far (at id {at_id})", err=True)


def _seconds_option(flag: str, help_text: str) -> Callable[[FC], FC]:
    """A monitoring threshold: a non-negative number of seconds (not nan: with it the check
    could never fire, and the monitoring would say all is well for ever)."""
    return click.option(
        flag,
        type=click.FloatRange(min=0),
        metavar="SECONDS",
        help=help_text,
        callback=_finite,
    )


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter("a number of seconds")
    return value


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="The same figures as JSON.")
@_seconds_option(
    "--max-overdue",
    "Exit 1 if a connector has a part due for longer than this and not sent, or sending "
    "(claimed, the SMSC's answer not in) for longer than this (monitoring).",
)
@_seconds_option(
    "--max-callback-overdue",
    "Exit 1 if a callback has been due for longer than this and not delivered "
    "(a receiver down; monitoring).",
)
@click.pass_context
def status(
    ctx: click.Context,
    as_json: bool,
    max_overdue: float | None,
    max_callback_overdue: float | None,
) -> None:
    """Show queue depth, parts waiting or unanswered per connector, and callbacks to post.

    \b
    Example:
      smsrelay status --json
      smsrelay status --max-overdue 600 || alert "SMS are not leaving"
      smsrelay status --max-callback-overdue 3600 || alert "callbacks are not delivered"
    """

    async def work(gw: Gateway) -> tuple[dict[str, Any], list[str]]:
        return await _status_report(gw, max_overdue, max_callback_overdue)

    figures, alarms = with_gateway(ctx, work)
    emit(figures, as_json, _status_lines)
    if alarms:
        fail_all(alarms)


async def _status_report(
    gw: Gateway, max_overdue: float | None, max_callback_overdue: float | None
) -> tuple[dict[str, Any], list[str]]:
    """The figures, from the database (serve runs in another process), and what is wrong."""
    now = gw.clock.now()
    overdue = await gw.store.overdue_parts(now)
    sending = await gw.store.sending_parts()
    late_before = None if max_callback_overdue is None else now - max_callback_overdue
    callbacks = await gw.store.callback_backlog(late_before)
    connectors = _connectors(gw)
    figures = {
        # every live state, 0 included (an absent key read as "unknown" to a monitor)
        "parts": {"queued": 0, "sending": 0, "submitted": 0} | await gw.store.queue_depth(),
        "pendingCallbacks": await gw.store.pending_webhooks(),
        "dueNotSent": _per_connector(connectors, overdue, "oldestDueSince"),
        "sending": _per_connector(connectors, sending, "sendingSince"),
        "oldestCallbackDueSince": iso_text(callbacks.oldest_due_since),
        "failedCallbacks": callbacks.failed,
    }
    alarms = _part_alarms(now, max_overdue, overdue, sending)
    serving = _serve_running(gw)
    if serving is not None:
        figures["serveRunning"] = serving
        if not serving and (max_overdue is not None or max_callback_overdue is not None):
            # with serve down nothing is accepted, so nothing is ever overdue: not "all well"
            alarms.append("serve is not running on this database: nothing is sent or accepted")
    disk = _disk_figures(gw)
    if disk is not None:
        figures["disk"] = disk
        if disk["freeMb"] < disk["minFreeMb"]:
            alarms.append(
                f"the database's disk has {disk['freeMb']} MB free, under min_free_mb "
                f"({disk['minFreeMb']}): serve refuses new sends until there is room"
            )
    if max_callback_overdue is not None and callbacks.late:
        alarms.append(
            f"{callbacks.late} callback(s) due for more than {max_callback_overdue:g} s are not "
            "delivered (a receiver down? see smsrelay webhooks list)"
        )
    if max_callback_overdue is not None and callbacks.failed:
        # given up after webhook_give_up_after: no longer "late", and lost until retried
        alarms.append(
            f"{callbacks.failed} callback(s) given up (smsrelay webhooks list --failed; "
            "smsrelay webhooks retry --all posts them again)"
        )
    return figures, alarms


def _per_connector(
    names: list[str], found: Mapping[str, tuple[int, float | None]], since: str
) -> dict[str, dict[str, Any]]:
    """Every connector of the settings, 0 included, as for parts (a monitor's
    .dueNotSent.default.parts was a KeyError on a healthy gateway), then what was found."""
    return {name: {"parts": 0, since: None} for name in names} | {
        name: {"parts": count, since: iso_text(at)} for name, (count, at) in found.items()
    }


def _connectors(gw: Gateway) -> list[str]:
    """The connectors these settings give serve: default, and each [connectors.NAME]."""
    return sorted({"default", *(c.name for c in gw.settings.connectors)})


def _serve_running(gw: Gateway) -> bool | None:
    """Whether a serve process holds this SQLite database (None: PostgreSQL, whose nodes
    a command on one machine cannot see)."""
    url = gw.settings.resolved_database_url
    if is_postgres(url):
        return None
    try:
        return ServeLock(os.path.realpath(path_from_url(url))).is_held()
    except OSError:  # a lock file this user cannot open: unknown, not "down"
        return None


def _disk_figures(gw: Gateway) -> dict[str, int] | None:
    """Free space where a SQLite database lives, against serve's reserve (None: PostgreSQL,
    whose disk is the server's)."""
    url = gw.settings.resolved_database_url
    if is_postgres(url):
        return None
    folder = os.path.dirname(os.path.realpath(path_from_url(url)))
    return {"freeMb": free_bytes(folder) // MIB, "minFreeMb": gw.settings.min_free_mb}


def _part_alarms(
    now: float,
    max_overdue: float | None,
    overdue: dict[str, tuple[int, float]],
    sending: dict[str, tuple[int, float | None]],
) -> list[str]:
    if max_overdue is None:
        return []
    alarms = []
    if late := _waiting_longer(now, max_overdue, overdue):  # a link down: parts stay queued
        alarms.append(
            f"parts due for more than {max_overdue:g} s are not leaving: connector {late}"
        )
    # A link up that does not answer: parts stay claimed, and each retry moves their due time.
    if stuck := _waiting_longer(now, max_overdue, sending):
        alarms.append(
            f"parts sending for more than {max_overdue:g} s are not answered: connector {stuck}"
        )
    return alarms


def _waiting_longer(
    now: float, limit: float, by_connector: Mapping[str, tuple[int, float | None]]
) -> str:
    """The connectors whose oldest part has waited longer than ``limit``, for a message."""
    return ", ".join(
        name
        for name, (_, since) in by_connector.items()
        if since is not None and now - since > limit
    )


def _status_lines(figures: dict[str, Any]) -> str:
    parts = figures["parts"]
    lines = [
        f"parts {state}: {parts.get(state, 0)}" for state in ("queued", "sending", "submitted")
    ]
    lines.append(f"callbacks to post: {figures['pendingCallbacks']}")
    for name, late in figures["dueNotSent"].items():  # a link down shows here
        if not late["parts"]:
            continue
        lines.append(
            f"connector {name}: {late['parts']} part(s) due, not sent, the oldest since "
            f"{late['oldestDueSince']}"
        )
    # Added lines go last: scripts read the ones above.
    for name, busy in figures["sending"].items():  # an SMSC that does not answer shows here
        if not busy["parts"]:
            continue
        since = busy["sendingSince"]
        claimed = f", the oldest claimed at {since}" if since else ""
        lines.append(f"connector {name}: {busy['parts']} part(s) sending{claimed}")
    if figures["oldestCallbackDueSince"]:
        lines.append(
            f"the oldest callback to post has been due since {figures['oldestCallbackDueSince']}"
        )
    lines.append(f"callbacks given up: {figures['failedCallbacks']}")
    if "disk" in figures:
        disk = figures["disk"]
        lines.append(f"disk: {disk['freeMb']} MB free (sends refused under {disk['minFreeMb']})")
    if "serveRunning" in figures:
        lines.append(f"serve: {'running' if figures['serveRunning'] else 'not running'}")
    return "\n".join(lines)


cli.add_command(accounts)
cli.add_command(numbers)
cli.add_command(messages)
cli.add_command(webhooks)
cli.add_command(stop)


def _mount_simulator() -> None:
    from smsrelay.carrier.simulator_cli import smsc

    cli.add_command(smsc)


_mount_simulator()


def main() -> None:
    cli(prog_name="smsrelay")
