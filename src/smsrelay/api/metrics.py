"""``GET /metrics``: the gateway's figures in Prometheus' text format (prometheus_client).

The store's figures are read when scraped, from one snapshot bounded by the live work. What
flows (messages accepted, receipts and replies received, callbacks delivered or given up) is
counted by this process since it started, an integer added to where it happens: Prometheus
sums the nodes and reads over restarts (``sum(rate(…))``). A table's highest id said the same
on SQLite, but on PostgreSQL a batch run again uses new ids, and the counts ran 35 % high.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Mapping
from importlib import metadata

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from smsrelay.api.http_types import Request, Response
from smsrelay.service.monitoring import LINK_LOSSES, SUBMIT_OUTCOMES, GatewayFigures
from smsrelay.store.records import StoreFigures

PART_STATES = ("queued", "sending", "submitted")


def _installed_version() -> str:
    try:
        return metadata.version("smsrelay")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


VERSION = _installed_version()


def scrape_refusal(request: Request, token: str | None, stand_in: bool) -> str | None:
    """Why this request may not see the figures (None: it may). With ``metrics_token`` set,
    a bearer of it may; without, anyone, but only on a stand-in gateway (the built-in SMSC:
    a development or CI gateway, with nothing real to show). The client's address cannot
    decide it: behind a TLS proxy on the same machine, every client comes from loopback."""
    if token:
        given = request.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return "send Authorization: Bearer <metrics_token>"
    if stand_in:
        return None
    return "set metrics_token to scrape /metrics (it shows volumes and connector names)"


def metrics_response(figures: GatewayFigures, accept: str | None = None) -> Response:
    """In the format the scraper's ``Accept`` asks for (Prometheus' text, or OpenMetrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(figures))
    ProcessCollector(registry=registry)  # CPU, memory, open files of this process
    encode, content_type = choose_encoder(accept or "")
    return Response(200, encode(registry), content_type)


class _Figures:
    def __init__(self, figures: GatewayFigures) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        figures = self._figures
        yield _gauge("smsrelay_build_info", "The running version.", 1, version=VERSION)
        yield _gauge(
            "smsrelay_store_ok",
            "1 while the store takes sends; 0 while its commits fail or its disk is under "
            "min_free_mb (sends are answered 503).",
            int(figures.store_trouble is None),
        )
        yield _gauge(
            "smsrelay_store_readable",
            "1 if this scrape could read the store's figures (the smsrelay_parts, "
            "smsrelay_callbacks series are left out when 0).",
            int(figures.store is not None),
        )
        yield from _smsc(figures.smsc_binds)
        yield _links_lost(figures.links_lost, figures.smsc_binds)
        yield from _http(figures.http)
        yield from _heavy_reads(*figures.heavy_reads)
        yield _counter(
            "smsrelay_callbacks_delivered",
            "Callbacks this process delivered (a 2xx) since it started.",
            figures.callbacks_delivered,
        )
        yield _counter(
            "smsrelay_callbacks_given_up",
            "Callbacks this process gave up since it started (smsrelay webhooks list --failed "
            "shows them, smsrelay webhooks retry puts them back).",
            figures.callbacks_given_up,
        )
        yield from _flows(figures)
        yield _submits(figures.submit_outcomes, connectors=list(figures.smsc_binds))
        if figures.store is not None:
            yield from _store(figures.store, connectors=list(figures.smsc_binds))

    def describe(self) -> list[Metric]:
        return []  # families differ by what is known at the scrape: nothing to check ahead


def _smsc(binds: dict[str, dict[str, bool]]) -> Iterator[Metric]:
    bound = GaugeMetricFamily(
        "smsrelay_smsc_bound",
        "1 while the connector's SMPP session (transceiver, transmitter, receiver) is bound.",
        labels=["connector", "session"],
    )
    for connector, sessions in sorted(binds.items()):
        for session, is_bound in sorted(sessions.items()):
            bound.add_metric([connector, session], int(is_bound))
    yield bound


def _links_lost(lost: dict[tuple[str, str, str], int], binds: dict[str, dict[str, bool]]) -> Metric:
    """Every session's three series from the first scrape (zeros included: rate() and
    increase() need the series before its first loss)."""
    family = CounterMetricFamily(
        "smsrelay_smpp_links_lost",
        "SMPP links lost since start: how=silent when the gateway gave one up (no answer to "
        "its enquire_link, or submits the SMSC's kernel never acknowledged: a path that eats "
        "data while binds still pass), how=stalled when it unbound one it had stopped "
        "reading for a minute (its store wedged), how=closed when it closed under the gateway.",
        labels=["connector", "session", "how"],
    )
    for connector, sessions in sorted(binds.items()):
        for session in sorted(sessions):
            for how in LINK_LOSSES:
                family.add_metric([connector, session, how], lost.get((connector, session, how), 0))
    return family


def _http(load: dict[str, int]) -> Iterator[Metric]:
    yield _gauge(
        "smsrelay_http_connections", "HTTP connections open now.", load.get("connections", 0)
    )
    yield _gauge(
        "smsrelay_http_max_connections",
        "HTTP connections allowed at once (http_max_connections, or the derived cap).",
        load.get("max_connections", 0),
    )
    yield _counter(
        "smsrelay_http_turned_away",
        "HTTP connections refused with a 503 for being over the cap, since start.",
        load.get("turned_away", 0),
    )
    yield _counter(
        "smsrelay_http_reclaimed",
        "Idle HTTP connections closed at the cap to make room for a newcomer, since start.",
        load.get("reclaimed", 0),
    )


