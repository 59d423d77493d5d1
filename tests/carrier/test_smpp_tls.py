"""smpps://: our connector and the simulator over TLS on loopback, with a throwaway CA."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from smsrelay.carrier.smpp_client import SmppConnector, SmppLinkConfig, TlsFilesError
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
