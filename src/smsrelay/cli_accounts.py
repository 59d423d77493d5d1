"""`smsrelay accounts ...` and `smsrelay numbers ...`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import click

from smsrelay.cli_support import (
    ACCOUNT_NAME,
    camel_case,
    emit,
    fail,
    plural,
    redacted,
    settings_from,
    with_gateway,
)
from smsrelay.domain.ip_access import network_text, networks_text
from smsrelay.domain.pricing import eur_to_micros, format_eur
from smsrelay.errors import DomainError
from smsrelay.service import accounts as account_service
from smsrelay.service.gateway import Gateway
from smsrelay.store.records import Account, NumberRecord
from smsrelay.webhooks.address_safety import UnsafeAddress, ensure_safe_literal


def _describe(account: Account) -> dict[str, Any]:
    return {
        "name": account.name,
        "credit": format_eur(account.credit_micros),
        "currency": "EUR",
        "disabled": account.disabled,
        "quietHours": account.quiet_hours,
        "region": account.region,
        "marketing": account.marketing,
        "replyUrl": account.reply_url and redacted(account.reply_url),
        "webhookSecret": bool(account.webhook_secret),
        "reassembleReplies": account.reassemble_replies,
        "allowedIps": [network_text(n) for n in account.allowed_ips],  # []: from anywhere
    }


def _line(account: Account) -> str:
    flags = [
        "disabled" if account.disabled else "active",
        f"quiet-hours {'on' if account.quiet_hours else 'off'}",
        account.region,
    ]
    if account.marketing:
        flags.append("marketing")
    if account.allowed_ips:
        flags.append(f"allowed-ips {networks_text(account.allowed_ips)}")
    return f"{account.name}\t{format_eur(account.credit_micros)} EUR\t{', '.join(flags)}"


@click.group()
def accounts() -> None:
    """Create and manage accounts (API keys, credit, quiet hours)."""


@accounts.command("create")
@click.argument("name", type=ACCOUNT_NAME)
@click.option("--credit", default="0", help="Initial credit in EUR.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (key apiKey).")
@click.pass_context
def create(ctx: click.Context, name: str, credit: str, as_json: bool) -> None:
    """Create an account and print its API key (shown this once only).

    \b
    Example:
      smsrelay accounts create shop --credit 50 --json
    """

    _check_before_opening(name, credit)  # a refused create leaves no new database behind

    async def work(gw: Gateway) -> account_service.CreatedAccount:
        return await account_service.create_account(gw.store, name, credit, gw.clock)

    created = with_gateway(ctx, _guard_money(work), creates=True)
    payload = {
        "name": created.account.name,
        "apiKey": created.api_key,
        "credit": format_eur(created.account.credit_micros),
    }
    emit(payload, as_json, lambda p: f"account {p['name']} created\napiKey={p['apiKey']}")


def _check_before_opening(name: str, credit: str) -> None:
    try:
        account_service.check_new_account(name, credit)
    except DomainError as exc:
        fail(exc.message, code=2)
    except ValueError as exc:
        fail(f"invalid amount: {exc}", code=2)


def _guard_money(work: Any) -> Any:
    async def wrapped(gw: Gateway) -> Any:
        try:
            return await work(gw)
        except ValueError as exc:  # a usage error, as for `accounts credit`
            fail(f"invalid amount: {exc}", code=2)

    return wrapped


@accounts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List accounts with their credit and settings.

    \b
    Example:
      SMSRELAY_DATA_DIR=/srv/sms smsrelay accounts list
    """

    async def work(gw: Gateway) -> list[Account]:
        return await gw.store.list_accounts()

    found = with_gateway(ctx, work)
    if as_json:
        emit([_describe(a) for a in found], True, str)
    else:
        click.echo("\n".join(_line(a) for a in found) or "no accounts")


@accounts.command()
@click.argument("name", type=ACCOUNT_NAME)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one account and its numbers.

    \b
    Example:
      smsrelay accounts show demo
    """

    async def work(gw: Gateway) -> tuple[Account, list[NumberRecord]]:
        account = await gw.store.find_account(name)
        if account is None:
            fail(f"no account named {name!r}")
        assert account is not None
        return account, await gw.store.numbers_of(account.id)

    account, owned = with_gateway(ctx, work)
    info = {**_describe(account), "numbers": [n.msisdn for n in owned]}
    emit(info, as_json, lambda i: "\n".join(f"{k}: {_human_field(k, v)}" for k, v in i.items()))


def _human_field(key: str, value: Any) -> str:
    if key == "allowedIps" and not value:
        return "any"  # no restriction, not "none allowed"
    return _human(value)


def _human(value: Any) -> str:
    """yes/no, a dash for nothing, lists joined: not Python's True/None/['...']."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == []:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