def _heavy_reads(running: int, waiting: int, refused: int) -> Iterator[Metric]:
    yield _gauge(
        "smsrelay_heavy_reads_running",
        "Multi-status, status-by-tag and STOP-list requests running now (two per account).",
        running,
    )
    yield _gauge(
        "smsrelay_heavy_reads_waiting",
        "Such requests waiting for their account's turn now (64 per account at most).",
        waiting,
    )
    yield _counter(
        "smsrelay_heavy_reads_refused",
        "Such requests answered 503 since start: their account's waiting line was full.",
        refused,
    )


def _store(store: StoreFigures, connectors: list[str]) -> Iterator[Metric]:
    """The store's series; their ages count from the snapshot's time (``store.now``)."""
    parts = GaugeMetricFamily(
        "smsrelay_parts",
        "Parts (SMS) by state: queued (waiting to leave, held ones included), sending "
        "(claimed, their submit_sm out or about to be), submitted (waiting for a receipt).",
        labels=["state"],
    )
    for state in PART_STATES:
        parts.add_metric([state], store.parts.get(state, 0))
    yield parts
    named = sorted({*connectors, *store.overdue, *store.sending})
    yield from _overdue(store.overdue, store.now, named)
    yield from _sending(store.sending, store.now, named)
    yield from _callbacks(store)


def _flows(figures: GatewayFigures) -> Iterator[Metric]:
    yield _counter(
        "smsrelay_messages_accepted",
        "Sends this process answered 200 since it started (each stored first), sandbox "
        "sends left out.",
        figures.messages_accepted,
    )
    yield _counter(
        "smsrelay_sandbox_sends",
        "Sandbox sends this process answered 200 since it started (priced, never sent).",
        figures.sandbox_accepted,
    )
    yield _counter(
        "smsrelay_receipts_received",
        "Delivery receipts this process stored since it started (one per part).",
        figures.receipts_received,
    )
    yield _counter(
        "smsrelay_replies_received",
        "Replies (MO, one per part) this process received and acknowledged since it "
        "started; a part the SMSC sent again counts again (it is stored once).",
        figures.replies_received,
    )


def _overdue(
    overdue: dict[str, tuple[int, float]], now: float, connectors: list[str]
) -> Iterator[Metric]:
    return _count_and_age(
        ("smsrelay_parts_overdue", "smsrelay_parts_overdue_seconds"),
        (
            "Parts whose message is due and that the SMSC has not taken (queued, waiting for "
            "a retry, or sending), per connector: a link down, an SMSC throttling, failing "
            "or not answering them.",
            "How long the oldest of those parts' messages has been due (0: none); retries "
            "do not reset it.",
        ),
        overdue,
        now,
        connectors,
    )


def _sending(
    sending: dict[str, tuple[int, float | None]], now: float, connectors: list[str]
) -> Iterator[Metric]:
    return _count_and_age(
        ("smsrelay_parts_sending", "smsrelay_parts_sending_oldest_seconds"),
        (
            "Parts claimed and not settled, per connector: waiting for a window slot, or out "
            "and waiting for the SMSC's answer.",
            "How long ago the oldest of them was claimed (0: none): an SMSC that takes "
            "submit_sm and never answers shows here.",
        ),
        sending,
        now,
        connectors,
    )


def _count_and_age(
    names: tuple[str, str],
    docs: tuple[str, str],
    figures: Mapping[str, tuple[int, float | None]],
    now: float,
    connectors: list[str],
) -> Iterator[Metric]:
    """Per connector, how many parts and how long ago the oldest's time was (0: none)."""
    count = GaugeMetricFamily(names[0], docs[0], labels=["connector"])
    age = GaugeMetricFamily(names[1], docs[1], labels=["connector"])
    for connector in connectors:
        parts, since = figures.get(connector, (0, None))
        count.add_metric([connector], parts)
        age.add_metric([connector], 0.0 if since is None else max(0.0, now - since))
    yield count
    yield age


def _submits(outcomes: dict[tuple[str, str], int], connectors: list[str]) -> Metric:
    family = CounterMetricFamily(
        "smsrelay_submits",
        "Submit outcomes this process recorded since it started, per connector: ok (the "
        "SMSC took the part), throttled (tried again soon), error (a transient error, "
        "tried again), unanswered (no answer in time), not_sent (the link failed first), "
        "rejected (refused for good: the message is rejected), failed (given up).",
        labels=["connector", "outcome"],
    )
    for connector in sorted({*connectors, *(name for name, _ in outcomes)}):
        for outcome in SUBMIT_OUTCOMES:
            family.add_metric([connector, outcome], outcomes.get((connector, outcome), 0))
    return family


def _callbacks(store: StoreFigures) -> Iterator[Metric]:
    yield _gauge(
        "smsrelay_callbacks_pending",
        "Callbacks (DLRs, replies) still to post: waiting for a try, or being posted.",
        store.callbacks_pending,
    )
    oldest = store.callbacks_oldest_pending
    yield _gauge(
        "smsrelay_callbacks_oldest_pending_seconds",
        "How long ago the oldest callback still to post was stored (0: none).",
        0.0 if oldest is None else max(0.0, store.now - oldest),
    )


def _gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
