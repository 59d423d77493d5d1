"""POST /v1/vn/send — SMS Partner's "send by long number"."""

from __future__ import annotations

from smsrelay.api.errors import error_payload
from smsrelay.api.http_types import Response
from smsrelay.api.params import Params, text_param
from smsrelay.api.render import respond
from smsrelay.domain.ip_access import Origin
from smsrelay.domain.pricing import micros_to_eur
from smsrelay.errors import DomainError
from smsrelay.service.gateway import Gateway
from smsrelay.service.sending import SendRequest, accept_message


def build_send_request(params: Params, is_form: bool, origin: Origin | None) -> SendRequest:
    errors: list[DomainError] = []
    message = text_param(params, "message", errors)
    if is_form and message is not None and _has_unescaped_quote(message):
        errors.append(
            DomainError("message.quote", 'a double quote must be escaped as \\" ', "message")
        )
    return SendRequest(
        api_key=text_param(params, "apiKey", errors),
        to=text_param(params, "to", errors),
        sender=text_param(params, "from", errors),
        message=message,
        tag=text_param(params, "tag", errors),
        url_response=text_param(params, "urlResponse", errors),
        url_dlr=text_param(params, "urlDlr", errors),
        is_stop_sms=text_param(params, "isStopSms", errors, flag=True),
        sandbox=text_param(params, "sandbox", errors, flag=True),
        field_errors=tuple(errors),
        origin=origin,
    )


def _has_unescaped_quote(text: str) -> bool:
    return '"' in text.replace('\\"', "")


async def handle_send(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    try:
        accepted = await accept_message(
            build_send_request(params, is_form, origin), gateway.send_context
        )
    except DomainError as error:
        payload, status = error_payload(error)
        return respond(payload, status, xml)
    if accepted.sandbox:
        gateway.sandbox_accepted += 1
    else:
        gateway.wake_dispatcher()
        gateway.messages_accepted += 1
    return respond(
        {
            "success": True,
            "code": 200,
            "message_id": accepted.message_id,
            "nb_sms": accepted.nb_sms,
            "cost": micros_to_eur(accepted.cost_micros),
            "currency": "EUR",
        },
        200,
        xml,
    )
