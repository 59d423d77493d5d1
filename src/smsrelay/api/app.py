"""The API application: routes, uniform parameter reading and error answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from smsrelay.api.bodies import BodyTooLarge, decoded_body
from smsrelay.api.console import PRIVATE, ConsolePage, console_data
from smsrelay.api.errors import error_payload, simple_error
from smsrelay.api.http_server import HttpServer
from smsrelay.api.http_types import Request, Response, media_type
from smsrelay.api.metrics import metrics_response, scrape_refusal
from smsrelay.api.multipart import multipart_fields
from smsrelay.api.params import MalformedBody, Params, read_params
from smsrelay.api.render import json_response, respond, wants_xml
from smsrelay.api.routes import CHANGING_GETS, Handler, RouteTable, route_table, tidy_path
from smsrelay.domain.ip_access import Origin
from smsrelay.errors import Busy, DomainError, StorageLow, TransientError
from smsrelay.service.gateway import Gateway
from smsrelay.service.monitoring import StoreFiguresReader, gateway_figures

# (gateway, parameters, read from a form, answer in XML, where the request came from)
Endpoint = Callable[[Gateway, Params, bool, bool, Origin], Awaitable[Response]]
MAX_BODY = 64 * 1024
_JSON_LEAD = b" \t\r\n\xef\xbb\xbf"  # whitespace and a UTF-8 byte order mark
log = logging.getLogger("smsrelay.api")


class ApiApp:
    """Every route of the gateway's HTTP API; ``handle`` answers any request, never raises."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.routes: RouteTable = route_table(self._endpoint)
        self.routes["GET", "/health"] = self._health
        self.routes["GET", "/metrics"] = self._metrics
        self.routes["GET", "/console"] = self._console
        self.routes["GET", "/console/data"] = self._console_data
        self._store_figures = StoreFiguresReader(gateway.store, gateway.clock)
        self._console_page = ConsolePage.load()
        self._started = time.monotonic()  # for the console's uptime

    async def handle(self, request: Request) -> Response:
        """The request's answer; an unexpected error is left to the server, whose last guard
        answers it as a 500 in the API's format (``protocol_error``)."""
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return await self._loosely_written(request)
        return await handler(request)

    def _endpoint(self, fn: Endpoint) -> Handler:
        """Read parameters (query + JSON or form body), run ``fn``, answer errors in API
        format."""

        async def handler(request: Request) -> Response:
            xml = _query_wants_xml(request.raw_query)  # until the body is read
            try:
                params, is_form = _params_of(request)
                xml = wants_xml(params)
                return await fn(self.gateway, params, is_form, xml, request)
            except MalformedBody as error:
                answer = respond(*error_payload(error), xml)
                return _last_on_connection(answer) if request.body else answer
            except DomainError as error:
                payload, status = error_payload(error)
            except BodyTooLarge:
                payload, status = simple_error(90, 413, f"the body is larger than {MAX_BODY} bytes")
            except TransientError as error:
                log.debug("api.transient_error", extra={"error": str(error)})  # store.*: once
                payload, status = simple_error(500, 503, _unavailable(request.path, error))
            return respond(payload, status, xml)

        return handler

    async def _loosely_written(self, request: Request) -> Response:
        """A path with a trailing or doubled slash (a client's base URL ending in ``/v1/``)
        reaches its endpoint, HEAD reaches GET's (unless that GET changes something); anything
        else is 404 or 405 in the API's format."""
        path = tidy_path(request.path)
        head_as_get = request.method == "HEAD" and path not in CHANGING_GETS
        method = "GET" if head_as_get else request.method
        handler = self.routes.get((method, path))
        if handler is not None:
            return await handler(request)
        xml = _query_wants_xml(request.raw_query)
        if any(known == path for _, known in self.routes):
            payload, code = simple_error(405, 405, f"method {request.method} not allowed here")
        else:
            payload, code = simple_error(404, 404, "no such endpoint")
        return respond(payload, code, xml)

    async def _health(self, request: Request) -> Response:
        """200 while the API accepts (messages queue when an SMSC is down), with each SMSC
        session's bind state; 503 while the store cannot take sends (its commits fail, or its
        disk is under the reserve), so a load balancer sends them elsewhere; ``?require=smsc``:
        503 unless every session is bound too."""
        binds = self.gateway.smsc_binds()
        # none yet (serve listens before its connectors exist): not bound, whatever all() says
        all_bound = bool(binds) and all(all(modes.values()) for modes in binds.values())
        require = dict(parse_qsl(request.raw_query)).get("require")
        trouble = self.gateway.store_trouble()
        ok = trouble is None and (all_bound or require != "smsc")
        answer = {
            "ok": ok,
            "store": trouble or "ok",
            "smsc": binds,
            "http": self.gateway.http_load(),
        }
        return json_response(answer, 200 if ok else 503)

    async def _metrics(self, request: Request) -> Response:
        """The gateway's figures for Prometheus (``api/metrics.py``), for a bearer of
        ``metrics_token``: they show volumes and connector names."""
        refused = self._scrape_refused(request)
        if refused is not None:
            return refused
        figures = await gateway_figures(self.gateway, self._store_figures)
        return metrics_response(figures, request.headers.get("accept"))

    async def _console(self, request: Request) -> Response:
        """The operator's page (``api/console.py``): no figures in it, open to anyone."""
        return self._console_page.response()

    async def _console_data(self, request: Request) -> Response:
        """The console's figures, as JSON, under the rule of ``/metrics``."""
        refused = self._scrape_refused(request)
        if refused is not None:
            return refused
        figures = await gateway_figures(self.gateway, self._store_figures)
        uptime = time.monotonic() - self._started
        response = json_response(console_data(figures, uptime), 200)
        response.headers = PRIVATE
        return response

    def _scrape_refused(self, request: Request) -> Response | None:
        """The 403 for a request that may not see the gateway's figures (None: it may)."""
        settings = self.gateway.settings
        refusal = scrape_refusal(request, settings.metrics_token, settings.is_stand_in)
        if refusal is None:
            return None
        return json_response({"ok": False, "error": refusal}, 403)