@accounts.command("set")
@click.argument("name", type=ACCOUNT_NAME)
@click.option("--quiet-hours", type=click.Choice(["on", "off"]), help="Marketing quiet hours.")
@click.option(
    "--region",
    type=click.Choice(["metropole", "alsace-moselle"]),
    help="Public holidays to observe.",
)
@click.option(
    "--marketing",
    type=click.Choice(["on", "off"]),
    help="Marketing account: the STOP mention is added to every message.",
)
@click.option("--reply-url", help="Default URL for replies ('' to clear).")
@click.option(
    "--reassemble-replies",
    type=click.Choice(["on", "off"]),
    help="One callback per long reply instead of one per part.",
)
@click.option("--webhook-secret", help="HMAC secret for callbacks; 'generate' makes one.")
@click.option(
    "--allowed-ips",
    help="Addresses and CIDR networks the API key may be used from, comma-separated "
    "(others get code 96); '' or 'any': from anywhere.",
)
@click.pass_context
def set_(
    ctx: click.Context,
    name: str,
    quiet_hours: str | None,
    region: str | None,
    marketing: str | None,
    reply_url: str | None,
    reassemble_replies: str | None,
    webhook_secret: str | None,
    allowed_ips: str | None,
) -> None:
    """Change an account's settings.

    \b
    Example:
      smsrelay accounts set shop --quiet-hours off --reply-url https://example.com/sms
      smsrelay accounts set shop --allowed-ips "203.0.113.7,198.51.100.0/24"
    """
    try:
        changes = account_service.account_changes(
            quiet_hours=_on(quiet_hours),
            region=region,
            marketing=_on(marketing),
            reply_url=reply_url,
            reassemble_replies=_on(reassemble_replies),
            webhook_secret=webhook_secret,
            allowed_ips=allowed_ips,
        )
    except DomainError as exc:  # a value no account can have: a usage error
        fail(exc.message, code=2)
    if not changes:
        fail("nothing to change: give at least one option (see --help)", code=2)

    async def work(gw: Gateway) -> Account:
        account = await gw.store.update_account(name, changes)
        if changes.get("quiet_hours") == 0:  # what they held leaves now, not at 08:00
            released = await account_service.release_held(gw.store, account.id, beside_serve=True)
            if released:
                click.echo(f"{released} part(s) held for quiet hours leave now", err=True)
        return account

    account = with_gateway(ctx, work)
    click.echo(_line(account))
    described = _describe(account)
    for column in changes:  # what took: every option, not only the summary line's three
        key = camel_case(column)
        if key != "webhookSecret":
            click.echo(f"{key}: {_human_field(key, described[key])}")
    if webhook_secret == "generate":
        click.echo(f"webhookSecret={changes['webhook_secret']}")
    elif webhook_secret is not None:
        click.echo(f"webhookSecret: {'set' if webhook_secret else 'cleared'}")
    if reply_url:
        _warn_if_refused(reply_url, settings_from(ctx).private_webhooks_allowed)


def _warn_if_refused(url: str, allow_private: bool) -> None:
    """A reply URL serve will refuse at every callback (a private address on a gateway
    serving a real SMSC) was taken without a word: each reply then failed for good."""
    host = urlsplit(url).hostname or ""
    try:
        ensure_safe_literal(host, allow_private)
    except UnsafeAddress as exc:
        click.echo(
            f"warning: {exc}: serve refuses callbacks there (allow_private_webhooks)", err=True
        )


def _on(value: str | None) -> bool | None:
    return None if value is None else value == "on"


@accounts.command(context_settings={"ignore_unknown_options": True})
@click.argument("name", type=ACCOUNT_NAME)
@click.argument("amount")
@click.pass_context
def credit(ctx: click.Context, name: str, amount: str) -> None:
    """Add (+EUR) or remove (-EUR) credit.

    \b
    Example:
      smsrelay accounts credit shop +25
    """
    try:
        micros = eur_to_micros(amount)  # "+25" is a number; "++25" and "+-5" are not
    except ValueError as exc:
        fail(f"invalid amount {amount!r} ({exc}): use e.g. +25 or -3.5", code=2)

    async def work(gw: Gateway) -> Account:
        return await gw.store.add_credit(name, micros)

    click.echo(_line(with_gateway(ctx, work)))


