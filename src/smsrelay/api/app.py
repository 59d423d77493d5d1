"""The aiohttp application: routes, uniform parameter reading and error answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from smsrelay.api.errors import error_payload, simple_error
from smsrelay.api.params import MalformedBody, Params, read_params
from smsrelay.api.render import respond, wants_xml
from smsrelay.api.routes import RouteTable, tidy_path
from smsrelay.errors import DomainError, TransientError
from smsrelay.service.gateway import Gateway

Endpoint = Callable[[Gateway, Params, bool, bool], Awaitable[web.StreamResponse]]
GATEWAY = web.AppKey("gateway", Gateway)
ROUTE_TABLE: web.AppKey[RouteTable] = web.AppKey("route_table")
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 30.0
log = logging.getLogger("smsrelay.api")
T = TypeVar("T")


def endpoint(fn: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Read parameters (query + JSON or form body), run ``fn``, answer errors in API format."""

    async def handler(request: web.Request) -> web.StreamResponse:
        xml = _query_wants_xml(request)  # until the body is read, the query alone says
        try:
            params, is_form = await _params_of(request)
            xml = wants_xml(params)
            return await fn(request.app[GATEWAY], params, is_form, xml)
        except DomainError as error:
            payload, status = error_payload(error)
        except web.HTTPRequestEntityTooLarge:
            payload, status = simple_error(90, 413, f"the body is larger than {MAX_BODY} bytes")
        except (HttpProcessingError, RequestPayloadError) as error:  # Content-Encoding lied
            payload, status = simple_error(90, 400, f"unreadable body: {_first_cause(error)}")
        except _SlowBody:  # a client that stalls mid-body must not hold its socket for ever
            payload, status = simple_error(
                90, 408, f"the body did not arrive within {BODY_TIMEOUT:g} s"
            )
            slow = respond(payload, status, xml)
            slow.force_close()  # then closed (after aiohttp's lingering read of the rest, ≤ 10 s)
            return slow
        except TransientError as error:
            log.warning("api.transient_error", extra={"error": str(error)})
            payload, status = simple_error(500, 503, "could not queue the SMS, retry later")
        return respond(payload, status, xml)

    return handler


def _query_wants_xml(request: web.Request) -> bool:
    return wants_xml({k.lower(): v for k, v in request.query.items()})  # keys in any case


class _SlowBody(Exception):
    pass


async def _params_of(request: web.Request) -> tuple[Params, bool]:
    raw_query = request.rel_url.raw_query_string
    if request.content_type != "multipart/form-data":
        return read_params(await _body_of(request), raw_query, request.charset)
    # PHP's curl given an array (CURLOPT_POSTFIELDS) posts its fields this way.
    params, _ = read_params(b"", raw_query)
    params.update(await _multipart_fields(request))
    return params, True


async def _multipart_fields(request: web.Request) -> Params:
    try:
        form = await _in_time(request.post())
    except (ValueError, AssertionError, UnicodeDecodeError) as exc:  # aiohttp's parse errors
        raise MalformedBody(f"unreadable multipart body: {exc}") from exc
    return {name.lower(): value for name, value in form.items() if isinstance(value, str)}


async def _body_of(request: web.Request) -> bytes:
    if request.content.is_eof():  # the usual case: it came with the headers, no timer needed
        return await request.read()
    return await _in_time(request.read())


async def _in_time(reading: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await reading
    except TimeoutError:
        raise _SlowBody from None


def _first_cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


@web.middleware
async def never_a_traceback(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        return await _loosely_written(request, exc.status)
    except ConnectionResetError:  # the client left mid-request: nobody to answer, nothing wrong
        log.info("api.client_gone", extra={"path": request.path})
        payload, status = simple_error(90, 400, "the connection was lost before the body came")
        return respond(payload, status, False)
    except Exception:
        log.exception("api.unexpected_error", extra={"path": request.path})
        payload, status = simple_error(500, 500, "internal error")
        return respond(payload, status, False)


async def _loosely_written(request: web.Request, status: int) -> web.StreamResponse:
    """A path with a trailing or doubled slash (a client's base URL ending in ``/v1/``) reaches
    its endpoint; anything else is answered 404 or 405 in the API's format."""
    xml = _query_wants_xml(request)
    table = request.app[ROUTE_TABLE]
    path = tidy_path(request.path)
    if path != request.path:
        handler = table.get((request.method, path))
        if handler is not None:
            return await handler(request)
        if any(known == path for _, known in table):
            status = 405
    if status == 404:
        payload, code = simple_error(404, 404, "no such endpoint")
    else:
        payload, code = simple_error(405, 405, f"method {request.method} not allowed here")
    return respond(payload, code, xml)


async def health(request: web.Request) -> web.Response:
    """200 while the API accepts (messages queue when an SMSC is down), with each SMSC
    session's bind state; ``?require=smsc``: 503 unless every session is bound (alerting)."""
    binds = request.app[GATEWAY].smsc_binds()
    # none yet (serve listens before its connectors exist): not bound, whatever all() says
    all_bound = bool(binds) and all(all(modes.values()) for modes in binds.values())
    ok = all_bound or request.query.get("require") != "smsc"
    return web.json_response({"ok": ok, "smsc": binds}, status=200 if ok else 503)


def build_app(gateway: Gateway) -> web.Application:
    from smsrelay.api import routes

    app = web.Application(client_max_size=MAX_BODY, middlewares=[never_a_traceback])
    app[GATEWAY] = gateway
    app.router.add_get("/health", health)
    app[ROUTE_TABLE] = routes.register(app.router, endpoint)
    return app
