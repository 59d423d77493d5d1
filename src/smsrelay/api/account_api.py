"""The account's other endpoints, in SMS Partner's shapes: /v1/me, statuses in bulk,
cancelling, the STOP list; and the test-only clock.

Each item of ``StatutResponse_List`` has one shape whatever the endpoint. Its phone number and
date are written as SMS Partner's multi-status and bulk-status pages show them (``+33…``, and
Unix seconds as text), so a client can match its answers by the number it sent; ``messageId``
(a string) and ``stopSms`` (a boolean) keep the types of ``/v1/message-status``, which the
official Go SDK also uses to read these items.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from smsrelay.api.errors import CODES, VALIDATION, simple_error
from smsrelay.api.http_types import Response
from smsrelay.api.params import Params, plain_param
from smsrelay.api.render import XmlEntries, respond, xml_entries
from smsrelay.domain.ip_access import Origin
from smsrelay.domain.numbers import parse_recipient
from smsrelay.domain.pricing import format_eur
from smsrelay.errors import DomainError
from smsrelay.service.account_queries import (
    STATUS_LIST,
    StatusAnswer,
    StatusQuery,
    account_overview,
    add_stop,
    cancel_message,
    remove_stop,
    statuses,
    statuses_by_tag,
    stop_pages,
)
from smsrelay.service.clock import FixedClock
from smsrelay.service.dates import iso_text, paris_text
from smsrelay.service.gateway import Gateway
from smsrelay.service.status import StatusView
from smsrelay.store.records import StopEntry

# SMS Partner's examples say SMSStatut_List; one table of its docs says SMSStatus_List.
STATUS_LIST_NAMES = ("smsstatut_list", "smsstatus_list")


def _ok(fields: dict[str, Any], xml: bool) -> Response:
    return respond({"success": True, "code": 200, **fields}, 200, xml)


# -- GET /v1/me -------------------------------------------------------------------------------


async def handle_me(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    account = await gateway.accounts.authenticate(plain_param(params, "apiKey"), origin)
    overview = await account_overview(gateway.store, gateway.prices, account)
    user = {"username": overview.username, "firstname": "", "lastname": ""}
    credits = {
        "creditSms": overview.credit_sms,
        "toSend": overview.to_send,
        "balance": format_eur(overview.balance_micros),
        "currency": "EUR",
    }
    return _ok({"user": user, "credits": credits}, xml)


# -- statuses ---------------------------------------------------------------------------------


async def handle_multi_status(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    account = await gateway.accounts.authenticate(plain_param(params, "apiKey"), origin)
    async with gateway.heavy_reads.turn(account.id):
        answers = await statuses(gateway.store, account, status_queries(params))
        return _ok({"StatutResponse_List": [answer_item(a) for a in answers]}, xml)


async def handle_status_by_tag(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    account = await gateway.accounts.authenticate(plain_param(params, "apiKey"), origin)
    async with gateway.heavy_reads.turn(account.id):
        page = await statuses_by_tag(
            gateway.store, account, plain_param(params, "tag"), plain_param(params, "page")
        )
        items = [status_item(view) for view in page.views]
        fields = {"StatutResponse_List": items, "currentPage": page.page, "total": page.total}
        return _ok(fields, xml)


def status_queries(params: Params) -> list[StatusQuery]:
    """SMSStatut_List: a JSON list, or (query string, form field) a JSON list as text."""
    raw = next((params[n] for n in STATUS_LIST_NAMES if n in params), None)
    if isinstance(raw, str) and raw.strip():
        raw = _json_value(raw)
    if raw is None or raw == "":
        raise DomainError("statuslist.required", f"{STATUS_LIST} is required", STATUS_LIST)
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise DomainError(
            "statuslist.invalid",
            f"{STATUS_LIST} must be a list of {{phoneNumber, messageId}} objects",
            STATUS_LIST,
        )
    return [_status_query({str(k).lower(): v for k, v in item.items()}) for item in raw]


def _json_value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _status_query(item: Params) -> StatusQuery:
    return StatusQuery(
        phone=plain_param(item, "phoneNumber"), message_id=plain_param(item, "messageId")
    )


def status_item(view: StatusView) -> dict[str, Any]:
    message = view.message
    return {
        "success": True,
        "code": 200,
        "phoneNumber": message.recipient,
        "messageId": str(message.id),
        "status": view.status,
        "date": str(int(message.created_at)),
        "stopSms": view.stopped,
        # The contract names it "status" here, SMS Partner's Go SDK reads "statut" (as in
        # message-status): both, the copy last so XML readers keep their positions.
        "statut": view.status,
    }


def answer_item(answer: StatusAnswer) -> dict[str, Any]:
    if answer.view is not None:
        return status_item(answer.view)
    error = answer.error or DomainError("message.unknown", "message not found", "messageId")
    # the found items' keys, in their order: a reader by name finds them all, and an XML
    # reader by position finds each in its place (date and stopSms were missing)
    return {
        "success": False,
        "code": CODES.get(error.code, VALIDATION)[0],
        "phoneNumber": _international(answer.query.phone),
        "messageId": answer.query.message_id or "",
        "status": error.message,
        "date": None,
        "stopSms": False,
        "statut": error.message,
    }


def _international(phone: str | None) -> str | None:
    """The number asked about, in the ``+33…`` form of the found items when it reads as one."""
    if not phone:
        return phone
    try:
        return parse_recipient(phone).e164
    except DomainError:
        return phone


# -- GET /v1/message-cancel -------------------------------------------------------------------


async def handle_cancel(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    account = await gateway.accounts.authenticate(plain_param(params, "apiKey"), origin)
    refund = await cancel_message(
        gateway.store, gateway.clock, account, plain_param(params, "messageId")
    )
    note = f"The SMS sending has been cancelled; {format_eur(refund)} EUR refunded."
    return _ok({"message": note}, xml)


# -- the STOP list ----------------------------------------------------------------------------


async def handle_stop_list(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    account = await gateway.accounts.authenticate(plain_param(params, "apiKey"), origin)
    async with gateway.heavy_reads.turn(account.id):  # the list runs to 100,000s
        items: list[dict[str, Any]] = []  # JSON's
        rendered: list[str] = []  # XML: a page's at a time, never the whole list in one step
        listed = 0
        async for entries in stop_pages(gateway.store, account):  # others served between reads
            page = [_stop_item(e) for e in entries]
            listed += len(page)
            if xml:  # the page's dicts dropped once rendered: kept, they were 3 times the answer
                rendered.append(xml_entries(page))
            else:
                items += page
        data = XmlEntries("".join(rendered)) if xml else items
        return _ok({"nbData": listed, "data": data}, xml)


def _stop_item(entry: StopEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "phoneNumber": entry.phone.removeprefix("+"),
        "createdAt": paris_text(entry.created_at),
    }


async def handle_stop_add(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    account = await gateway.accounts.authenticate(plain_param(params, "apiKey"), origin)
    stop_id = await add_stop(
        gateway.store,
        gateway.clock,
        account,
        plain_param(params, "phoneNumber"),
        gateway.builders,
    )
    return _ok({"stopId": stop_id}, xml)


async def handle_stop_delete(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    account = await gateway.accounts.authenticate(plain_param(params, "apiKey"), origin)
    await remove_stop(gateway.store, account, plain_param(params, "id"))
    return _ok({}, xml)


# -- POST /_test/clock (only with the fixed_clock setting) ------------------------------------


async def handle_test_clock(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    clock = gateway.clock
    if not gateway.settings.fixed_clock or not isinstance(clock, FixedClock):
        payload, status = simple_error(404, 404, "no such endpoint")
        return respond(payload, status, xml)
    clock.set(_moment(plain_param(params, "now")))
    gateway.wake_dispatcher()  # held messages may be due now
    return respond({"now": iso_text(clock.now())}, 200, xml)


def _moment(text: str | None) -> float:
    example = "e.g. 2026-03-02T08:00:00+01:00"
    try:
        moment = datetime.fromisoformat(text or "")
    except ValueError as exc:
        raise DomainError("now.invalid", f"now must be an ISO 8601 time, {example}", "now") from exc
    if moment.tzinfo is None:
        raise DomainError("now.invalid", f"now needs a UTC offset, {example}", "now")
    return moment.timestamp()
