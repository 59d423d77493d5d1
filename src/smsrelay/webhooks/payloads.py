"""Callback bodies: the reply format SMS Partner publishes, and our own DLR format."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import orjson

from smsrelay.domain.pricing import micros_to_eur
from smsrelay.domain.states import message_state_of, public_status, reported_stat
from smsrelay.service.dates import paris_text
from smsrelay.store.records import CallbackBuilders, DlrFacts, ReplyFacts


def dlr_body(facts: DlrFacts) -> bytes:
    message = facts.message
    payload: dict[str, Any] = {
        "messageId": message.id,
        "phoneNumber": message.recipient.removeprefix("+"),
        "from": message.sender.removeprefix("+"),
        "status": public_status(message_state_of(message.state)),
        "state": message.state,
        "stat": reported_stat((p.state, p.stat) for p in message.parts),
        "date": paris_text(message.final_at or _last_done(facts)),
        "cost": micros_to_eur(message.charged_micros),  # 0 for one a STOP cancelled
        "currency": "EUR",
        "nbSms": message.nb_sms,
        "tag": message.tag,
        "parts": [
            {
                "part": p.seq,
                "carrierId": p.carrier_id,
                "stat": p.stat,
                "err": p.err,
                "state": p.state,
                "date": paris_text(p.done_at),
                "error": p.last_error,
            }
            for p in message.parts
        ],
    }
    return orjson.dumps(payload)


def _last_done(facts: DlrFacts) -> float | None:
    times = [p.done_at for p in facts.message.parts if p.done_at is not None]
    return max(times) if times else None


def reply_body(facts: ReplyFacts) -> bytes:
    payload: dict[str, Any] = {
        "msisdn": facts.msisdn.removeprefix("+"),
        "to": facts.virtual_number.removeprefix("+"),
        "messageId": str(facts.reply_id),
        "text": facts.text,
        "type": "text",
        "keyword": facts.keyword,
        "message-timestamp": paris_text(facts.received_at),
    }
    if facts.concat is not None:
        ref, total, part = facts.concat
        payload.update(
            {
                "concat": "true",
                "concat-ref": str(ref),
                "concat-total": str(total),
                "concat-part": str(part),
            }
        )
    return orjson.dumps(payload)


_random_bits = random.Random(os.urandom(32)).getrandbits  # re-seeded in each process
_MILLIS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


def new_callback_id() -> str:
    """A UUID version 7 (RFC 9562): unix milliseconds first, then 74 random bits.

    Time-ordered ids land at the end of the ``webhooks.uuid`` index instead of on a random
    page each: a commit of a hundred callbacks dirties a page or two of it, not a hundred.
    """
    millis = time.time_ns() // 1_000_000
    # Unique, not secret (receivers dedupe by it; bodies are signed apart): a seeded PRNG
    # instead of a getrandom() system call per callback. Formatted without a UUID object.
    rand = _random_bits(74)
    value = (millis & _MILLIS_MASK) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & _RAND_B_MASK
    hexa = f"{value:032x}"
    return f"{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:]}"


BUILDERS = CallbackBuilders(dlr=dlr_body, reply=reply_body, new_id=new_callback_id)
