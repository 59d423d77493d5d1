"""Shared plumbing for CLI commands: settings from the group, an open store, output."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import sqlite3
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import click
import orjson

from smsrelay.errors import DomainError, SmsRelayError
from smsrelay.service.database_time import measured_clock
from smsrelay.service.gateway import Gateway, build_gateway
from smsrelay.settings import Settings, SettingsError, load_settings, unknown_variables
from smsrelay.store.engine import path_from_url
from smsrelay.store.factory import holds_smsrelay, is_postgres, store_for
from smsrelay.webhooks.payloads import BUILDERS

T = TypeVar("T")


def settings_from(ctx: click.Context, **extra: Any) -> Settings:
    """The settings every command reads, as serve does: a misspelt ``SMSRELAY_*`` variable
    is said first (it may explain what follows: another database read without a word)."""
    root = ctx.find_root()
    hide_passwords_of(
        os.environ.get("SMSRELAY_DATABASE_URL"),
        os.environ.get("SMSRELAY_SMSC"),
        *(str(value) for value in (root.obj or {}).values() if value),
        *(str(value) for value in extra.values() if value),
    )
    if not root.meta.get("smsrelay.variables_said"):
        root.meta["smsrelay.variables_said"] = True
        for variable in unknown_variables(os.environ):
            click.echo(f"warning: {variable} is not a setting: ignored", err=True)
    flags = dict(root.obj or {})
    flags.update({k: v for k, v in extra.items() if v is not None})
    try:
        settings = load_settings(flags)
    except SettingsError as exc:
        fail(str(exc), code=2)
    hide_passwords_of(
        settings.resolved_database_url, settings.smsc, *(c.url for c in settings.connectors)
    )
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(coro)


def refuse_missing_database(url: str, creates: bool) -> None:
    """Only ``creates`` commands make a database (and say so); the others stop, naming it.
    On PostgreSQL the database is made by its administrator and the tables by us: pointed
    at the wrong one (even ``postgres``), a command made our tables there and reported all
    well, and a monitoring job watched an empty gateway."""
    if is_postgres(url):
        shown = redacted(url)
        found = _holds_smsrelay(url, shown)
        missing = (
            f"no smsrelay tables in {shown}: check --database (SMSRELAY_DATABASE_URL), or "
            "run `smsrelay db upgrade` once to make them"
        )
        making = f"creating smsrelay's tables in {shown}"
    else:
        path = Path(path_from_url(url)).resolve()
        found = _sqlite_file_found(path)
        _refuse_unwritable(path, found)
        missing = (
            f"no smsrelay database at {path}: run this where serve runs, or pass "
            "--data-dir (SMSRELAY_DATA_DIR) or --database (SMSRELAY_DATABASE_URL)"
        )
        making = f"creating a new database at {path}"
    if found:
        return
    if not creates:
        fail(missing, code=2)
    click.echo(f"note: {making}", err=True)


def _sqlite_file_found(path: Path) -> bool:
    """Whether the database file is there; a folder on its way that is a file, or that this
    user may not look into (serve's data folder is 0700), is one error line, not a
    traceback."""
    try:
        if any(folder.exists() and not folder.is_dir() for folder in path.parents):
            fail(f"cannot use the database: {path.parent} is not a folder")  # not "creating"
        return path.exists()
    except PermissionError:
        fail(
            f"cannot use the database: {path.parent} cannot be read by {_user_name()} "
            "(serve's data folder is its user's only: run this as serve's user)"
        )


def _refuse_unwritable(path: Path, found: bool) -> None:
    """Said before anything is tried: SQLite's own words ("unable to open database file",
    "attempt to write a readonly database") do not say it is the folder's or the file's
    permissions, and a create said "creating a new database" first."""
    user = _user_name()
    if not found:
        folder = next(folder for folder in path.parents if folder.exists())
        if not os.access(folder, os.W_OK | os.X_OK):
            fail(f"cannot use the database: {folder} cannot be written by {user}")
        return
    side_files = [path.with_name(path.name + end) for end in ("-wal", "-shm")]
    needed = [path, *side_files] if all(f.exists() for f in side_files) else [path, path.parent]
    for needed_path in needed:  # the database, and its -wal/-shm (or the folder to make them)
        if not os.access(needed_path, os.W_OK):
            fail(
                f"cannot use the database: {needed_path} cannot be written by {user} (every "
                "command opens the database for writing, as serve does: run it as serve's user)"
            )


def _user_name() -> str:
    """This process's own user (not $USER, which sudo or setpriv may leave as another's)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _holds_smsrelay(url: str, shown: str) -> bool:
    try:
        return holds_smsrelay(url)
    except Exception as exc:  # cannot connect: the command's own error, as opening would give
        fail(f"cannot use the database {shown}: {exc}")


# query parameters that carry a secret: libpq's password, and a receiver's token or key
_SECRET_PARAMS = ("password", "token", "apikey", "api_key", "key", "secret", "signature", "auth")


