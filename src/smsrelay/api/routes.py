"""Every HTTP route of the API in one table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from smsrelay.api import account_api
from smsrelay.api.http_types import Request, Response
from smsrelay.api.send import handle_send
from smsrelay.api.status import handle_message_status

Handler = Callable[[Request], Awaitable[Response]]
# (method, path) -> handler
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

# SMS Partner's GETs that change something: HEAD (which must not) does not reach them.
CHANGING_GETS = frozenset({"/v1/message-cancel", "/v1/stop-sms/delete"})


def route_table(endpoint: Callable[[Any], Handler]) -> RouteTable:
    """Each route's endpoint wrapped by ``endpoint`` (parameter reading, error answers)."""
    return {(method, path): endpoint(fn) for method, path, fn in ROUTES}


def tidy_path(path: str) -> str:
    """``path`` with repeated slashes merged and a trailing one dropped (``/v1//me/``)."""
    tidy = "/".join(segment for segment in path.split("/") if segment)
    return "/" + tidy
