"""Which requests the simulator's HTTP control API refuses, so that a web page the developer
opens cannot drive it: a cross-site ``text/plain`` POST needs no CORS preflight (it injected
replies and STOPs), and a page whose name is rebound to 127.0.0.1 read every ``/submits``.

Pure: the request's method and headers in, a refusal (status, reason) or None out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # listening on every address of the machine
JSON = "application/json"


@dataclass(frozen=True)
class ControlRequest:
    method: str
    host: str | None  # the Host header as sent ("127.0.0.1:2776"); None when absent
    origin: str | None
    content_type: str | None


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


def control_refusal(request: ControlRequest, bound_host: str) -> Refusal | None:
    """Why the control API listening on ``bound_host`` refuses this request, or None."""
    if request.host is not None and not host_allowed(request.host, bound_host):
        return Refusal(
            403,
            f"Host {request.host!r} refused: the control API answers requests made to "
            f"localhost, a loopback address or the address it listens on ({bound_host}); "
            "another name may be a web page's DNS rebinding",
        )
    if request.origin is not None and not is_own_origin(request.origin, request.host):
        return Refusal(
            403,
            f"Origin {request.origin!r} refused: a web page of another site cannot drive "
            "the control API",
        )
    if request.method == "POST" and media_type(request.content_type) != JSON:
        return Refusal(
            415,
            f"Content-Type must be {JSON} (a web page of another site can send any other "
            "type without asking first)",
        )
    return None


def host_allowed(host: str, bound_host: str) -> bool:
    """A loopback name or literal, or the address listened on. The port is not compared: a
    rebinding page has the port right and the name wrong, and a port mapped elsewhere (a
    container's, an ssh tunnel's) would be refused for nothing."""
    name = host_name(host)
    if name is None:
        return False
    bound = bound_host.lower().rstrip(".")
    if name in LOOPBACK_NAMES or name == bound:
        return True
    address = ip_literal(name)
    if address is None:
        return False
    # An IP literal cannot be rebound (no DNS), so listening on every address accepts any.
    return address.is_loopback or bound in WILDCARD_HOSTS or address == ip_literal(bound)


def is_own_origin(origin: str, host: str | None) -> bool:
    """The control API's own pages (it serves none, but a developer's console on it)."""
    return host is not None and origin.lower() == f"http://{host.lower()}"


def host_name(host: str) -> str | None:
    """The name or address of a Host header ("[::1]:2776" is "::1"), lower case, without a
    final dot; None when it is not one."""
    if any(c in host for c in "@/?#\\ \t"):  # "evil@127.0.0.1" is no host a browser sends
        return None
    try:
        parts = urlsplit(f"//{host}")
        parts.port  # noqa: B018 - raises ValueError on a port that is not one
    except ValueError:
        return None
    return (parts.hostname or "").rstrip(".") or None


def ip_literal(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` is ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()
