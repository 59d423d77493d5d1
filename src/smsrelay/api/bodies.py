"""A request body as sent, undone from its ``Content-Encoding`` (gzip or deflate)."""

from __future__ import annotations

import zlib

from smsrelay.api.http_types import Request
from smsrelay.api.params import MalformedBody

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyTooLarge(Exception):
    """The body, once decompressed, is over the API's limit."""


def decoded_body(request: Request, limit: int) -> bytes:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return request.body
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise MalformedBody(f"unreadable body: Content-Encoding {encoding!r} is not supported")
    try:
        return _inflate(request.body, wbits, limit)
    except zlib.error as exc:
        if encoding != "deflate":
            raise MalformedBody(f"unreadable body: not {encoding} ({exc})") from exc
    try:  # "deflate" without its zlib header, as some clients send it
        return _inflate(request.body, -zlib.MAX_WBITS, limit)
    except zlib.error as exc:
        raise MalformedBody(f"unreadable body: not deflate ({exc})") from exc


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, limit + 1)  # a small bomb cannot fill the memory
    if len(out) > limit:
        raise BodyTooLarge
    if not inflater.eof:
        raise zlib.error("the compressed body is cut short")
    return out
