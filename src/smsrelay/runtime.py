"""The composition root: builds and runs every part of ``smsrelay serve``."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import stat
import sys
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from smsrelay.api.app import api_server
from smsrelay.api.certificate import api_tls_context, certificate_fields, reload_certificate
from smsrelay.api.http_server import HttpServer
from smsrelay.api.open_files import connection_cap, raise_open_file_limit
from smsrelay.carrier.connector import Connector
from smsrelay.carrier.simulator import Simulator, SimulatorOptions
from smsrelay.carrier.smpp_client import SmppConnector, SmppLinkConfig, client_tls
from smsrelay.dispatch.dispatcher import STOP_GRACE, Dispatcher, DispatchPolicy
from smsrelay.dispatch.inbound import InboundRouter
from smsrelay.domain.backoff import BackoffPolicy
from smsrelay.domain.quiet_hours import calendar_years
from smsrelay.logs import configure as configure_logging
from smsrelay.service.accounts import DEFAULT_CONNECTOR, ensure_demo
from smsrelay.service.alphabets import SenderAlphabets
from smsrelay.service.clock_watch import ClockWatch
from smsrelay.service.database_time import ClockKeeper, DatabaseClockSource, DatabaseTimeClock
from smsrelay.service.dates import iso_text
from smsrelay.service.gateway import Gateway, build_gateway
from smsrelay.service.retention import RetentionSweeper
from smsrelay.service.sending import held_until
from smsrelay.settings import BUILTIN_SMSC, Settings, SettingsError, url_host
from smsrelay.store.engine import SERVING_BUSY_TIMEOUT_MS
from smsrelay.store.factory import store_for
from smsrelay.store.lock import ServeLock
from smsrelay.store.private_files import readable_by_others, readable_warning
from smsrelay.store.records import Account
from smsrelay.store.sql_store import SqlStore
from smsrelay.store.sqlite_store import SqliteStore
from smsrelay.tls_files import warn_if_expiring, warn_if_readable_by_others
from smsrelay.webhooks.http_client import tls_context
from smsrelay.webhooks.payloads import BUILDERS
from smsrelay.webhooks.sender import WebhookSender

BUILTIN_SYSTEM_ID = "smsrelay"
BUILTIN_PASSWORD = "smsrelay"
log = logging.getLogger("smsrelay")


@dataclass
class Running:
    """Everything ``serve`` started, in start order (stopped in reverse)."""

    gateway: Gateway
    http_port: int
    simulator: Simulator | None
    connectors: dict[str, Connector]
    dispatcher: Dispatcher
    http: HttpServer
    services: list[Any] = field(default_factory=list)
    lock: ServeLock | None = None
    store_broken: asyncio.Event = field(default_factory=asyncio.Event)
    clock_keeper: ClockKeeper | None = None  # on a shared database: its time, kept


async def start(settings: Settings, say: Callable[[str], None]) -> Running:
    """Start everything; what can fail (files, ports) is done before anything is sent, and a
    failure stops what had started, so a supervisor restarting a failing serve re-sends
    nothing."""
    calendar_years()  # the holiday calendar's import, here rather than in the first send
    callback_tls = _callback_tls(settings)  # a bad CA file stops here, before anything runs
    api_tls = api_tls_context(settings.http_tls_cert, settings.http_tls_key)
    links = _link_configs(settings)  # so does a bad connector option, before the API listens
    store = store_for(
        settings.resolved_database_url,
        busy_timeout_ms=SERVING_BUSY_TIMEOUT_MS,
        min_free_mb=settings.min_free_mb,
    )
    # SQLite: one serving process per file. PostgreSQL: any number of nodes share the queue.
    lock = ServeLock(store.db.path) if isinstance(store, SqliteStore) else None
    if lock is not None:
        _say_if_new(store.db.path, say)
        _say_if_readable_by_others(store.db.path, say)
        lock.acquire()
    started: list[tuple[str, Callable[[], Awaitable[Any]]]] = [("database", store.close)]
    try:
        await store.open()
        await _check_smsc_history(settings, store, links)
        tls = _Tls(callback_tls, api_tls)
        return await _start_services_in_order(settings, say, store, tls, links, lock, started)
    except BaseException:
        for step, stop_step in reversed(started):
            await _bounded(step, stop_step(), 10)
        if lock is not None:
            lock.release()
        raise


async def _start_services_in_order(
    settings: Settings,
    say: Callable[[str], None],
    store: SqlStore,
    tls: _Tls,
    links: dict[str, SmppLinkConfig],
    lock: ServeLock | None,
    started: list[tuple[str, Callable[[], Awaitable[Any]]]],
) -> Running:
    keeper = await _clock_keeper(settings, store, started)
    gateway = build_gateway(settings, store, BUILDERS, keeper.clock if keeper else None)
    gateway.store_trouble = store.db.health.trouble
    await _run_data_steps(store, gateway.clock.now(), say)
    fresh = not await store.list_accounts()  # the demo settings shape what is made now
    demo = (
        await ensure_demo(
            store,
            settings.demo_credit_eur,
            gateway.clock,
            quiet_hours=settings.demo_quiet_hours,
            api_key=settings.demo_api_key,
        )
        if settings.makes_demo
        else None
    )
    if demo is not None and not fresh:
        _say_demo_settings_ignored(settings, demo, say)
    simulator = await _start_simulator(settings, say)
    if simulator is not None:
        started.append(("simulator", simulator.stop))
    gateway.alphabets = _narrow_alphabets(store, links)
    http, port = await _start_http(gateway, settings, tls.api)  # a port in use fails here
    started.append(("http", http.close))
    inbound = InboundRouter(store, gateway.clock, BUILDERS, settings.stop_keywords)
    connectors = _build_connectors(links, simulator, inbound, store.db.health.write_refusal)
    await _say_unrouted_numbers(store, connectors.keys(), say)
    for name, connector in connectors.items():
        await connector.start()
        started.append((f"connector {name}", connector.stop))
    gateway.smsc_binds = lambda: {name: c.binds() for name, c in connectors.items()}
    gateway.links_lost = lambda: {
        (name, session, how): count
        for name, c in connectors.items()
        for (session, how), count in c.links_lost().items()
    }
    gateway.receipts_received = lambda: inbound.receipts_received
    gateway.replies_received = lambda: inbound.replies_received
    # Sole: serve holds the SQLite file's lock, so what an earlier process leased is released
    # at once; PostgreSQL's other nodes hold live leases, which only run out if they die.
    sole = lock is not None
    services = await _start_services(gateway, inbound, tls.callbacks, sole=sole)
    started.extend((type(service).__name__, service.stop) for service in services)
    if demo is not None and demo.demo_key and not demo.disabled:  # a disabled key: no use
        numbers = await store.numbers_of(demo.id)
        number = numbers[0].msisdn.removeprefix("+") if numbers else "(none)"
        say(f"demo account: apiKey={demo.demo_key} number={number}")
        _say_if_held(say, demo, gateway.clock.now())
    # Last: once it runs, parts leave; whatever could still fail (a database write locked by
    # a CLI command) has failed before, so a supervisor's restarts re-send nothing.
    dispatcher = Dispatcher(store, gateway.clock, connectors, BUILDERS, _policy(settings))
    await dispatcher.start(sole_dispatcher=sole)
    started.append(("dispatcher", dispatcher.stop))
    gateway.wake_dispatcher = dispatcher.wake
    gateway.submit_outcomes = lambda: dict(dispatcher.outcomes)
    scheme = "https" if tls.api else "http"
    say(f"smsrelay: listening on {scheme}://{url_host(settings.host)}:{port}")
    return Running(
        gateway,
        port,
        simulator,
        connectors,
        dispatcher,
        http,
        services,
        lock,
        store.db.broken,
        keeper,
    )


def _say_if_held(say: Callable[[str], None], demo: Account, now: float) -> None:
    """A first message sent at night or on a Sunday waits: say so before anyone wonders.
    Only a hint: a clock the holiday calendar refuses (outside 1803-2100) says nothing here
    and does not stop serve (each send answers that refusal, as it did before this line)."""
    try:
        held = held_until(now, demo)
    except ValueError:
        return
    if held is not None:
        say(
            f"quiet hours: the demo account's messages sent now leave at {iso_text(held)} "
            "(smsrelay accounts set demo --quiet-hours off: at once)"
        )


async def stop(running: Running) -> None:
    """Stop in reverse order; each step is bounded so a stuck peer cannot hold shutdown.

    The dispatcher stops claiming first, the connectors then wait for the SMSC's answers to
    what is out (and unbind), and the dispatcher stores those outcomes before the database
    closes: a part the SMSC took is not sent again after the restart.
    """
    began = asyncio.get_running_loop().time()
    await _bounded("http", running.http.close(), 10)
    for service in reversed(running.services):
        await _bounded(type(service).__name__, service.stop(), 10)
    await _bounded("dispatcher claims", running.dispatcher.stop_claiming(), 5)
    await asyncio.gather(
        *(
            _bounded(f"connector {name}", connector.stop(), CONNECTOR_STOP_S)
            for name, connector in running.connectors.items()
        )
    )
    elapsed = asyncio.get_running_loop().time() - began
    grace = dispatcher_grace(elapsed, broken=running.store_broken.is_set())
    await _bounded("dispatcher", running.dispatcher.stop(grace), grace + 1)
    if running.simulator is not None:
        await _bounded("simulator", running.simulator.stop(), 5)
    if running.clock_keeper is not None:  # it reads the database: before that closes
        await _bounded("clock keeper", running.clock_keeper.stop(), 5)
    await running.gateway.store.close()
    if running.lock is not None:
        running.lock.release()


def dispatcher_grace(elapsed: float, *, broken: bool) -> float:
    """How long the stopping dispatcher waits for the SMSC's answers to be stored: what is
    left of STOP_BUDGET (at least STOP_GRACE). Only a store that refuses writes makes it wait
    that long, and each second it waits is one more for a database that is restarting (the
    PostgreSQL review: 24 parts the SMSC had taken were sent again after a stop that gave up
    at 15 s, the server back at 20 s). A broken store (failed fsync) can store nothing."""
    if broken:
        return 0.0
    return max(STOP_GRACE, STOP_BUDGET - elapsed)


async def _bounded(step: str, work: Awaitable[Any], seconds: float) -> None:
    """One step of a stop: bounded in time, and its failure does not skip the next steps
    (the database must still close and the lock be released)."""
    try:
        async with asyncio.timeout(seconds):
            await work
    except TimeoutError:
        log.error("shutdown.step.timeout: %s did not stop within %ss", step, seconds)
    except Exception:
        log.exception("shutdown.step.failed: %s", step)


EXIT_STORE_BROKEN = 3
GC_YOUNG_THRESHOLD = 10_000  # allocations between two young collections (Python's default: 700)
CONNECTOR_STOP_S = 12.0  # its own waits: 5 s for inbound handlers, 5 s for the SMSC's answers
# A stop's whole time, within systemd's TimeoutStopSec=60 the README gives (10 s to spare).
STOP_BUDGET = 50.0


async def serve_forever(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM (returns 0) or until the database cannot be synced any more
    (returns EXIT_STORE_BROKEN, so a supervisor restarts it and SQLite recovers its WAL)."""
    configure_logging(settings.log_level)
    loop = asyncio.get_running_loop()
    reloads = _Reloads(settings)
    # a daemon's reload (systemctl reload, a certificate renewal's hook), not a hang-up: it
    # must not stop serve, as SIGHUP's default would, not even while it starts
    loop.add_signal_handler(signal.SIGHUP, reloads.asked)
    running = await start(settings, lambda line: print(line, flush=True))
    reloads.serving(running.http)
    # Everything loaded so far (modules, number metadata, holidays) lives as long as the
    # process: keep it out of the collector's full passes, which otherwise walk it every time.
    gc.freeze()
    # Under load a few thousand young objects are alive at any moment (requests, PDUs,
    # futures in flight): with the default threshold (700) the collector walked them ~260
    # times a second, 7-9 % of the CPU in the end-to-end benchmark, to find almost no cycles.
    # At 10,000 (measured as set here, after the freeze): ~15 young passes a second of
    # 0.3-0.4 ms, ~1 ms for the middle generation, 0.7-1.2 % of the CPU.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await _first_of(stopping, running.store_broken)
    finally:
        print("smsrelay: stopping", file=sys.stderr, flush=True)
        await stop(running)
    if running.store_broken.is_set():
        print(
            "smsrelay: stopped because an fsync of the database failed: nothing was answered "
            "as stored after it; check the disk, then start smsrelay again",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_STORE_BROKEN
    return 0


class _Reloads:
    """SIGHUP: the API's certificate loaded again; one asked while serve starts (after it
    read the files, perhaps) is done once it serves, not dropped (a renewal's hook during a
    restart left the old certificate until the next renewal)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http: HttpServer | None = None
        self._pending = False

    def asked(self) -> None:
        if self._http is None:
            self._pending = True
            return
        reload_certificate(self._http, self._settings.http_tls_cert, self._settings.http_tls_key)

    def serving(self, http: HttpServer) -> None:
        self._http = http
        if self._pending:
            self._pending = False
            self.asked()


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


BUILTIN_MAX_RECORDS = 10_000


async def _say_unrouted_numbers(
    store: SqlStore, configured: Collection[str], say: Callable[[str], None]
) -> None:
    """Numbers whose connector this node does not have: their messages are accepted and wait
    (a connector renamed or removed, or a node with other settings); said at start, not
    found later by `status --max-overdue`."""
    stranded: dict[str, int] = {}
    for number in await store.list_numbers():
        if number.connector not in configured:
            stranded[number.connector] = stranded.get(number.connector, 0) + 1
    for name, count in sorted(stranded.items()):
        log.warning("connector.unknown", extra={"connector": name, "numbers": count})
        say(
            f"warning: {count} number(s) use connector {name!r}, which is not configured "
            "here: messages from them are accepted and wait (configure it, or remove each "
            "number and add it again with --connector NAME)"
        )


def _say_if_new(path: str, say: Callable[[str], None]) -> None:
    """Said as the CLI says it: a start pointed at the wrong place (an unmounted volume, a
    typo in SMSRELAY_DATA_DIR) otherwise came up as an empty gateway without a word."""
    if not os.path.exists(path):
        say(f"note: creating a new database at {path}")


def _say_if_readable_by_others(path: str, say: Callable[[str], None]) -> None:
    """A database made before its files were private (0644): said at each start, as a TLS
    key every user can read is, since it holds webhook secrets and every text."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # new (made 0600), or opening it says what is wrong
    if readable_by_others(mode):
        log.warning(
            "store.database.readable_by_others",
            extra={"file": path, "mode": oct(stat.S_IMODE(mode))},
        )
        say(readable_warning(path, mode))


async def _check_smsc_history(
    settings: Settings, store: SqlStore, links: dict[str, SmppLinkConfig]
) -> None:
    """A real default SMSC is remembered; the built-in simulator is refused on a database a
    real one served, unless asked for by name: it would take the queued messages and report
    them delivered, though none left (serve started without its settings, by mistake)."""
    real = links.get(DEFAULT_CONNECTOR)
    if real is not None:
        await store.note_real_smsc(f"{real.host}:{real.port}")
        return
    last = await store.last_real_smsc()
    if last is None or settings.smsc == BUILTIN_SMSC:
        return
    raise SettingsError(
        f"this database's messages went to a real SMSC ({last}) when it was last served: on "
        "the built-in simulator its queued messages would be reported delivered without "
        "leaving. Start serve with that SMSC's settings (./smsrelay.toml, --config, "
        'SMSRELAY_SMSC), or set smsc = "builtin" (SMSRELAY_SMSC=builtin) to use the '
        "simulator on purpose"
    )


async def _run_data_steps(store: SqlStore, now: float, say: Callable[[str], None]) -> None:
    """What a migration left for the running gateway (once, before anything is sent)."""
    for name, count in (await store.run_data_steps(now, BUILDERS)).items():
        log.info("store.data_step.done", extra={"step": name, "rows": count})
        if name == "cancel_waiting_for_stopped" and count:
            say(
                f"cancelled and refunded {count} message(s) an older build kept for people "
                "on the STOP list (each gets its delivery report)"
            )
        if name == "compose_account_names" and count:
            say(
                f"renamed {count} account(s) an older build stored with decomposed accents "
                "to their composed form, as the CLI reads names (accounts list shows them)"
            )


def _say_demo_settings_ignored(
    settings: Settings, demo: Account, say: Callable[[str], None]
) -> None:
    """The demo settings shape the demo account when serve makes it, on an empty database;
    given on a later start (a CI cache, a reused ./data) they were ignored without a word."""
    ignored = []
    if settings.demo_api_key and demo.demo_key != settings.demo_api_key:
        ignored.append("demo_api_key (the demo account has another key: accounts rotate-key)")
    if not settings.demo_quiet_hours and demo.quiet_hours:
        ignored.append("demo_quiet_hours (accounts set demo --quiet-hours off)")
    if settings.demo_credit_eur != Settings().demo_credit_eur:  # given: not the default
        ignored.append("demo_credit_eur (accounts credit demo +EUR)")
    for name in ignored:
        say(f"note: {name} applies only when serve makes the demo account: ignored")


async def _start_simulator(settings: Settings, say: Callable[[str], None]) -> Simulator | None:
    if not settings.uses_builtin_smsc:
        return None
    simulator = Simulator(
        SimulatorOptions(
            host="127.0.0.1",
            port=settings.builtin_smsc_port,
            control_port=settings.builtin_smsc_control_port,
            system_id=BUILTIN_SYSTEM_ID,
            password=BUILTIN_PASSWORD,
            delivery_rate=settings.builtin_delivery_rate,
            receipt_delay_ms=settings.builtin_receipt_delay_ms,
            # it lives in serve's process: every submit kept (a million, ~0.5 GB) grew the
            # gateway by ~30 MB a minute under load; the last 5,000-10,000 stay for /submits
            max_records=BUILTIN_MAX_RECORDS,
        )
    )
    await simulator.start()
    say(
        f"built-in SMSC: smpp://127.0.0.1:{simulator.port} "
        f"(control http://127.0.0.1:{simulator.control_port})"
    )
    return simulator


def _build_connectors(
    links: dict[str, SmppLinkConfig],
    simulator: Simulator | None,
    inbound: InboundRouter,
    store_refusal: Callable[[], str | None],
) -> dict[str, Connector]:
    """``links`` as read from the settings; with the built-in SMSC, the default connector
    binds to it (its port is known only now that it runs). ``store_refusal``: why the store
    takes no receipt now (a link lost as stalled binds again only once it does)."""
    if simulator is not None:
        url = f"smpp://{BUILTIN_SYSTEM_ID}:{BUILTIN_PASSWORD}@127.0.0.1:{simulator.port}"
        links = {DEFAULT_CONNECTOR: _link_config(DEFAULT_CONNECTOR, url, {}), **links}
    return {
        name: SmppConnector(name, config, inbound, store_refusal=store_refusal)
        for name, config in links.items()
    }


def _narrow_alphabets(store: SqlStore, links: dict[str, SmppLinkConfig]) -> SenderAlphabets | None:
    """The senders whose connector carries GSM text as IA5 or Latin-1, if any connector does."""
    codings = {name: config.gsm_data_coding for name, config in links.items()}
    alphabets = SenderAlphabets(store, codings)
    return alphabets if alphabets.any_narrow else None


def _link_configs(settings: Settings) -> dict[str, SmppLinkConfig]:
    """Each configured connector's link, read once, before anything starts (a bad option
    is refused then, not after the API listens); the built-in SMSC's comes when it runs."""
    links = {}
    if settings.smsc_url is not None:  # else the built-in SMSC or [connectors.default]
        links[DEFAULT_CONNECTOR] = _link_config(DEFAULT_CONNECTOR, settings.smsc_url, {})
    for extra in settings.connectors:
        links[extra.name] = _link_config(extra.name, extra.url, dict(extra.options))
    return links


def _link_config(name: str, url: str, options: dict[str, Any]) -> SmppLinkConfig:
    try:
        config = SmppLinkConfig.from_url(url, **options)
    except (TypeError, ValueError) as exc:  # a bad option: say which connector, not a traceback
        raise SettingsError(f"connector {name}: {exc}") from exc
    client_tls(name, config)  # its TLS files too, before the database is made or the API listens
    if config.tls_cert:  # a client certificate the carrier issued: said when it runs out
        warn_if_expiring(log, f"connector {name} tls_cert", config.tls_cert)
        warn_if_readable_by_others(
            log, f"connector {name} tls_key", config.tls_key or config.tls_cert
        )
    return config


async def _clock_keeper(
    settings: Settings, store: SqlStore, started: list[tuple[str, Callable[[], Awaitable[Any]]]]
) -> ClockKeeper | None:
    """On a database several nodes share, what keeps its time every minute (leases compared
    across nodes need one clock); None: this node keeps its own."""
    if settings.fixed_clock or not isinstance(store, DatabaseClockSource):
        return None
    keeper = ClockKeeper(store, DatabaseTimeClock())
    await keeper.start()
    started.append(("clock", keeper.stop))
    return keeper


def _policy(settings: Settings) -> DispatchPolicy:
    return DispatchPolicy(
        batch=settings.dispatch_batch,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.submit_attempts,
    )


async def _start_services(
    gateway: Gateway, inbound: InboundRouter, callback_tls: ssl.SSLContext | None, *, sole: bool
) -> list[Any]:
    settings = gateway.settings
    sender = WebhookSender(
        gateway.store,
        gateway.clock,
        timeout=settings.webhook_timeout,
        backoff=BackoffPolicy(
            first=settings.webhook_first_retry, factor=2.0, cap=settings.webhook_max_backoff
        ),
        give_up_after=settings.webhook_give_up_after,
        concurrency_per_host=settings.webhook_concurrency_per_host,
        allow_private=settings.private_webhooks_allowed,
        tls=callback_tls,
        sole_sender=sole,
    )
    await sender.start()
    inbound.on_stored = sender.wake
    gateway.extras["webhook_sender"] = sender
    gateway.callbacks_delivered = lambda: sender.delivered
    gateway.callbacks_given_up = lambda: sender.given_up
    if not settings.retention_days:
        return [sender]
    sweeper = RetentionSweeper(gateway.store, gateway.clock, settings.retention_days)
    await sweeper.start()
    watch = ClockWatch()
    await watch.start()
    return [sender, sweeper, watch]


def _callback_tls(settings: Settings) -> ssl.SSLContext | None:
    """The trust for https callbacks when a private CA is added; None: the callback client
    loads the system's CAs itself, off the loop's thread, at its first https callback."""
    if not settings.webhook_tls_ca:
        return None
    try:
        return tls_context(settings.webhook_tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"webhook_tls_ca: cannot load {settings.webhook_tls_ca}: {exc}"
        ) from exc


@dataclass(frozen=True)
class _Tls:
    callbacks: ssl.SSLContext | None  # trust for https callbacks (None: the system's CAs)
    api: ssl.SSLContext | None  # the API's certificate (None: plain http)


# A connection that sends no (complete) request for this long is closed, idle keep-alive ones
# included, so slow or silent clients cannot hold every socket.
HTTP_IDLE_TIMEOUT = 75.0
HTTP_BODY_TIMEOUT = 30.0  # from the headers to the end of the body: then 408, code 90


async def _start_http(
    gateway: Gateway, settings: Settings, tls: ssl.SSLContext | None
) -> tuple[HttpServer, int]:
    cap = connection_cap(settings.http_max_connections, raise_open_file_limit())
    server = api_server(
        gateway,
        idle_timeout=HTTP_IDLE_TIMEOUT,
        body_timeout=HTTP_BODY_TIMEOUT,
        max_connections=cap,
    )
    port = await server.start(settings.host, settings.port, tls=tls)
    fields: dict[str, object] = {"port": port, "max_connections": cap, "tls": bool(tls)}
    if tls is not None:
        fields |= certificate_fields(settings.http_tls_cert)
    log.info("api.listening", extra=fields)
    gateway.http_load = server.load
    return server, port
