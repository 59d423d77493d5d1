"""`smsrelay messages ...`, `smsrelay webhooks ...` and `smsrelay stop ...`."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from typing import Any

import click

from smsrelay.cli_support import ACCOUNT_NAME, emit, fail, plural, redacted, with_gateway
from smsrelay.domain.numbers import parse_recipient
from smsrelay.domain.pricing import format_eur
from smsrelay.service import retention
from smsrelay.service.dates import iso_text
from smsrelay.service.gateway import Gateway
from smsrelay.service.status import describe
from smsrelay.store.records import (
    Account,
    MessageView,
    ReplyView,
    StopAdded,
    StopEntry,
    WebhookView,
)

# Ids and limits as SQLite and PostgreSQL hold them: a larger number was an OverflowError
# traceback, and --limit -1 quietly meant no limit.
ROW_ID = click.IntRange(min=1, max=2**63 - 1)
LIMIT = click.IntRange(min=1, max=1_000_000)


@click.group()
def messages() -> None:
    """Look at messages: their parts, carrier ids, timeline and receipts."""


@messages.command("show")
@click.argument("message_id", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def show_message(ctx: click.Context, message_id: int, as_json: bool) -> None:
    """Show one message with its parts, carrier ids, timeline and receipts.

    \b
    Example:
      smsrelay messages show 42
    """

    async def work(gw: Gateway) -> MessageView | None:
        return await gw.store.get_message(message_id)

    message = with_gateway(ctx, work)
    if message is None:
        fail(f"no message {message_id}")
    assert message is not None
    emit(message_detail(message), as_json, _human_detail)


def message_detail(message: MessageView) -> dict[str, Any]:
    view = describe(message)
    return {
        "id": message.id,
        "status": view.status,
        "state": message.state,
        "from": message.sender,
        "to": message.recipient,
        "text": message.text,
        "encoding": message.encoding,
        "nbSms": message.nb_sms,
        "cost": format_eur(message.cost_micros),
        "tag": message.tag,
        "sandbox": message.sandbox,
        "connector": message.connector,
        "timeline": _timeline(message),
        "parts": [
            {
                "seq": p.seq,
                "state": p.state,
                "attempts": p.attempts,
                "carrierId": p.carrier_id,
                "stat": p.stat,
                "err": p.err,
                "lastError": p.last_error,
            }
            for p in message.parts
        ],
        "receipts": [
            {"carrierId": r.carrier_id, "stat": r.stat, "err": r.err, "at": iso_text(r.received_at)}
            for r in message.receipts
        ],
    }


def _timeline(message: MessageView) -> list[str]:
    """What happened, in time order; at the same instant, in the order it happens to a part
    (a receipt can come before the SMSC's answer to the submit is stored: its time says so)."""
    events = [(message.created_at, 0, 0, "accepted")]
    ended_before_due = message.final_at is not None and message.final_at < message.due_at
    if message.due_at > message.created_at and not ended_before_due:
        events.append((message.due_at, 1, 0, "due (held for quiet hours)"))
    seq_of = {part.id: part.seq for part in message.parts}
    first_receipt: dict[tuple[int, str], float] = {}  # (seq, carrier id) -> its first receipt
    for receipt in message.receipts:
        seq = seq_of.get(receipt.part_id or 0, 0)
        events.append((receipt.received_at, 3, seq, f"receipt {receipt.carrier_id} {receipt.stat}"))
        key = (seq, receipt.carrier_id or "")
        first_receipt[key] = min(first_receipt.get(key, receipt.received_at), receipt.received_at)
    for part in message.parts:
        if part.submitted_at:
            # placed no later than the first receipt for the id it was submitted as: that
            # receipt is stored a few ms before the SMSC's answer when it comes first (an
            # earlier copy's receipts, another id, do not move it)
            key = (part.seq, part.carrier_id or "")
            placed = min(part.submitted_at, first_receipt.get(key, part.submitted_at))
            submitted = f"part {part.seq} submitted as {part.carrier_id}"
            events.append((placed, 2, part.seq, submitted))
        if part.done_at:
            events.append((part.done_at, 4, part.seq, f"part {part.seq} {part.state}"))
    return [f"{iso_text(at)}  {what}" for at, _, _, what in sorted(events)]


def _human_detail(info: dict[str, Any]) -> str:
    sandbox = " (sandbox: never sent)" if info["sandbox"] else ""
    lines = [
        f"message {info['id']}: {info['status']} ({info['state']}){sandbox}",
        f"  {info['from']} -> {info['to']}  {info['nbSms']} part(s), {info['encoding']}, "
        f"{info['cost']} EUR",
    ]
    lines += [
        f"  part {p['seq']}: {p['state']} carrier id {p['carrierId'] or '-'} "
        f"stat {p['stat'] or '-'}" + (f" ({p['lastError']})" if p["lastError"] else "")
        for p in info["parts"]
    ]
    lines += ["  timeline:"] + [f"    {t}" for t in info["timeline"]]
    return "\n".join(lines)


@messages.command("list")
@click.option("--account", type=ACCOUNT_NAME, help="Only this account's messages.")
@click.option("--limit", default=20, show_default=True, type=LIMIT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def list_messages(ctx: click.Context, account: str | None, limit: int, as_json: bool) -> None:
    """List the most recent messages.

    \b
    Example:
      smsrelay messages list --account demo --limit 5
    """

    async def work(gw: Gateway) -> list[MessageView]:
        account_id = (await _account(gw, account)).id if account else None
        return await gw.store.recent_messages(account_id, limit)

    found = with_gateway(ctx, work)
    rows = [
        {
            "id": m.id,
            "to": m.recipient,
            "state": m.state,
            "nbSms": m.nb_sms,
            "created": iso_text(m.created_at),
            "sandbox": m.sandbox,
            # what a test asserts on, without a `messages show` (a process) per message
            "from": m.sender,
            "text": m.text,
            "tag": m.tag,
            "cost": format_eur(m.charged_micros),
            "dueAt": iso_text(m.due_at),
        }
        for m in found
    ]
    emit(
        rows,
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['id']}\t{r['to']}\t{r['state']}{' (sandbox)' if r['sandbox'] else ''}"
                f"\t{r['nbSms']}\t{r['created']}"
                for r in rs
            )
            or "no messages"
        ),
    )


