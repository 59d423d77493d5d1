"""The account's other endpoints: balance, statuses in bulk, cancelling, the STOP list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from smsrelay.domain.numbers import parse_recipient
from smsrelay.domain.pricing import PriceTable
from smsrelay.errors import DomainError
from smsrelay.service.clock import Clock
from smsrelay.service.ids import decimal_id
from smsrelay.service.status import StatusView, describe, parse_message_id
from smsrelay.store.interface import Store
from smsrelay.store.records import Account, CallbackBuilders, MessageView, StopEntry

MAX_STATUS_QUERIES = 500
# Ids per read: a 500-item list is read in five turns of the reader thread, so another
# request's read (a send's key lookup, a message-status) waits behind one of them at most,
# not behind the whole list.
STATUS_READ_CHUNK = 100
TAG_PAGE_SIZE = 500
# STOP entries per read: a 100,000-entry list read whole, its answer then built in one go,
# held the event loop 410-750 ms in one stretch; a page is read in ~5 ms (on the reader
# thread) and its items built in ~30 ms, the loop serving other requests between pages.
STOP_PAGE_SIZE = 5000
CREDIT_REGION = "FR"  # creditSms counts SMS to France, as SMS Partner's dashboard does
STATUS_LIST = "SMSStatut_List"


@dataclass(frozen=True)
class Overview:
    username: str
    balance_micros: int
    credit_sms: int
    to_send: int


async def account_overview(store: Store, prices: PriceTable, account: Account) -> Overview:
    """The balance as stored now (never the authentication cache's copy)."""
    snapshot = await store.account_snapshot(account.id)
    if snapshot is None:
        raise DomainError("apikey.incorrect", "incorrect API key", "apiKey")
    balance = snapshot.account.credit_micros
    return Overview(account.name, balance, sms_for(balance, prices), snapshot.waiting)


def sms_for(balance_micros: int, prices: PriceTable) -> int:
    """How many single SMS to France the balance buys (0 when France has no price)."""
    price = prices.micros_by_region.get(CREDIT_REGION, 0)
    return max(balance_micros, 0) // price if price > 0 else 0


# -- statuses ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusQuery:
    """One item of SMSStatut_List, as the client wrote it (None = absent)."""

    phone: str | None
    message_id: str | None


@dataclass(frozen=True)
class StatusAnswer:
    query: StatusQuery
    view: StatusView | None  # None when the lookup failed
    error: DomainError | None = None


async def statuses(
    store: Store, account: Account, queries: Sequence[StatusQuery]
) -> list[StatusAnswer]:
    """Each query's status, or why it has none; each chunk of ids read in one snapshot (an
    item's status is its message's at some moment of the request, as if asked alone)."""
    if not queries:
        raise DomainError("statuslist.required", f"{STATUS_LIST} is required", STATUS_LIST)
    if len(queries) > MAX_STATUS_QUERIES:
        raise DomainError(
            "statuslist.too_long",
            f"{STATUS_LIST} holds at most {MAX_STATUS_QUERIES} items, got {len(queries)}",
            STATUS_LIST,
        )
    ids = sorted({i for i in (_quiet_id(q.message_id) for q in queries) if i is not None})
    found: dict[int, tuple[MessageView, bool]] = {}  # each with its STOP flag
    for start in range(0, len(ids), STATUS_READ_CHUNK):
        chunk = ids[start : start + STATUS_READ_CHUNK]
        chunk_found, chunk_stops = await store.messages_and_stops(account.id, chunk)
        # the flag from the message's own snapshot: one chunk's STOP set applied to another's
        # messages answered "Waiting" with stopSms true, true at no moment (a STOP cancels
        # the number's waiting messages in the same write)
        found.update((i, (view, view.recipient in chunk_stops)) for i, view in chunk_found.items())
    return [_answer(q, found) for q in queries]


def _quiet_id(raw: str | None) -> int | None:
    try:
        return parse_message_id(raw)
    except DomainError:
        return None


def _answer(query: StatusQuery, found: dict[int, tuple[MessageView, bool]]) -> StatusAnswer:
    if not (query.phone or "").strip():  # as message-status: a client that forgets it
        # learns here, not in production (a lookup with an id alone was answered)
        error = DomainError("phonenumber.required", "phoneNumber is required", "phoneNumber")
        return StatusAnswer(query, None, error)
    try:
        read = found.get(parse_message_id(query.message_id))
    except DomainError as error:
        return StatusAnswer(query, None, error)
    if read is None or not _matches(query.phone or "", read[0].recipient):
        return StatusAnswer(query, None, _not_found())
    return StatusAnswer(query, describe(*read))


def _matches(raw_phone: str, e164: str) -> bool:
    """The phone given must be the message's recipient, in any form ``to`` accepts."""
    try:
        return parse_recipient(raw_phone).e164 == e164
    except DomainError:
        return False


def _not_found() -> DomainError:
    return DomainError("message.unknown", "message not found", "messageId")


@dataclass(frozen=True)
class TagPage:
    views: list[StatusView]
    page: int
    total: int  # messages carrying the tag, over all pages


async def statuses_by_tag(
    store: Store, account: Account, tag: str | None, raw_page: str | None
) -> TagPage:
    if not tag:
        raise DomainError("tag.required", "the tag is required", "tag")
    page = _page_number(raw_page)
    messages, total = await store.messages_by_tag(
        account.id, tag, TAG_PAGE_SIZE, (page - 1) * TAG_PAGE_SIZE
    )
    stops = await store.stopped_among(account.id, (m.recipient for m in messages))
    return TagPage([describe(m, m.recipient in stops) for m in messages], page, total)


def _page_number(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 1
    page = decimal_id(raw) or 0
    if page < 1 or page > 10**9:
        raise DomainError("page.invalid", "page must be a whole number from 1", "page")
    return page


# -- cancelling -------------------------------------------------------------------------------


async def cancel_message(store: Store, clock: Clock, account: Account, raw_id: str | None) -> int:
    """Cancel a message none of whose parts has left, and refund it; returns the refund."""
    message_id = parse_message_id(raw_id)
    try:
        return await store.cancel_message(account.id, message_id, clock.now())
    except DomainError as error:
        if error.code != "message.not_cancellable":
            raise
        raise DomainError(
            error.code, await _why_not_cancellable(store, account, message_id), "messageId"
        ) from error


async def _why_not_cancellable(store: Store, account: Account, message_id: int) -> str:
    message = await store.get_message(message_id, account.id)
    if message is not None and message.state == "cancelled":
        return "the message was already cancelled"
    if message is not None and message.sandbox:
        return "a sandbox message is never sent: there is nothing to cancel"
    return "the message has already left for the carrier: it can no longer be cancelled"


# -- the STOP list ----------------------------------------------------------------------------


async def stop_pages(store: Store, account: Account) -> AsyncIterator[list[StopEntry]]:
    """The account's STOP list in id order, ``STOP_PAGE_SIZE`` entries per read.

    Each page is its own read (its own snapshot): the list is true page by page, not at one
    moment. An entry is listed at most once (a page starts past the last id seen); one
    removed during the walk is listed if its page was read before; one added, if it was
    stored before the read of the page its id falls in (new ids are the greatest: the last).
    """
    after_id = 0
    while True:
        page = await store.stop_page(account.id, after_id, STOP_PAGE_SIZE)
        if page:
            yield page
        if len(page) < STOP_PAGE_SIZE:
            return
        after_id = page[-1].id


async def add_stop(
    store: Store, clock: Clock, account: Account, raw: str | None, builders: CallbackBuilders
) -> int:
    """Add a number (any form ``to`` accepts) to the STOP list; returns the entry's id."""
    if raw is None or raw.strip() == "":
        raise DomainError("phonenumber.required", "phoneNumber is required", "phoneNumber")
    try:
        number = parse_recipient(raw)
    except DomainError as error:
        raise DomainError(error.code, error.message, "phoneNumber") from error
    return (await store.stop_add(account.id, number.e164, clock.now(), builders)).id


async def remove_stop(store: Store, account: Account, raw_id: str | None) -> None:
    if raw_id is None or raw_id.strip() == "":
        raise DomainError("stopid.required", "the STOP entry's id is required", "id")
    stop_id = decimal_id(raw_id)
    if stop_id is None:
        raise DomainError("stop.unknown", f"no STOP entry with id {raw_id!r}", "id")
    await store.stop_remove(account.id, stop_id)