def protocol_error(status: int, detail: str, raw_query: str) -> Response:
    """The answer to a request the HTTP server could not read (code 90), in the API's format:
    SMS Partner's Node example overruns its Content-Length, and the rest reads as garbage."""
    xml = _query_wants_xml(raw_query)
    if status == 503:  # the server is full (too many connections): the client retries
        payload, status = simple_error(500, 503, detail)
    elif status >= 500:
        payload, status = simple_error(500, status, "internal error")
    else:
        payload, status = simple_error(90, status, detail)
    response = respond(payload, status, xml)
    response.close = True
    return response


def _last_on_connection(response: Response) -> Response:
    """An unreadable body may be framed wrong (SMS Partner's Node example counts its
    Content-Length in UTF-16 units): the bytes after it would be answered as a broken next
    request, and a keep-alive client reads that answer as its next send's (Node 20 lost a
    valid send so). Closing after this answer drops them, and the client reconnects."""
    response.close = True
    return response


def _unavailable(path: str, error: TransientError) -> str:
    """A 503's words: what could not be done, and why when the store says so in words meant
    for the client (a disk under its reserve)."""
    what = "could not queue the SMS" if path.rstrip("/").endswith("/send") else "not available now"
    if isinstance(error, StorageLow):
        return f"{what}: the gateway's disk is nearly full, retry later"
    if isinstance(error, Busy):
        return f"{what}: {error}, retry later"
    return f"{what}, retry later"


def _query_wants_xml(raw_query: str) -> bool:
    if "format" not in raw_query.lower():  # the usual case, without parsing
        return False
    return wants_xml({k.lower(): v for k, v in parse_qsl(raw_query)})  # keys in any case


def _params_of(request: Request) -> tuple[Params, bool]:
    body = decoded_body(request, MAX_BODY)
    content_type = request.headers.get("content-type", "")
    kind, type_params = media_type(content_type)
    if kind != "multipart/form-data" or _json_labelled_multipart(body, type_params):
        return read_params(body, request.raw_query, type_params.get("charset"))
    # PHP's curl given an array (CURLOPT_POSTFIELDS) posts its fields this way.
    params, _ = read_params(b"", request.raw_query)
    params.update(multipart_fields(body, content_type))
    return params, True


def _json_labelled_multipart(body: bytes, type_params: dict[str, str]) -> bool:
    """A JSON object is JSON whatever its Content-Type says (the contract); a multipart body
    has its boundary line (its preamble may start with anything, "{" too)."""
    if body.lstrip(_JSON_LEAD)[:1] != b"{":
        return False
    boundary = type_params.get("boundary")
    return not boundary or b"--" + boundary.encode("latin-1", "replace") not in body


def build_app(gateway: Gateway) -> ApiApp:
    return ApiApp(gateway)


def api_server(
    gateway: Gateway, *, idle_timeout: float, body_timeout: float, max_connections: int
) -> HttpServer:
    """The API served over HTTP: its routes, its error answers and its body limit."""
    return HttpServer(
        build_app(gateway).handle,
        protocol_error,
        max_body=MAX_BODY,
        idle_timeout=idle_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
    )
