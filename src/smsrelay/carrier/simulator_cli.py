"""``smsrelay smsc``: run the SMSC simulator, or inject a reply into a running one."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

import click

from smsrelay.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from smsrelay.carrier.simulator import SimulatorOptions


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=2775,
    show_default=True,
    type=click.IntRange(0, 65534),  # its control port is the next one by default
    help="SMPP port (0 = any free port).",
)
@click.option(
    "--control-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="HTTP control port [default: port + 1].",
)
@click.option("--delivery-rate", default=0.95, show_default=True, help="Fraction DELIVRD.")
@click.option("--receipt-delay-ms", default=0, show_default=True, help="Delay before receipts.")
@click.option("--resp-delay-ms", default=0, show_default=True, help="Carrier latency per resp.")
@click.option("--reject-rate", default=0.0, show_default=True, help="Fraction ESME_RINVDSTADR.")
@click.option("--throttle", type=float, default=None, help="ESME_RTHROTTLED above N submits/s.")
@click.option("--drop-after", type=int, default=None, help="Drop the link at the Nth submit.")
@click.option(
    "--drop-every", type=int, default=None, help="Close the link at every Nth submit (flaky)."
)
@click.option("--receipt-before-resp", is_flag=True, help="Send receipts before submit_sm_resp.")
@click.option(
    "--id-style",
    type=click.Choice(["hex", "decimal"]),
    default="hex",
    help="How submit_sm_resp writes message ids (default hex).",
)
@click.option(
    "--receipt-id-style",
    type=click.Choice(["hex", "decimal"]),
    default=None,
    help="How receipts write the id (default: as --id-style; the other style plays a carrier "
    "whose receipts write ids unlike its answers).",
)
@click.option("--system-id", default=None, help="Only accept this system_id (default: any).")
@click.option("--password", default=None, help="Password for --system-id.")
@click.option("--seed", type=int, default=None, help="Seed for reproducible randomness.")
@click.option("--tls-cert", default=None, help="PEM certificate: serve smpps:// (TLS).")
@click.option("--tls-key", default=None, help="PEM private key for --tls-cert.")
@click.option(
    "--tls-client-ca", default=None, help="Require client certificates from this CA (mTLS)."
)
@click.option(
    "--inbound-pdu",
    type=click.Choice(["deliver_sm", "data_sm"]),
    default="deliver_sm",
    show_default=True,
    help="PDU that carries receipts and replies to the gateway (some SMSCs use data_sm).",
)
@click.option(
    "--max-records",
    type=click.IntRange(min=2),
    default=1_000_000,
    show_default=True,
    help="submit_sm kept for GET /submits (about 0.5 KB each; the oldest half goes past it).",
)
@click.option(
    "--bind-timeout",
    default=30.0,
    show_default=True,
    help="Seconds a connection may stay open without binding (SMPP session_init_timer).",
)
@click.pass_context
def smsc(ctx: click.Context, /, **options: Any) -> None:
    """Run the built-in SMSC simulator (SMPP 3.4 server) until Ctrl-C.

    \b
    Example:
      smsrelay smsc --port 2775 --resp-delay-ms 20 --receipt-delay-ms 500
      smsrelay smsc --system-id test --password secret --throttle 200
    """
    if ctx.invoked_subcommand is not None:
        return
    # here, not at the top: the simulator and aiohttp cost every other command ~0.4 s to import
    from smsrelay.carrier.simulator import SimulatorOptions

    throttle = options.pop("throttle")
    if options["password"] is not None and options["system_id"] is None:
        # it bound anyone, whatever the password: a test of an ESME's credentials passed
        raise click.BadParameter("--password needs --system-id (the account it protects)")
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        if options[name] is not None and not os.path.isfile(options[name]):
            raise click.BadParameter(f"--{name.replace('_', '-')} {options[name]}: no such file")
    try:
        simulator_options = SimulatorOptions(throttle_per_second=throttle, **options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        _run(simulator_options)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        click.echo(f"smsc: {exc}", err=True)
        sys.exit(1)


def _builtin_control_url(ctx: click.Context) -> str:
    """serve's built-in simulator, on the port the settings give it (flag, env, file)."""
    try:
        settings = load_settings(dict(ctx.find_root().obj or {}))
    except SettingsError as exc:
        click.echo(f"smsc reply: {exc}", err=True)
        sys.exit(2)
    return f"http://127.0.0.1:{settings.builtin_smsc_control_port}"


def _run(options: SimulatorOptions) -> None:
    from smsrelay.carrier.simulator import run_simulator

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(run_simulator(options))
    else:
        uvloop.run(run_simulator(options))