def redacted(url: str) -> str:
    """``url`` without its password (in the address) or a secret in its query (libpq's
    ``?password=``, a callback receiver's ``?token=``)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join(_redacted_pair(pair) for pair in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


def _redacted_pair(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}=***" if equals and name.lower() in _SECRET_PARAMS else pair


def with_gateway(
    ctx: click.Context, work: Callable[[Gateway], Awaitable[T]], *, creates: bool = False
) -> T:
    """Open the configured database, run ``work``, close; errors -> exit 1. Only a new
    database is given its schema: an older one is left to ``db upgrade`` (see schema).

    A command run from the wrong folder must not quietly work on a new, empty database:
    only ``creates`` commands make one (and say so); the others stop, naming the path.
    """
    settings = settings_from(ctx)
    url = settings.resolved_database_url
    refuse_missing_database(url, creates)

    async def main() -> T:
        store = store_for(url)
        await store.open(only_new=True)
        try:
            return await work(build_gateway(settings, store, BUILDERS, await measured_clock(store)))
        finally:
            await store.close()

    return run_or_fail(main())


TYPED_WRONG = frozenset({"number.invalid", "number.required", "account.name", "account.region"})


def run_or_fail(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's work; what goes wrong is one ``error:`` line and exit 1."""
    try:
        return run(work)
    except DomainError as exc:
        # what was typed cannot be one (a phone number, a name): a usage error, as the
        # README promises, not a refusal by the gateway (exit 1)
        fail(exc.message, code=2 if exc.code in TYPED_WRONG else 1)
    except SmsRelayError as exc:
        fail(str(exc))
    except (OSError, sqlite3.Error) as exc:  # a data dir that is a file, unwritable, read-only
        fail(f"cannot use the database: {exc}{disk_full_hint(exc)}")
    except Exception as exc:
        if not is_server_error(exc):
            raise
        fail(f"the database server refused: {exc}")


def is_server_error(exc: BaseException) -> bool:
    """PostgreSQL's own refusal (no such role, no right to make tables, ...): its message is
    the answer, not a traceback. psycopg is only imported on PostgreSQL, so it is named."""
    return type(exc).__module__.split(".", 1)[0] == "psycopg"


def disk_full_hint(exc: BaseException) -> str:
    """SQLite says "disk I/O error" when it cannot grow its -shm file on a full disk."""
    name = getattr(exc, "sqlite_errorname", "")
    # (a commit the engine refused at the start carries SQLite's words, not its error code)
    full = name in {"SQLITE_FULL", "SQLITE_IOERR_SHMSIZE"} or "database or disk is full" in str(exc)
    if full or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        return " (the disk holding the database is full: free some space)"
    return ""


def fail(message: str, code: int = 1) -> NoReturn:
    fail_all([message], code)


def fail_all(messages: list[str], code: int = 1) -> NoReturn:
    """Every problem on its own line (monitoring shows the first, a person reads them all),
    with no password of the settings' URLs in it (a driver quotes the token it could not
    read; a URL it cannot parse is named whole): these lines go to journals and cron mail."""
    for message in messages:
        click.echo(f"error: {without_passwords(message)}", err=True)
    sys.exit(code)


_PASSWORDS: set[str] = set()  # the settings' URL passwords, as written and decoded
_URL_PASSWORD = re.compile(r"://[^/@:\s]*:([^@\s]+)@")


def hide_passwords_of(*texts: str | None) -> None:
    """Remember the passwords in these URLs (and, cut at a '#' or '?' that a parser would
    take for the URL's end, their pieces) so that no error line shows them."""
    for text in texts:
        for password in _URL_PASSWORD.findall(text or ""):
            for whole in (password, unquote(password)):
                _PASSWORDS.add(whole)
                _PASSWORDS.update(piece for piece in re.split(r"[#?/]", whole) if len(piece) >= 3)


def without_passwords(text: str) -> str:
    """Each password where an error line can show it: in a URL's userinfo, or quoted (a
    driver's "invalid token" or a parser's "as 's3c'"). Not anywhere: a password such as
    "postgres" would turn "postgresql://" into "***ql://"."""
    for password in sorted(_PASSWORDS, key=len, reverse=True):
        for shown in (f":{password}@", f'"{password}"', f"'{password}'"):
            text = text.replace(shown, shown.replace(password, "***"))
    return text


def emit(value: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(orjson.dumps(_plain(value), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(human(value))


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def camel_case(words: str) -> str:
    """``unmatched receipts`` or ``reply_url`` as every --json key is written."""
    first, *rest = re.split(r"[ _]", words)
    return first + "".join(word.capitalize() for word in rest)


def plural(count: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


class AccountName(click.ParamType[str]):
    """An account's name as typed, in Unicode's composed form (NFC): ``café`` typed with a
    combining accent was another account that looked the same in every list."""

    name = "account"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return unicodedata.normalize("NFC", str(value))


ACCOUNT_NAME = AccountName()
