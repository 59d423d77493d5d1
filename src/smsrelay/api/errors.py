"""The one place that maps domain errors to SMS Partner's codes and our HTTP statuses.

Every error answers a non-200 status (the official Go SDK reads any 200 as a success).
SMS Partner only names 400; the other statuses are our choice, documented in the README.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smsrelay.api.render import PlainText
from smsrelay.errors import DomainError

# domain code -> (SMS Partner code, HTTP status)
CODES: Mapping[str, tuple[int, int]] = {
    "apikey.required": (1, 400),
    "to.required": (2, 400),
    "phonenumber.required": (2, 400),
    "message.unknown": (4, 404),
    "messageid.required": (4, 400),
    "stop.unknown": (4, 404),
    "stopid.required": (4, 400),
    "message.not_cancellable": (4, 409),
    "apikey.incorrect": (10, 401),
    "credit.insufficient": (11, 402),
    "price.missing": (13, 400),
    "recipient.stopped": (14, 400),
    "stop.exists": (15, 409),
    "account.disabled": (20, 403),
    "message.required": (43, 400),
    "sender.not_owned": (44, 400),
    "message.too_many_parts": (52, 400),
    "body.malformed": (90, 400),
    "ip.not_authorised": (96, 403),
    "body.too_large": (90, 413),
    "queue.unavailable": (500, 503),
}
VALIDATION = (9, 400)


def error_payload(error: DomainError) -> tuple[dict[str, Any], int]:
    """The error body and HTTP status for a refused request."""
    failures = getattr(error, "failures", None)
    if failures is None and error.code not in CODES:
        failures = [error]  # any other rule broken by one field is a code-9 constraint
    if failures is not None:
        code, status = VALIDATION
        items = [_failure(f) for f in failures]
        return {"success": False, "code": code, "error": items}, status
    code, status = CODES[error.code]
    return {"success": False, "code": code, "message": error.message}, status


def _failure(error: DomainError) -> dict[str, Any]:
    field = error.field or "request"
    return {"elementId": PlainText(f"children[{field}].data"), "message": error.message}


def simple_error(code: int, status: int, message: str) -> tuple[dict[str, Any], int]:
    return {"success": False, "code": code, "message": message}, status
