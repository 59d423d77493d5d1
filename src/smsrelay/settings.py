"""One frozen, typed settings object: flag > SMSRELAY_* environment > TOML file > default.

Every field can be set in the TOML file (``--config`` / ``SMSRELAY_CONFIG`` / ``./smsrelay.toml``)
and, for scalar fields, from the environment as ``SMSRELAY_<FIELD>`` upper-cased. Unknown keys
in the file are errors: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from smsrelay.domain.ip_access import Network, parse_networks, split_list
from smsrelay.domain.pricing import PriceTable, eur_to_micros
from smsrelay.errors import SmsRelayError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEMO_KEY = re.compile(r"[A-Za-z0-9_-]{16,128}")
ENV_PREFIX = "SMSRELAY_"
API_KEY_VARIABLE = "SMSRELAY_API_KEY"  # `smsrelay send`'s key: a command's, not serve's
COMMAND_VARIABLES = (API_KEY_VARIABLE,)  # read by one command, so no misspelt setting
DEFAULT_CONNECTOR = "default"
BUILTIN_SMSC = "builtin"  # smsc = "builtin": the built-in simulator, asked for by name
POSTGRES_SCHEMES = ("postgresql://", "postgres://")  # database_url of a shared database
MAX_DISPATCH_BATCH = 1000  # a claim never takes more than the 1,000 parts a connector holds


class SettingsError(SmsRelayError):
    """The configuration is invalid; the message says which key and why."""


@dataclass(frozen=True)
class ConnectorSettings:
    """One named SMPP link, from a ``[connectors.NAME]`` table."""

    name: str
    url: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./data"
    database_url: str | None = None
    config: str | None = None
    # Default connector: None = start the built-in SMSC simulator in-process.
    smsc: str | None = None
    builtin_smsc_port: int = 2775
    builtin_smsc_control_port: int = 2776
    builtin_delivery_rate: float = 1.0
    builtin_receipt_delay_ms: int = 0
    allow_private_webhooks: bool | None = None
    stop_mention: str = "STOP au 36180"
    stop_keywords: tuple[str, ...] = (
        "STOP",
        "STOP SMS",
        "STOPSMS",
        "ARRET",
        "ARRÊT",
        "UNSUBSCRIBE",
    )
    # The demo account (made on an empty database, its key printed); unset: with the built-in
    # SMSC only (on a real one, a printed key with credit would send real SMS)
    demo: bool | None = None
    demo_credit_eur: str = "100"
    # Quiet hours of the demo account made on first start (a CI stand-in may want them off).
    demo_quiet_hours: bool = True
    # The demo account's API key, instead of a random one (a CI job that already holds one)
    demo_api_key: str | None = None
    prices: Mapping[str, str] = field(default_factory=dict)
    connectors: tuple[ConnectorSettings, ...] = ()
    dispatch_batch: int = 500
    submit_attempts: int = 5
    lease_seconds: float = 60.0
    # Finished history (messages, replies, callbacks) older than this many days is deleted by
    # serve every hour; 0 keeps everything (then `smsrelay db purge` does it by hand).
    retention_days: int = 0
    # SQLite: below this much free space on the database's disk new sends are refused (503),
    # so what has already happened (the SMSC's answers, receipts, replies, callback attempts)
    # can still be stored; 0 keeps no reserve.
    min_free_mb: int = 100
    webhook_timeout: float = 10.0
    webhook_first_retry: float = 1.0
    webhook_max_backoff: float = 600.0
    webhook_give_up_after: float = 86400.0
    webhook_concurrency_per_host: int = 16
    # HTTP connections open at once; more get a 503 at once. 0: the open-file limit (raised to
    # its hard ceiling at start) less a reserve for the database, SMPP links and callbacks.
    http_max_connections: int = 0
    # PEM certificate chain (and its key, unless in the same file): the API serves https.
    http_tls_cert: str | None = None
    http_tls_key: str | None = None
    # GET /metrics answers "Authorization: Bearer TOKEN"; without a token, only a gateway
    # on the built-in SMSC (a stand-in for development and CI) answers it, to anyone
    metrics_token: str | None = None
    # Reverse proxies (addresses, CIDR networks) whose X-Forwarded-For names the client, for
    # the accounts that restrict their key to addresses; empty: the header is never believed
    trusted_proxies: tuple[Network, ...] = ()
    # A PEM file of CAs trusted for https callbacks besides the system's (internal receivers).
    webhook_tls_ca: str | None = None
    # Test-only: "2026-03-01T15:00:00+01:00" freezes the clock and enables POST /_test/clock.
    fixed_clock: str | None = None
    log_level: str = "INFO"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        # "~/sms" from a unit file or TOML made a folder named "~" where serve ran
        return f"sqlite:///{Path(self.data_dir).expanduser() / 'smsrelay.db'}"

    @property
    def smsc_url(self) -> str | None:
        """The default connector's URL given as ``smsc``; None: the built-in SMSC, or a
        ``[connectors.default]`` table."""
        return None if self.smsc in (None, BUILTIN_SMSC) else self.smsc

    @property
    def uses_builtin_smsc(self) -> bool:
        if any(c.name == DEFAULT_CONNECTOR for c in self.connectors):
            return False  # [connectors.default] is the default connector, a real SMSC
        return self.smsc_url is None

    @property
    def is_stand_in(self) -> bool:
        """Every connector is the built-in simulator: a development or CI gateway, with
        nothing real to show or protect (a real connector beside it makes it a real one)."""
        return self.uses_builtin_smsc and not self.connectors

    @property
    def makes_demo(self) -> bool:
        return self.is_stand_in if self.demo is None else self.demo

    @property
    def private_webhooks_allowed(self) -> bool:
        if self.allow_private_webhooks is None:
            return self.is_stand_in
        return self.allow_private_webhooks


_FIELDS = {f.name: f for f in fields(Settings)}


def load_settings(
    flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Merge the layers; flags whose value is None are treated as not given."""
    env = os.environ if env is None else env
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    from_env = _read_env(env)
    config_path = given.get("config") or from_env.get("config") or _default_config_path()
    from_file = _read_toml(config_path) if config_path else {}
    merged: dict[str, Any] = {**from_file, **from_env, **given}
    if config_path:
        merged["config"] = str(config_path)
    return _build(merged)


