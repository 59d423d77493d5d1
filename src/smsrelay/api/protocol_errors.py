"""HTTP-level errors (a request aiohttp cannot even parse) answered in the API's own format.

aiohttp answers those itself, in plain text, before any route or middleware runs. Real clients
send such requests: SMS Partner's own Node example counts ``Content-Length`` in UTF-16 units,
so a non-ASCII body overruns it and the rest is read as a broken next request. The contract
says that is malformed input, code 90, HTTP 400, in JSON.
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from smsrelay.api.errors import simple_error
from smsrelay.api.render import respond

log = logging.getLogger("smsrelay.api")
# aiohttp quotes the bytes it choked on (": b'...'", ": bytearray(b'...')"): an apiKey in a URL
# or a header, a message; neither the log nor the answer repeats them.
_QUOTED_BYTES = re.compile(r":?\s*(bytearray\()?b['\"].*$", re.DOTALL)


def answer_protocol_errors_in_api_format(server: web.Server) -> None:
    """Make every connection of ``server`` answer HTTP-level errors in the API's format."""
    connection_made = server.connection_made

    def made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        # aiohttp builds the handlers itself: give this one our error answer (same slots).
        handler.__class__ = ApiRequestHandler
        connection_made(handler, transport)

    setattr(server, "connection_made", made)  # noqa: B010 (a method of this instance only)


class ApiRequestHandler(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer has begun: aiohttp closes the connection
            return super().handle_error(request, status, exc, message)
        if status >= 500:
            log.error("api.protocol_error", exc_info=exc)
            payload, status = simple_error(500, status, "internal error")
        else:
            detail = _without_quoted_bytes(message or str(exc))
            log.info("api.malformed_request", extra={"status": status, "error": detail})
            payload, status = simple_error(90, status, f"malformed HTTP request: {detail}")
        response = respond(payload, status, False)
        response.force_close()
        return response


def _without_quoted_bytes(text: str) -> str:
    """The first line of aiohttp's message, without the offending bytes it quotes."""
    return _QUOTED_BYTES.sub("", text.split("\n", 1)[0]).rstrip(" :.") or "unreadable"