@messages.command("replies")
@click.option("--account", type=ACCOUNT_NAME, help="Only replies to this account's numbers.")
@click.option("--limit", default=20, show_default=True, type=LIMIT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def list_replies(ctx: click.Context, account: str | None, limit: int, as_json: bool) -> None:
    """List the most recent replies (MO), with the message each was taken to answer.

    \b
    Example:
      smsrelay messages replies --account demo --limit 5
    """

    async def work(gw: Gateway) -> list[ReplyView]:
        account_id = (await _account(gw, account)).id if account else None
        return await gw.store.recent_replies(account_id, limit)

    rows = [
        {
            "id": r.id,
            "from": r.msisdn,
            "to": r.virtual_number,
            "text": r.text,
            "answers": r.message_id,
            "owned": r.account_id is not None,
            "received": iso_text(r.received_at),
        }
        for r in with_gateway(ctx, work)
    ]
    emit(rows, as_json, _reply_lines)


UNOWNED = " (no owner: a number no account has, or a reply on another connector)"


def _reply_lines(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{r['id']}\t{r['received']}\t{r['from']} -> {r['to']}\t"
        f"{'answers ' + str(r['answers']) if r['answers'] else 'no message'}"
        f"{'' if r['owned'] else UNOWNED}"
        f"\t{r['text']!r}"
        for r in rows
    ]
    return "\n".join(lines) or "no replies"


async def _account(gw: Gateway, name: str) -> Account:
    account = await gw.store.find_account(name)
    if account is None:
        fail(f"no account named {name!r}")
    assert account is not None
    return account


@click.group()
def webhooks() -> None:
    """Inspect and retry delivery-report and reply callbacks."""


@webhooks.command("list")
@click.option("--failed", is_flag=True, help="Only callbacks that were given up.")
@click.option("--pending", is_flag=True, help="Only callbacks still waiting to be delivered.")
@click.option("--limit", default=50, show_default=True, type=LIMIT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def list_webhooks(
    ctx: click.Context, failed: bool, pending: bool, limit: int, as_json: bool
) -> None:
    """List callbacks with their attempts.

    \b
    Example:
      smsrelay webhooks list --failed
    """
    if failed and pending:  # it showed the failed ones only
        fail("--failed and --pending: choose one (or neither, for every callback)", code=2)
    state = "failed" if failed else ("pending" if pending else None)

    async def work(gw: Gateway) -> list[WebhookView]:
        return await gw.store.list_webhooks(state, limit)

    # the receiver's credentials are the customer's: not in what gets pasted into a ticket
    found = [replace(w, url=redacted(w.url)) for w in with_gateway(ctx, work)]
    if as_json:  # the keys and times of every other --json (camelCase, ISO), not the store's
        emit([_webhook_json(w) for w in found], True, str)
        return
    emit(
        found,
        False,
        lambda rows: (
            "\n".join(
                f"{w.id}\t{w.kind}\t{w.state}\t{w.attempts} attempt(s)\t{w.url}"
                f"\t{w.last_error or ''}"
                for w in rows
            )
            or "no callbacks"
        ),
    )


@webhooks.command("retry")
@click.argument("webhook_id", type=ROW_ID, required=False)
@click.option("--all", "all_", is_flag=True, help="Retry every failed callback.")
@click.pass_context
def retry_webhooks(ctx: click.Context, webhook_id: int | None, all_: bool) -> None:
    """Queue a failed callback (or --all of them) for another round of attempts.

    \b
    Example:
      smsrelay webhooks retry 17
      smsrelay webhooks retry --all
    """
    if (webhook_id is None) == (not all_):
        fail("give one callback id or --all", code=2)

    async def work(gw: Gateway) -> int:
        if webhook_id is None:
            return await _retry_all(gw)
        count = await gw.store.retry_webhooks(webhook_id, gw.clock.now())
        if not count:  # the store decided; now say why
            view = await gw.store.get_webhook(webhook_id)
            if view is None:
                fail(f"no callback {webhook_id}")
            fail(f"callback {webhook_id} is {view.state}: nothing to retry")
        return count

    count = with_gateway(ctx, work)
    # --all with nothing failed is a fine outcome (a cron job must not fail on it)
    click.echo(f"queued {count} callback(s) for retry" if count else "no failed callbacks")


async def _retry_all(gw: Gateway) -> int:
    """Every failed callback, in steps of ``STEP`` with a pause between them, as ``db purge``
    does beside serve: in one transaction, 500,000 held serve's every write for 12 s."""
    retried, after_id = 0, 0
    while True:
        moved, after_id = await gw.store.retry_failed_webhooks(
            gw.clock.now(), after_id, retention.STEP
        )
        if not moved:
            return retried
        retried += moved
        if retried % 50_000 < moved and sys.stderr.isatty():  # a person waiting, not cron
            click.echo(f"queued {retried} so far...", err=True)
        await asyncio.sleep(retention.YIELD_S)


def _webhook_json(w: WebhookView) -> dict[str, Any]:
    return {
        "id": w.id,
        "callbackId": w.uuid,  # its X-Smsrelay-Id
        "kind": w.kind,
        "url": w.url,
        "state": w.state,
        "attempts": w.attempts,
        "createdAt": iso_text(w.created_at),
        "dueAt": iso_text(w.due_at),  # null: waits for an earlier callback of its order key
        "deliveredAt": iso_text(w.delivered_at),
        "lastError": w.last_error,
        "messageId": w.message_id,
        "replyId": w.reply_id,
        "history": [
            {"at": iso_text(at), "status": status, "latencyMs": latency, "error": error}
            for at, status, latency, error in w.history
        ],
    }


@click.group()
def stop() -> None:
    """Manage an account's STOP list (numbers that must not be messaged)."""


@stop.command("list")
@click.argument("account", type=ACCOUNT_NAME)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def stop_list(ctx: click.Context, account: str, as_json: bool) -> None:
    """List the STOP list of ACCOUNT.

    \b
    Example:
      smsrelay stop list demo
    """

    async def work(gw: Gateway) -> list[StopEntry]:
        return await gw.store.stop_list((await _account(gw, account)).id)

    found = with_gateway(ctx, work)
    if as_json:  # the API's own STOP list entries
        rows = [
            {"id": e.id, "phoneNumber": e.phone, "createdAt": iso_text(e.created_at)} for e in found
        ]
        emit(rows, True, str)
        return
    click.echo(
        "\n".join(f"{e.id}\t{e.phone}\t{iso_text(e.created_at)}" for e in found)
        or "STOP list is empty"
    )


@stop.command("add")
@click.argument("account", type=ACCOUNT_NAME)
@click.argument("phone")
@click.pass_context
def stop_add(ctx: click.Context, account: str, phone: str) -> None:
    """Add PHONE to ACCOUNT's STOP list: sends to it are refused with code 14.

    \b
    Example:
      smsrelay stop add demo 0612345678
    """

    async def work(gw: Gateway) -> StopAdded:
        number = parse_recipient(phone)
        owner = await _account(gw, account)
        return await gw.store.stop_add(owner.id, number.e164, gw.clock.now(), gw.builders)

    added = with_gateway(ctx, work)
    click.echo(f"added, id {added.id}")
    if added.cancelled:  # what waited for the person (held for quiet hours, queued)
        click.echo(f"{plural(added.cancelled, 'waiting message')} cancelled and refunded")


@stop.command("remove")
@click.argument("account", type=ACCOUNT_NAME)
@click.argument("phone")
@click.pass_context
def stop_remove(ctx: click.Context, account: str, phone: str) -> None:
    """Remove PHONE from ACCOUNT's STOP list.

    \b
    Example:
      smsrelay stop remove demo 0612345678
    """

    async def work(gw: Gateway) -> None:
        number = parse_recipient(phone)
        owner = await _account(gw, account)
        await gw.store.stop_remove_phone(owner.id, number.e164)

    with_gateway(ctx, work)
    click.echo("removed")