def _default_config_path() -> str | None:
    return "smsrelay.toml" if Path("smsrelay.toml").is_file() else None


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            if name in _TABLES:
                raise SettingsError(
                    f"{ENV_PREFIX}{name.upper()}: {name} is a table of the settings file "
                    f"([{name}...]), not a variable"
                )
            values[name] = raw
    return values


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """``SMSRELAY_*`` variables that name no setting, each said with the setting it most
    likely meant: a misspelt one is otherwise ignored without a word."""
    said = []
    for variable in sorted(v for v in env if v.startswith(ENV_PREFIX)):
        if variable in COMMAND_VARIABLES:
            continue
        name = variable.removeprefix(ENV_PREFIX).lower()
        if variable != ENV_PREFIX + name.upper() or name not in _FIELDS:  # read as written
            guess = difflib.get_close_matches(name, _FIELDS, n=1, cutoff=0.75)
            meant = f" (did you mean {ENV_PREFIX}{guess[0].upper()}?)" if guess else ""
            said.append(variable + meant)
    return said


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise SettingsError(f"config file not found: {path}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:  # a folder, no permission
        raise SettingsError(f"config file {path} cannot be read: {exc.strerror}") from exc
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise SettingsError(f"unknown key(s) in {path}: {', '.join(unknown)}")
    for name, raw in data.items():
        _refuse_quoted_numbers(name, raw)
    return data


def _refuse_quoted_numbers(name: str, raw: Any) -> None:
    """In the file, a number or a flag is written as one: ``port = "8080"`` is a mistake that
    the environment's text (``SMSRELAY_PORT=8080``) is not."""
    default = _FIELDS[name].default
    if name in _UNSET_OR_BOOLEAN:  # a flag whose default (None: decided) is not one
        default = False
    if isinstance(raw, str) and isinstance(default, bool | int | float):
        expected = "true or false" if isinstance(default, bool) else "a number"
        raise SettingsError(
            f"invalid value for {name}: {raw!r} is text, {expected} is expected "
            "(write it without quotes)"
        )


def _build(values: Mapping[str, Any]) -> Settings:
    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in _FIELDS:
            raise SettingsError(f"unknown setting: {name}")
        kwargs[name] = _coerce(name, raw)
    settings = Settings(**kwargs)
    _validate(settings)
    return settings


_UNSET_OR_BOOLEAN = ("allow_private_webhooks", "demo")  # None: decided by the SMSC in use
_TABLES = ("prices", "connectors")  # TOML tables, not one value a variable could hold


def _coerce(name: str, raw: Any) -> Any:
    default = _FIELDS[name].default
    try:
        if name == "connectors":
            return _connectors(raw)
        if name == "prices":
            return _prices(dict(raw))
        if name == "stop_keywords":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(k).strip().upper() for k in items if str(k).strip())
        if name == "trusted_proxies":
            return parse_networks(_text_list(raw))
        if name in _UNSET_OR_BOOLEAN:
            return _boolean(raw)
        if isinstance(default, bool):
            return _boolean(raw)
        _refuse_other_types(raw, default)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return None if raw is None else str(raw)
    except (TypeError, ValueError) as exc:
        shown = str(raw).lower() if isinstance(raw, bool) else repr(raw)  # as TOML writes it
        raise SettingsError(f"invalid value for {name}: {shown} ({exc})") from exc


