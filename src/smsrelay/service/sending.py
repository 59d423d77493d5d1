"""Accepting a message: validate every field, price it, hold it in quiet hours, store it.

``success`` is only ever answered after ``store.accept_message`` returned, i.e. after the
commit that holds the row (the store resolves the call once that commit's WAL is fsync'd).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from smsrelay.domain.callback_urls import check_callback_url
from smsrelay.domain.ip_access import Origin
from smsrelay.domain.numbers import Msisdn, parse_recipient, parse_sender
from smsrelay.domain.pricing import PriceTable, message_cost
from smsrelay.domain.text import PreparedText, prepare_text
from smsrelay.errors import DomainError
from smsrelay.quick_init import quick_init
from smsrelay.service.accounts import AccountDirectory
from smsrelay.service.alphabets import SenderAlphabets
from smsrelay.service.clock import Clock
from smsrelay.service.due_times import DueTimes
from smsrelay.store.interface import Store
from smsrelay.store.records import Account, NewMessage

T = TypeVar("T")
MAX_TAG_LENGTH = 20


class ValidationFailed(DomainError):
    """Several fields broke their rules at once (SMS Partner's code 9 with a list)."""

    def __init__(self, failures: list[DomainError]) -> None:
        super().__init__("validation", "; ".join(f.message for f in failures))
        self.failures = failures


@quick_init
@dataclass(frozen=True)
class SendRequest:
    """The send parameters as text, already read from JSON or form fields (None = absent)."""

    api_key: str | None
    to: str | None
    sender: str | None
    message: str | None
    tag: str | None = None
    url_response: str | None = None
    url_dlr: str | None = None
    is_stop_sms: str | None = None
    sandbox: str | None = None
    field_errors: tuple[DomainError, ...] = ()  # type errors found while reading the body
    origin: Origin | None = None  # where it came from (None: nowhere an allow-list admits)


@quick_init
@dataclass(frozen=True)
class Accepted:
    message_id: int
    nb_sms: int
    cost_micros: int
    due_at: float
    held: bool
    sandbox: bool = False  # priced and stored, never sent


@dataclass(frozen=True)
class SendContext:
    store: Store
    accounts: AccountDirectory
    clock: Clock
    prices: PriceTable
    stop_mention: str
    due_times: DueTimes = field(default_factory=DueTimes)
    alphabets: SenderAlphabets | None = None  # only when a connector's is narrower than GSM


async def accept_message(request: SendRequest, ctx: SendContext) -> Accepted:
    account = await ctx.accounts.authenticate(request.api_key, request.origin)
    if not (request.to and request.to.strip()) and not _has_type_error(request, "to"):
        raise DomainError("to.required", "the phone number (to) is required", "to")
    blank = request.message is None or not request.message.strip()
    if blank and not _has_type_error(request, "message"):
        raise DomainError("message.required", "the message is required", "message")
    if request.message and "\x00" in request.message:  # no phone shows it; PostgreSQL refuses it
        raise DomainError(
            "message.invalid", "the message must not contain NUL characters", "message"
        )
    checked = _validate_fields(request, account)
    narrow = None
    if ctx.alphabets is not None:
        narrow = await ctx.alphabets.codec_of(account.id, checked.sender.e164)
    suffix = checked.stop_suffix(ctx.stop_mention)
    prepared = prepare_text(checked.raw_text, stop_suffix=suffix, narrow=narrow)
    cost = message_cost(ctx.prices, checked.recipient.region, prepared.segments)
    now = ctx.clock.now()
    due = ctx.due_times.due_at(now, account.quiet_hours, account.region)
    new = _new_message(request, account, checked, prepared, cost, now, due)
    message_id = await ctx.store.accept_message(new)
    # Sandbox: the price is answered (what the send would cost), nothing is charged.
    return Accepted(message_id, prepared.segments, cost, due, due > now, checked.sandbox)


def _has_type_error(request: SendRequest, field: str) -> bool:
    return any(error.field == field for error in request.field_errors)


@quick_init
@dataclass(frozen=True)
class _Checked:
    recipient: Msisdn
    sender: Msisdn
    raw_text: str
    stop: bool
    sandbox: bool

    def stop_suffix(self, mention: str) -> str:
        return "\n" + mention if self.stop else ""


def _validate_fields(request: SendRequest, account: Account) -> _Checked:
    failures = list(request.field_errors)
    recipient = _collect(failures, "to", lambda: parse_recipient(request.to or ""))
    sender = _collect(failures, "from", lambda: parse_sender(request.sender or ""))
    stop = _collect(failures, "isStopSms", lambda: _flag(request.is_stop_sms, "isStopSms"))
    sandbox = _collect(failures, "sandbox", lambda: _flag(request.sandbox, "sandbox"))
    _collect(failures, "tag", lambda: _check_tag(request.tag))
    _collect(
        failures, "urlResponse", lambda: check_callback_url(request.url_response, "urlResponse")
    )
    _collect(failures, "urlDlr", lambda: check_callback_url(request.url_dlr, "urlDlr"))
    if failures:
        raise ValidationFailed(failures)
    assert recipient is not None and sender is not None
    return _Checked(
        recipient=recipient,
        sender=sender,
        raw_text=request.message or "",
        stop=bool(stop) or account.marketing,
        sandbox=bool(sandbox),
    )


def _collect(failures: list[DomainError], field: str, check: Callable[[], T]) -> T | None:
    """Run ``check`` unless ``field`` already failed (a value of the wrong type is one error,
    not also "required")."""
    if failures and any(failure.field == field for failure in failures):
        return None
    try:
        return check()
    except DomainError as error:
        failures.append(error)
        return None


def _flag(value: str | None, field: str) -> bool:
    if value is None or value.strip().lower() in {"", "0", "false"}:
        return False
    if value.strip().lower() in {"1", "true"}:
        return True
    raise DomainError(f"{field}.invalid", f"{field} must be 1 or 0", field)


def check_tag(tag: str | None) -> None:
    """SMS Partner's tag rule: at most 20 characters, no spaces, lowercase only."""
    if tag is None or tag == "":
        return
    if len(tag) > MAX_TAG_LENGTH:
        raise DomainError("tag.invalid", "the tag must be at most 20 characters", "tag")
    if any(ch.isspace() for ch in tag):
        raise DomainError("tag.invalid", "the tag must not contain spaces", "tag")
    if not tag.isprintable():
        raise DomainError("tag.invalid", "the tag must not contain control characters", "tag")
    if tag != tag.lower():
        raise DomainError("tag.invalid", "the tag must be lowercase", "tag")


_check_tag = check_tag


def held_until(now: float, account: Account) -> float | None:
    """When a message the account sent now would leave, if quiet hours hold it; else None."""
    due = DueTimes().due_at(now, account.quiet_hours, account.region)
    return None if due == now else due


def _new_message(
    request: SendRequest,
    account: Account,
    checked: _Checked,
    prepared: PreparedText,
    cost: int,
    now: float,
    due: float,
) -> NewMessage:
    return NewMessage(
        account_id=account.id,
        sender=checked.sender.e164,
        recipient=checked.recipient.e164,
        region=checked.recipient.region,
        text=prepared.text,
        encoding=str(prepared.encoding),
        nb_sms=prepared.segments,
        cost_micros=cost,
        tag=request.tag or None,
        url_response=request.url_response or None,
        url_dlr=request.url_dlr or None,
        stop_sms=checked.stop,
        sandbox=checked.sandbox,
        created_at=now,
        due_at=due,
    )
