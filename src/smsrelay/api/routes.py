"""Every HTTP route of the gateway in one table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from smsrelay.api import account_api
from smsrelay.api.send import handle_send
from smsrelay.api.status import handle_message_status

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (method, path) -> handler: what a path written loosely (a trailing or doubled slash) reaches.
RouteTable = dict[tuple[str, str], Handler]

ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("POST", "/v1/vn/send", handle_send),
    ("GET", "/v1/message-status", handle_message_status),
    ("POST", "/v1/message-status", handle_message_status),
    ("GET", "/v1/me", account_api.handle_me),
    ("POST", "/v1/multi-status", account_api.handle_multi_status),
    ("GET", "/v1/multi-status", account_api.handle_multi_status),
    ("GET", "/v1/bulk-status-by-tag", account_api.handle_status_by_tag),
    ("GET", "/v1/message-cancel", account_api.handle_cancel),
    ("POST", "/v1/message-cancel", account_api.handle_cancel),
    ("GET", "/v1/stop-sms/list", account_api.handle_stop_list),
    ("POST", "/v1/stop-sms/add", account_api.handle_stop_add),
    ("GET", "/v1/stop-sms/delete", account_api.handle_stop_delete),
    # Test-only: answers 404 unless the fixed_clock setting is on.
    ("POST", "/_test/clock", account_api.handle_test_clock),
)


def register(router: web.UrlDispatcher, endpoint: Callable[[Any], Handler]) -> RouteTable:
    table: RouteTable = {}
    for method, path, fn in ROUTES:
        handler = endpoint(fn)
        router.add_route(method, path, handler)
        table[method, path] = handler
    return table


def tidy_path(path: str) -> str:
    """``path`` with repeated slashes merged and a trailing one dropped (``/v1//me/``)."""
    tidy = "/".join(segment for segment in path.split("/") if segment)
    return "/" + tidy