@accounts.command()
@click.argument("name", type=ACCOUNT_NAME)
@click.pass_context
def disable(ctx: click.Context, name: str) -> None:
    """Disable an account: its sends are refused with code 20.

    \b
    Example:
      smsrelay accounts disable shop
    """
    _set_disabled(ctx, name, True)


@accounts.command()
@click.argument("name", type=ACCOUNT_NAME)
@click.pass_context
def enable(ctx: click.Context, name: str) -> None:
    """Enable a disabled account again.

    \b
    Example:
      smsrelay accounts enable shop
    """
    _set_disabled(ctx, name, False)


def _set_disabled(ctx: click.Context, name: str, disabled: bool) -> None:
    async def work(gw: Gateway) -> tuple[Account, int]:
        account = await gw.store.update_account(name, {"disabled": int(disabled)})
        snapshot = await gw.store.account_snapshot(account.id)
        return account, 0 if snapshot is None else snapshot.waiting

    account, waiting = with_gateway(ctx, work)
    click.echo(_line(account))
    if disabled and waiting:  # a leaked key, an abusive sender: what it queued still leaves
        click.echo(
            f"{plural(waiting, 'message')} it queued before still leave (held ones at their "
            "time): cancel them with its key, GET /v1/message-cancel"
        )


@accounts.command("rotate-key")
@click.argument("name", type=ACCOUNT_NAME)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def rotate_key(ctx: click.Context, name: str, as_json: bool) -> None:
    """Replace an account's API key; the old one stops working at once.

    \b
    Example:
      smsrelay accounts rotate-key shop
    """

    async def work(gw: Gateway) -> str:
        return await account_service.rotate_key(gw.store, name)

    key = with_gateway(ctx, work)
    emit({"name": name, "apiKey": key}, as_json, lambda p: f"apiKey={p['apiKey']}")


@click.group()
def numbers() -> None:
    """Attach virtual (long) numbers to accounts."""


@numbers.command("add")
@click.argument("account", type=ACCOUNT_NAME)
@click.argument("msisdn")
@click.option("--connector", default="default", help="The SMPP connector that serves it.")
@click.pass_context
def add_number(ctx: click.Context, account: str, msisdn: str, connector: str) -> None:
    """Give ACCOUNT the virtual number MSISDN (international form).

    \b
    Example:
      smsrelay numbers add shop 33757000002
    """

    known = {account_service.DEFAULT_CONNECTOR}
    known |= {c.name for c in settings_from(ctx).connectors}
    if connector not in known:  # its messages would wait for ever for a link that never comes
        fail(
            f"no connector {connector!r} in the configuration (known: {', '.join(sorted(known))});"
            f" add a [connectors.{connector}] table first",
            code=2,
        )

    async def work(gw: Gateway) -> NumberRecord:
        return await account_service.add_number(gw.store, account, msisdn, connector, gw.clock)

    record = with_gateway(ctx, work)
    click.echo(f"{record.msisdn}\t{record.account_name}\t{record.connector}")


@numbers.command("list")
@click.argument("account", type=ACCOUNT_NAME, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.pass_context
def list_numbers(ctx: click.Context, account: str | None, as_json: bool) -> None:
    """List virtual numbers, of one account or all.

    \b
    Example:
      smsrelay numbers list shop
    """

    async def work(gw: Gateway) -> list[NumberRecord]:
        return await gw.store.list_numbers(account)

    found = with_gateway(ctx, work)
    rows = [
        {"msisdn": r.msisdn, "account": r.account_name, "connector": r.connector} for r in found
    ]
    emit(
        rows,
        as_json,
        lambda rs: (
            "\n".join(f"{r['msisdn']}\t{r['account']}\t{r['connector']}" for r in rs)
            or "no numbers"
        ),
    )


@numbers.command("remove")
@click.argument("msisdn")
@click.pass_context
def remove_number(ctx: click.Context, msisdn: str) -> None:
    """Detach a virtual number from its account.

    \b
    Example:
      smsrelay numbers remove 33757000002
    """

    async def work(gw: Gateway) -> int:
        return await account_service.remove_number(gw.store, msisdn)

    unfinished = with_gateway(ctx, work)
    click.echo(f"removed {msisdn}")
    if unfinished:
        click.echo(
            f"{plural(unfinished, 'message')} from it not finished: queued ones still leave "
            "from it, and replies to it now reach no account (cancel what should not leave: "
            "GET /v1/message-cancel)"
        )
