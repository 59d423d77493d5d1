"""The request and the answer as the API sees them: plain values, no connection behind them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Request:
    """One complete HTTP request; header names lower-cased, the body as it came (still encoded
    if the client set a Content-Encoding)."""

    method: str
    path: str  # %-decoded, without the query
    raw_query: str
    headers: dict[str, str]
    body: bytes
    peer: str = ""  # the connection's peer address (a proxy's, behind one); "" unknown


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str
    close: bool = False  # close the connection once this answer is written
    headers: bytes = b""  # more header lines, each ending in CRLF (the console's security ones)


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """``multipart/form-data; boundary="x"`` -> ("multipart/form-data", {"boundary": "x"})."""
    kind, _, rest = header.partition(";")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        name, equals, value = item.partition("=")
        if equals:
            params[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), params
