"""smpps://: our connector and the simulator over TLS on loopback, with a throwaway CA."""

from __future__ import annotations

import logging
import shutil

import pytest

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