def _text_list(raw: Any) -> list[str]:
    """A comma-separated text (a variable), or a TOML list of texts."""
    if isinstance(raw, str):
        return split_list(raw)
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise TypeError('a list of texts expected, e.g. ["10.0.0.0/8", "192.0.2.1"]')
    return raw


def _prices(raw: dict[Any, Any]) -> dict[str, str]:
    prices = {str(k).upper(): str(v) for k, v in raw.items()}
    if len(prices) < len(raw):  # FR and fr: one would silently win
        raise ValueError("a region is priced twice (codes are read in upper case)")
    return prices


def _refuse_other_types(raw: Any, default: Any) -> None:
    """A TOML value of another type is a mistake, not something to convert: ``port = true``
    became port 1, ``port = 0.9`` port 0, ``host = ["a"]`` the host "['a']". (Environment
    values are text, read as their setting's type.)"""
    if raw is None or isinstance(raw, str):
        return
    number = isinstance(raw, int | float) and not isinstance(raw, bool)
    if isinstance(default, float):
        fits = number
    elif isinstance(default, int):
        fits = number and isinstance(raw, int)
    else:  # a text setting: a number (demo_credit_eur = 100) or a TOML date is its text too
        fits = number or isinstance(raw, datetime)
    if not fits:
        expected = type(default).__name__ if isinstance(default, int | float) else "text"
        raise ValueError(f"{expected} expected")


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _connectors(raw: Any) -> tuple[ConnectorSettings, ...]:
    if not isinstance(raw, Mapping):
        raise ValueError("[connectors] must be a table of named connectors")
    result = []
    for name, table in raw.items():
        if not isinstance(table, Mapping) or "url" not in table:
            raise ValueError(f"connector {name!r} needs a url = 'smpp://...'")
        options = {k: v for k, v in table.items() if k != "url"}
        result.append(ConnectorSettings(name=str(name), url=str(table["url"]), options=options))
    return tuple(result)


