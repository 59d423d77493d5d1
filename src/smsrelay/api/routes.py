"""Every HTTP route of the gateway in one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from smsrelay.api.send import handle_send
from smsrelay.api.status import handle_message_status


def register(router: web.UrlDispatcher, endpoint: Callable[[Any], Any]) -> None:
    router.add_post("/v1/vn/send", endpoint(handle_send))
    router.add_get("/v1/message-status", endpoint(handle_message_status))
    router.add_post("/v1/message-status", endpoint(handle_message_status))
