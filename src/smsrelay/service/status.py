"""Looking messages up for their owner, in SMS Partner's status vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

from smsrelay.domain.numbers import parse_recipient
from smsrelay.domain.states import message_state_of, public_status, reported_stat
from smsrelay.errors import DomainError
from smsrelay.service.ids import decimal_id
from smsrelay.store.interface import Store
from smsrelay.store.records import Account, MessageView


@dataclass(frozen=True)
class StatusView:
    message: MessageView
    status: str  # Delivered / Not delivered / Waiting / ko
    stat: str | None  # the carrier's last word (DELIVRD, UNDELIV, ...)
    stopped: bool  # the recipient is now in the STOP list


def parse_message_id(raw: str | None) -> int:
    if raw is None or str(raw).strip() == "":
        raise DomainError("messageid.required", "messageId is required", "messageId")
    value = decimal_id(str(raw))
    if value is None:
        raise DomainError("message.unknown", "message not found", "messageId")
    return value


async def message_status(
    store: Store, account: Account, raw_id: str | None, phone: str | None
) -> StatusView:
    message_id = parse_message_id(raw_id)
    if phone is None or not phone.strip():  # SMS Partner's code 2: a lookup names both
        raise DomainError("phonenumber.required", "phoneNumber is required", "phoneNumber")
    message = await store.get_message(message_id, account.id)
    if message is None or not _same_number(phone, message.recipient):
        raise DomainError("message.unknown", "message not found", "messageId")
    stopped = await store.stopped_among(account.id, [message.recipient])
    return describe(message, message.recipient in stopped)


def describe(message: MessageView, stopped: bool = False) -> StatusView:
    status = public_status(message_state_of(message.state))
    stat = reported_stat((p.state, p.stat) for p in message.parts)
    return StatusView(message, status, stat, stopped)


def _same_number(raw: str, e164: str) -> bool:
    try:
        return parse_recipient(raw).e164 == e164
    except DomainError:
        return False