_CONTROL = click.option(
    "--control",
    default=None,
    help="The simulator's control URL (default: serve's built-in one, from the settings).",
)


@smsc.command()
@_CONTROL
@click.option("--from", "source", required=True, help="Sender (the handset), digits.")
@click.option("--to", "destination", required=True, help="Your virtual number, digits.")
@click.argument("text")
@click.pass_context
def reply(
    ctx: click.Context, control: str | None, source: str, destination: str, text: str
) -> None:
    """Inject a reply (MO) from a handset into a running simulator.

    \b
    Example:
      smsrelay smsc reply --from 33612345678 --to 33757000001 "STOP"
    """
    control = control or _builtin_control_url(ctx)
    body = {"from": source, "to": destination, "text": text}
    click.echo(_call(control, "POST", "/reply", body, "smsc reply"))


@smsc.command()
@_CONTROL
@click.option("--to", "destination", required=True, help="The destination, as a send's `to`.")
@click.option("--stat", default=None, help="The receipt's stat: DELIVRD, UNDELIV, EXPIRED, …")
@click.option("--err", type=click.IntRange(0, 999), default=None, help="The receipt's err.")
@click.option(
    "--submit-status", default=None, help="Refuse the parts: an SMPP status (ESME_RINVDSTADR)."
)
@click.option("--no-receipt", is_flag=True, help="Take the parts and never report them.")
@click.option(
    "--receipt-delay-ms", type=click.IntRange(0, 86_400_000), default=None, help="Report later."
)
@click.pass_context
def rule(
    ctx: click.Context,
    control: str | None,
    destination: str,
    stat: str | None,
    err: int | None,
    submit_status: str | None,
    no_receipt: bool,
    receipt_delay_ms: int | None,
) -> None:
    """Decide what happens to every part sent to one number, until `smsc rules --clear`.

    \b
    Example:
      smsrelay smsc rule --to 0612345678 --stat UNDELIV
      smsrelay smsc rule --to 0612345679 --submit-status ESME_RINVDSTADR
      smsrelay smsc rule --to 0612345680 --no-receipt
    """
    body: dict[str, object] = {"to": destination, "receipt": not no_receipt}
    given = {"stat": stat, "err": err, "receipt_delay_ms": receipt_delay_ms}
    body.update({name: value for name, value in given.items() if value is not None})
    if submit_status is not None:
        body["submit_status"] = submit_status
    control = control or _builtin_control_url(ctx)
    click.echo(_call(control, "POST", "/rules", body, "smsc rule"))


@smsc.command()
@_CONTROL
@click.option("--clear", is_flag=True, help="Remove every rule (with --to: that number's).")
@click.option("--to", "destination", default=None, help="With --clear: only this number's.")
@click.pass_context
def rules(ctx: click.Context, control: str | None, clear: bool, destination: str | None) -> None:
    """List the simulator's rules (JSON), or remove them.

    \b
    Example:
      smsrelay smsc rules
      smsrelay smsc rules --clear
    """
    if destination is not None and not clear:  # it listed every rule, silently
        raise click.UsageError("--to goes with --clear (the listing shows every rule)")
    control = control or _builtin_control_url(ctx)
    if not clear:
        click.echo(_call(control, "GET", "/rules", None, "smsc rules"))
        return
    query = "" if destination is None else "?" + urllib.parse.urlencode({"to": destination})
    click.echo(_call(control, "DELETE", "/rules" + query, None, "smsc rules"))


def _call(control: str, method: str, path: str, body: object, name: str) -> str:
    """One request to the control API: its answer, or exit 1 with one line."""
    if not control.startswith(("http://", "https://")):  # "localhost:2776", "nonsense"
        click.echo(f"error: {name}: {control!r} is not a URL (http://HOST:PORT)", err=True)
        sys.exit(1)
    data = None if body is None else json.dumps(body).encode()
    try:
        request = urllib.request.Request(
            control.rstrip("/") + path,
            data=data,
            headers={"Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=15) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        click.echo(f"error: {name}: {exc.code} {exc.read().decode()}", err=True)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"error: {name}: cannot reach {control}: {exc}", err=True)
    except ValueError as exc:  # "http://" and nothing more
        click.echo(f"error: {name}: {control!r} is not a URL: {exc}", err=True)
    except http.client.HTTPException:  # an SMPP port, not the control API's
        click.echo(
            f"error: {name}: {control} does not answer HTTP: is it the SMPP port? The control "
            "API listens on the next port by default",
            err=True,
        )
    sys.exit(1)
