"""``smsrelay smsc``: run the SMSC simulator, or inject a reply into a running one."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
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
@click.option("--id-style", type=click.Choice(["hex", "decimal"]), default="hex")
@click.option("--receipt-id-style", type=click.Choice(["hex", "decimal"]), default=None)
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


@smsc.command()
@click.option(
    "--control",
    default=None,
    help="The simulator's control URL (default: serve's built-in one, from the settings).",
)
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
    body = json.dumps({"from": source, "to": destination, "text": text}).encode()
    request = urllib.request.Request(
        control.rstrip("/") + "/reply",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            click.echo(response.read().decode())
    except urllib.error.HTTPError as exc:
        click.echo(f"smsc reply: {exc.code} {exc.read().decode()}", err=True)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"smsc reply: cannot reach {control}: {exc}", err=True)
        sys.exit(1)