def _validate(settings: Settings) -> None:
    if not 0 <= settings.port <= 65535:
        raise SettingsError(f"port must be 0-65535, got {settings.port}")
    url = settings.resolved_database_url
    if not url.startswith(("sqlite:///", *POSTGRES_SCHEMES)):
        raise SettingsError(
            f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    if settings.retention_days < 0:
        raise SettingsError("retention_days must be 0 (keep everything) or a number of days")
    if settings.http_max_connections < 0:
        raise SettingsError(
            "http_max_connections must be 0 (from the open-file limit) or a number of connections"
        )
    if not 1 <= settings.dispatch_batch <= MAX_DISPATCH_BATCH:
        raise SettingsError(f"dispatch_batch must be 1 to {MAX_DISPATCH_BATCH}")
    if settings.submit_attempts < 1:
        raise SettingsError("submit_attempts must be at least 1")
    if settings.smsc_url is not None and not settings.smsc_url.startswith(("smpp://", "smpps://")):
        raise SettingsError("smsc must be smpp://ID:PASSWORD@HOST:PORT or smpps://...")
    _validate_files(settings)
    if url.startswith(POSTGRES_SCHEMES):
        try:
            urlsplit(url).port  # noqa: B018 - reading it checks the host and port
        except ValueError as exc:
            raise SettingsError(f"database URL {url!r} cannot be read: {exc}") from exc
    if url == "sqlite:///":
        raise SettingsError("sqlite:/// needs a path (sqlite:////srv/sms.db: four slashes)")
    if url == "sqlite:///:memory:":  # each connection had its own, empty database: no tables
        raise SettingsError(
            "sqlite:///:memory: cannot be served (each of its connections would see its own, "
            'empty database); for a throwaway one use a fresh data dir: --data-dir "$(mktemp -d)"'
        )
    _validate_values(settings)


def _validate_files(settings: Settings) -> None:
    if settings.http_tls_key and not settings.http_tls_cert:
        raise SettingsError("http_tls_key needs http_tls_cert (the certificate it goes with)")
    for name in ("webhook_tls_ca", "http_tls_cert", "http_tls_key"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            raise SettingsError(f"{name}: no such file: {path}")


def _validate_values(settings: Settings) -> None:
    """Values that parse but would fail later, in serve, as a traceback, or quietly switch
    something off."""
    if settings.log_level.upper() not in LOG_LEVELS:
        raise SettingsError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    if settings.fixed_clock is not None:
        try:
            if datetime.fromisoformat(settings.fixed_clock).utcoffset() is None:
                raise ValueError("it needs a UTC offset, e.g. +01:00")
        except ValueError as exc:
            raise SettingsError(f"fixed_clock is not an ISO time: {exc}") from exc
    if not settings.host.strip():
        raise SettingsError("host is empty: give an address (0.0.0.0 for every interface)")
    if not settings.stop_keywords:
        raise SettingsError("stop_keywords is empty: a STOP reply would stop nothing")
    _validate_connectors(settings)
    _validate_numbers(settings)
    try:
        if eur_to_micros(settings.demo_credit_eur) < 0:
            raise ValueError("negative")
    except ValueError as exc:
        amount = settings.demo_credit_eur
        raise SettingsError(f"demo_credit_eur is not an amount in EUR: {amount!r} ({exc})") from exc
    key = settings.demo_api_key
    if key is not None and not DEMO_KEY.fullmatch(key):
        raise SettingsError(
            "demo_api_key must be 16 to 128 letters, digits, '-' or '_' (a key a client "
            "sends in a form or a query string as it is)"
        )
    try:  # the table serve builds from them, built once here to say what is wrong first
        PriceTable.from_eur(settings.prices or {})
    except ValueError as exc:
        raise SettingsError(f"prices: {exc}") from exc
    if settings.min_free_mb < 0:
        raise SettingsError("min_free_mb must be 0 or more")


def _validate_connectors(settings: Settings) -> None:
    named = [c.name for c in settings.connectors]
    if any(not name.strip() for name in named):
        raise SettingsError("a [connectors.NAME] needs a name")
    if DEFAULT_CONNECTOR in named and settings.smsc is not None:
        raise SettingsError(
            "smsc and [connectors.default] both set the default connector: keep one"
        )


# (setting, its least value, whether that value itself is allowed): finite numbers only
_NUMBER_RANGES = (
    ("lease_seconds", 0.0, False),
    ("webhook_timeout", 0.0, False),
    ("webhook_first_retry", 0.0, False),
    ("webhook_max_backoff", 0.0, False),
    ("webhook_give_up_after", 0.0, False),
    ("webhook_concurrency_per_host", 1, True),
    ("builtin_receipt_delay_ms", 0, True),
)


def _validate_numbers(settings: Settings) -> None:
    if not 0.0 <= settings.builtin_delivery_rate <= 1.0:
        raise SettingsError("builtin_delivery_rate must be between 0 and 1")
    for name, least, allowed in _NUMBER_RANGES:
        value = getattr(settings, name)
        if not math.isfinite(value) or value < least or (value == least and not allowed):
            bound = f"at least {least}" if allowed else f"more than {least}"
            raise SettingsError(f"{name} must be a number {bound}, got {value}")
    if settings.webhook_max_backoff < settings.webhook_first_retry:
        raise SettingsError("webhook_max_backoff must be at least webhook_first_retry")
    for name in ("builtin_smsc_port", "builtin_smsc_control_port"):
        if not 0 <= getattr(settings, name) <= 65535:
            raise SettingsError(f"{name} must be 0-65535, got {getattr(settings, name)}")


def url_host(host: str, *, to_connect: bool = False) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets (``http://:::8080`` reached
    nothing). ``to_connect``: the wildcard addresses, which a client cannot reach as such,
    become loopback (what ``smsrelay send`` reaches its own serve on)."""
    if to_connect and host in ("::", "0.0.0.0"):
        host = "::1" if host == "::" else "127.0.0.1"
    return f"[{host}]" if ":" in host else host
