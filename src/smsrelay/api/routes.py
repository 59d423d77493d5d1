"""Every HTTP route of the gateway in one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from smsrelay.api import account_api
from smsrelay.api.send import handle_send
from smsrelay.api.status import handle_message_status


def register(router: web.UrlDispatcher, endpoint: Callable[[Any], Any]) -> None:
    router.add_post("/v1/vn/send", endpoint(handle_send))
    router.add_get("/v1/message-status", endpoint(handle_message_status))
    router.add_post("/v1/message-status", endpoint(handle_message_status))
    router.add_get("/v1/me", endpoint(account_api.handle_me))
    router.add_post("/v1/multi-status", endpoint(account_api.handle_multi_status))
    router.add_get("/v1/multi-status", endpoint(account_api.handle_multi_status))
    router.add_get("/v1/bulk-status-by-tag", endpoint(account_api.handle_status_by_tag))
    router.add_get("/v1/message-cancel", endpoint(account_api.handle_cancel))
    router.add_post("/v1/message-cancel", endpoint(account_api.handle_cancel))
    router.add_get("/v1/stop-sms/list", endpoint(account_api.handle_stop_list))
    router.add_post("/v1/stop-sms/add", endpoint(account_api.handle_stop_add))
    router.add_get("/v1/stop-sms/delete", endpoint(account_api.handle_stop_delete))
    # Test-only: answers 404 unless the fixed_clock setting is on.
    router.add_post("/_test/clock", endpoint(account_api.handle_test_clock))
