"""GET /v1/message-status: one message's status in SMS Partner's shape, plus our detail."""

from __future__ import annotations

from typing import Any

from smsrelay.api.http_types import Response
from smsrelay.api.params import Params, plain_param
from smsrelay.api.render import respond
from smsrelay.domain.ip_access import Origin
from smsrelay.domain.pricing import micros_to_eur
from smsrelay.service.dates import iso_text, paris_text
from smsrelay.service.gateway import Gateway
from smsrelay.service.status import StatusView, message_status


async def handle_message_status(
    gateway: Gateway, params: Params, is_form: bool, xml: bool, origin: Origin
) -> Response:
    account = await gateway.accounts.authenticate(plain_param(params, "apiKey"), origin)
    view = await message_status(
        gateway.store, account, plain_param(params, "messageId"), plain_param(params, "phoneNumber")
    )
    fields = status_fields(view, gateway.clock.now())
    return respond({"success": True, "code": 200, **fields}, 200, xml)


def status_fields(view: StatusView, now: float) -> dict[str, Any]:
    message = view.message
    fields: dict[str, Any] = {
        "number": message.recipient.removeprefix("+"),
        "messageId": str(message.id),
        "stopSms": view.stopped,
        "date": paris_text(message.created_at),
        "statut": view.status,
        "cost": micros_to_eur(message.charged_micros),
        "countryCode": message.region,
        "currency": "EUR",
    }
    fields["stat"] = view.stat
    fields["nbSms"] = message.nb_sms
    fields["tag"] = message.tag
    # the time a held message will leave; once it has come, it leaves as soon as it can
    held = message.state == "held" and message.due_at > now
    fields["dueAt"] = iso_text(message.due_at) if held else None
    fields["parts"] = [
        {"seq": p.seq, "state": p.state, "carrierId": p.carrier_id, "stat": p.stat, "err": p.err}
        for p in message.parts
    ]
    return fields
