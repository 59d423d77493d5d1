"""The API's certificate: loaded with clear refusals, reloaded on SIGHUP without a restart."""

from __future__ import annotations

import logging
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest

from smsrelay import runtime
from smsrelay.api.certificate import api_tls_context, reload_certificate
from smsrelay.settings import load_settings
from smsrelay.tls_files import certificate_facts, warn_if_expiring

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class Server:
    """What a reload needs of the HTTP server: the context its handshakes use."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls


def test_a_reload_hands_the_server_a_new_context_and_keeps_it_on_bad_files(
    certificate: tuple[str, str], tmp_path: Any
) -> None:
    first = api_tls_context(*certificate)
    server = Server(first)
    reload_certificate(server, *certificate)  # type: ignore[arg-type]
    assert server.tls is not first and server.tls is not None  # swapped, not loaded in place
    renewed = server.tls
    broken = tmp_path / "broken.pem"
    broken.write_text("half-written")
    reload_certificate(server, str(broken), None)  # type: ignore[arg-type]
    assert server.tls is renewed


def test_a_reload_asked_while_serve_starts_is_done_once_it_serves(
    certificate: tuple[str, str],
) -> None:
    # Dropped before: a renewal's hook during a restart left the old certificate serving.
    cert, key = certificate
    settings = load_settings({"http_tls_cert": cert, "http_tls_key": key}, env={})
    reloads = runtime._Reloads(settings)
    reloads.asked()  # serve has read the files, and is still binding its SMSC links
    first = api_tls_context(cert, key)
    server = Server(first)
    reloads.serving(server)  # type: ignore[arg-type]
    assert server.tls is not first


def test_tls12_offers_forward_secret_aead_suites_only(certificate: tuple[str, str]) -> None:
    # Debian's Python takes OpenSSL's default list: static-RSA and CBC-SHA1 suites were taken.
    context = api_tls_context(*certificate)
    assert context is not None
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(name.startswith("ECDHE-") for name in tls12)
    assert not [name for name in tls12 if "CBC" in name or name.endswith("-SHA")]


def test_an_expired_or_expiring_certificate_is_warned_about(
    certificate: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Served without a word: every client failed, and the log said all was well.
    cert, _ = certificate  # valid for two days
    facts = certificate_facts(cert)
    assert facts["serial"] and facts["expires"]
    log = logging.getLogger("test.tls")
    warn_if_expiring(log, "http_tls_cert", cert, now=facts["expires_at"] - 30 * 86400)
    warn_if_expiring(log, "http_tls_cert", cert, now=facts["expires_at"] - 86400)
    warn_if_expiring(log, "http_tls_cert", cert, now=facts["expires_at"] + 2 * 86400)
    events = [(r.getMessage(), r.__dict__["days"]) for r in caplog.records if r.name == "test.tls"]
    assert events == [("tls.certificate.expiring", 1.0), ("tls.certificate.expired", -2.0)]


def test_a_key_every_user_can_read_is_warned_about(
    tmp_path: Path, certificate: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = certificate
    copy = tmp_path / "key.pem"
    copy.write_bytes(Path(key).read_bytes())
    copy.chmod(0o640)  # a group such as ssl-cert: the usual way to share it
    api_tls_context(cert, str(copy))
    assert not [r for r in caplog.records if r.getMessage() == "tls.key.readable_by_others"]
    copy.chmod(0o644)
    api_tls_context(cert, str(copy))
    [line] = [r for r in caplog.records if r.getMessage() == "tls.key.readable_by_others"]
    assert line.__dict__["file"] == str(copy) and line.__dict__["mode"] == "0o644"
