"""The API's certificate: loaded with clear refusals, reloaded on SIGHUP without a restart."""

from __future__ import annotations

import shutil
import ssl
from typing import Any

import pytest

from smsrelay import runtime
from smsrelay.api.certificate import api_tls_context, reload_certificate
from smsrelay.settings import load_settings

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
