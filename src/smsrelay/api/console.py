"""``GET /console``: a read-only page for operators; ``GET /console/data``: its figures.

The page (console.html, its style and script inline) holds nothing of the gateway's: anyone
may load it. Its figures come from ``/console/data``, under ``/metrics``' rule and from the
same ``GatewayFigures``, as JSON. Its Content-Security-Policy lets run only the page's own
script and style, named by their hashes (an injected inline script would not run), loads
nothing from anywhere, and lets the page fetch from its own origin only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from smsrelay.api.http_types import Response
from smsrelay.api.metrics import PART_STATES, VERSION
from smsrelay.service.monitoring import LINK_LOSSES, SUBMIT_OUTCOMES, GatewayFigures

HTML_TYPE = "text/html; charset=utf-8"
# the figures change every refresh, and no cache (a proxy's, the browser's disk) should keep them
PRIVATE = b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"


@dataclass(frozen=True)
class ConsolePage:
    html: bytes
    headers: bytes  # its policy, and that no other site may frame it

    @classmethod
    def load(cls) -> ConsolePage:
        """Read once, when the app is built: a page missing from the package stops serve at
        its start, not the first operator who opens it."""
        html = resources.files(__package__).joinpath("console.html").read_text("utf-8")
        headers = f"Content-Security-Policy: {content_policy(html)}\r\n".encode()
        headers += b"X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n" + PRIVATE
        return cls(html.encode(), headers)

    def response(self) -> Response:
        return Response(200, self.html, HTML_TYPE, headers=self.headers)


def content_policy(html: str) -> str:
    """Nothing but the page's own inline script and style, and fetches to its own origin."""
    return (
        f"default-src 'none'; script-src {_hashes(html, 'script')}; "
        f"style-src {_hashes(html, 'style')}; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _hashes(html: str, tag: str) -> str:
    # attributes or not: a tag missed here would be blocked by the browser, silently
    found = re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}\s*>", html, re.DOTALL | re.IGNORECASE)
    digests = (base64.b64encode(hashlib.sha256(text.encode()).digest()) for text in found)
    return " ".join(f"'sha256-{digest.decode()}'" for digest in digests) or "'none'"


def console_data(figures: GatewayFigures, uptime: float) -> dict[str, Any]:
    """The figures as the page shows them; a store that could not be read gives nulls, not
    zeros (an empty queue and an unknown one are not the same news)."""
    store = figures.store
    http = figures.http
    running, waiting, refused = figures.heavy_reads
    return {
        "version": VERSION,
        "uptimeSeconds": round(uptime),
        "store": {
            "ok": figures.store_trouble is None,
            "trouble": figures.store_trouble,
            "readable": store is not None,
        },
        "connectors": [_connector(name, figures) for name in _connector_names(figures)],
        "parts": None if store is None else {s: store.parts.get(s, 0) for s in PART_STATES},
        "callbacks": {
            "pending": None if store is None else store.callbacks_pending,
            "oldestPendingSeconds": None
            if store is None
            else _age(store.callbacks_oldest_pending, store.now),
            "delivered": figures.callbacks_delivered,
            "givenUp": figures.callbacks_given_up,
        },
        "sinceStart": {
            "messagesAccepted": figures.messages_accepted,
            "sandboxSends": figures.sandbox_accepted,
            "receiptsReceived": figures.receipts_received,
            "repliesReceived": figures.replies_received,
        },
        "http": {
            "connections": http.get("connections", 0),
            "maxConnections": http.get("max_connections", 0),
            "turnedAway": http.get("turned_away", 0),
            "reclaimed": http.get("reclaimed", 0),
        },
        "heavyReads": {"running": running, "waiting": waiting, "refused": refused},
    }


def _connector_names(figures: GatewayFigures) -> list[str]:
    names = {*figures.smsc_binds, *(name for name, _ in figures.submit_outcomes)}
    if figures.store is not None:
        names.update(figures.store.overdue, figures.store.sending)
    return sorted(names)


def _connector(name: str, figures: GatewayFigures) -> dict[str, Any]:
    store = figures.store
    sessions = figures.smsc_binds.get(name, {})
    return {
        "name": name,
        "sessions": [
            {
                "session": session,
                "bound": bound,
                "linksLost": {
                    how: figures.links_lost.get((name, session, how), 0) for how in LINK_LOSSES
                },
            }
            for session, bound in sorted(sessions.items())
        ],
        "overdue": None if store is None else _parts(store.overdue.get(name), store.now),
        "sending": None if store is None else _parts(store.sending.get(name), store.now),
        "submits": {
            outcome: figures.submit_outcomes.get((name, outcome), 0) for outcome in SUBMIT_OUTCOMES
        },
    }


def _parts(found: tuple[int, float | None] | None, now: float) -> dict[str, Any]:
    count, since = found or (0, None)
    return {"parts": count, "oldestSeconds": _age(since, now)}


def _age(since: float | None, now: float) -> float | None:
    return None if since is None else round(max(0.0, now - since), 1)
