"""smpps://: our connector and the simulator over TLS on loopback, with a throwaway CA."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from smsrelay.carrier.smpp_client import (
    SmppConnector,
    SmppLinkConfig,
    TlsFilesError,
    client_tls,
)
from smsrelay.errors import TransientError

from .conftest import Inbox, MakeConnector, MakeSimulator, eventually, part

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


async def test_submit_and_receipt_over_tls(
    make_simulator: MakeSimulator, make_connector: MakeConnector, certificate: tuple[str, str]
) -> None:
    cert, key = certificate
    simulator = await make_simulator(tls_cert=cert, tls_key=key)
    inbox = Inbox()
    connector = await make_connector(simulator, inbox, tls=True, tls_ca=cert)
    outcome = await connector.submit(part(payload=b"over tls"))
    assert outcome.status == 0
    assert simulator.received[0].short_message == b"over tls"
    await eventually(lambda: len(inbox.receipts) == 1, what="receipt over tls")


async def test_an_untrusted_certificate_never_binds(
    make_simulator: MakeSimulator,
    make_connector: MakeConnector,
    certificate: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = certificate
    simulator = await make_simulator(tls_cert=cert, tls_key=key)
    caplog.set_level(logging.WARNING, logger="smsrelay.carrier.smpp")
    connector = await make_connector(simulator, tls=True, wait=False)  # system CAs only
    await eventually(
        lambda: any(
            "CERTIFICATE_VERIFY_FAILED" in str(r.__dict__.get("error", "")) for r in caplog.records
        ),
        what="a refused TLS handshake",
    )
    with pytest.raises(TransientError):
        await connector.submit(part())
    assert simulator.stats.binds == 0 and not connector.is_up


async def test_mutual_tls_binds_with_the_client_certificate_and_not_without(
    make_simulator: MakeSimulator,
    make_connector: MakeConnector,
    certificate: tuple[str, str],
    client_certificate: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = certificate
    client_cert, client_key = client_certificate
    simulator = await make_simulator(tls_cert=cert, tls_key=key, tls_client_ca=client_cert)
    caplog.set_level(logging.WARNING, logger="smsrelay.carrier.smpp")
    anonymous = await make_connector(simulator, tls=True, tls_ca=cert, wait=False)
    await eventually(
        lambda: any(r.__dict__.get("error") for r in caplog.records),
        what="a handshake refused for want of a client certificate",
    )
    assert not anonymous.is_up and simulator.stats.binds == 0
    identified = await make_connector(
        simulator, tls=True, tls_ca=cert, tls_cert=client_cert, tls_key=client_key
    )
    outcome = await identified.submit(part(payload=b"mutual"))
    assert outcome.status == 0 and simulator.received[-1].short_message == b"mutual"


def test_tls_files_are_checked_when_the_connector_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need an smpps://"):
        SmppLinkConfig.from_url("smpp://a:b@127.0.0.1:2775?tls_cert=/x.pem")
    with pytest.raises(ValueError, match="tls_key without tls_cert"):
        SmppLinkConfig.from_url("smpps://a:b@127.0.0.1:2775?tls_key=/x.pem")
    missing = SmppLinkConfig.from_url(f"smpps://a:b@127.0.0.1:2775?tls_cert={tmp_path}/no.pem")
    with pytest.raises(TlsFilesError, match="connector orange: cannot load its TLS files") as err:
        SmppConnector("orange", missing, Inbox())
    assert f"{tmp_path}/no.pem" in str(err.value)  # which file (the config review)


def test_an_encrypted_client_key_is_refused_at_once_not_asked_for(
    tmp_path: Path, client_certificate: tuple[str, str]
) -> None:
    # OpenSSL asked for the passphrase on serve's terminal (twice) and serve waited there.
    cert, key = client_certificate
    encrypted = tmp_path / "esme-enc.key"
    subprocess.run(
        ["openssl", "pkey", "-in", key, "-aes256", "-passout", "pass:x", "-out", str(encrypted)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = SmppLinkConfig.from_url(
        f"smpps://a:b@127.0.0.1:2775?tls_cert={cert}&tls_key={encrypted}"
    )
    with pytest.raises(TlsFilesError, match="its key is encrypted") as err:
        client_tls("orange", config)
    assert str(encrypted) in str(err.value)


def test_a_client_certificate_without_its_key_says_so(client_certificate: tuple[str, str]) -> None:
    cert, _ = client_certificate  # the key apart, and not named
    config = SmppLinkConfig.from_url(f"smpps://a:b@127.0.0.1:2775?tls_cert={cert}")
    with pytest.raises(TlsFilesError, match="tls_cert holds no private key: set tls_key"):
        client_tls("orange", config)


@pytest.mark.parametrize(
    ("tls", "event", "says"),
    [
        (
            True,
            "smpp.connect.failed",
            "no answer within 0.3 s (TCP connect or TLS handshake; if this SMSC speaks plain "
            "SMPP, its URL is smpp://)",
        ),
        (False, "smpp.bind.failed", "(if this SMSC speaks TLS, its URL is smpps://)"),
    ],
)
async def test_an_smsc_that_never_answers_is_logged_with_the_reason_and_the_peer(
    make_connector: MakeConnector,
    caplog: pytest.LogCaptureFixture,
    tls: bool,
    event: str,
    says: str,
) -> None:
    # A TLS handshake that never came was logged with error "" (a timeout's own text), and a
    # clear-text bind a TLS SMSC dropped gave no hint: smpp:// and smpps:// mixed up.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not tls:
            await reader.read(16)  # the bind: a TLS server drops what is not a handshake
        else:
            await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    caplog.set_level(logging.WARNING, logger="smsrelay.carrier.smpp")
    try:
        await make_connector(port, tls=tls, response_timeout=0.3, wait=False)

        def logged() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage() == event]

        await eventually(lambda: bool(logged()), what=event)
        record = logged()[0].__dict__
        assert says in record["error"] and record["peer"] == f"127.0.0.1:{port}"
    finally:
        server.close()


def test_a_connectors_client_certificate_running_out_is_warned_about_at_start(
    client_certificate: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from smsrelay import runtime

    cert, key = client_certificate  # valid for two days
    runtime._link_config("orange", f"smpps://a:b@127.0.0.1:2775?tls_cert={cert}&tls_key={key}", {})
    [line] = [r for r in caplog.records if r.getMessage() == "tls.certificate.expiring"]
    assert line.__dict__["what"] == "connector orange tls_cert" and line.__dict__["days"] < 3
