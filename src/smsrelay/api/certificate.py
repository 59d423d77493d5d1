"""The API's own certificate (``http_tls_cert``, ``http_tls_key``): loaded at start, and
again on SIGHUP (a renewal needs no restart)."""

from __future__ import annotations

import logging
import ssl

from smsrelay.api.http_server import HttpServer
from smsrelay.settings import SettingsError
from smsrelay.tls_files import (
    EncryptedKey,
    certificate_facts,
    holds_a_key,
    no_passphrase,
    warn_if_expiring,
    warn_if_readable_by_others,
)

log = logging.getLogger("smsrelay.api")
# Forward secrecy and AEAD only for TLS 1.2 (1.3's suites are all so): Debian's Python takes
# OpenSSL's default list, which also offered static-RSA and CBC-SHA1 suites.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def api_tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server context for ``cert``'s chain and its key (None without a certificate); a file
    that cannot be read, a key that does not match or is encrypted raise SettingsError with
    the reason."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2 or newer
    context.set_ciphers(TLS12_CIPHERS)
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except EncryptedKey as exc:
        raise SettingsError(f"http_tls_cert: cannot load {_files(cert, key)}: {exc}") from exc
    except (OSError, ssl.SSLError) as exc:
        if not key and not holds_a_key(cert):  # OpenSSL says "PEM lib"
            reason = "it holds no private key: set http_tls_key to the key's file"
            raise SettingsError(f"http_tls_cert: cannot load {cert}: {reason}") from exc
        raise SettingsError(f"http_tls_cert: cannot load {_files(cert, key)}: {exc}") from exc
    warn_if_expiring(log, "http_tls_cert", cert)
    warn_if_readable_by_others(log, "http_tls_key", key or cert)
    return context


def _files(cert: str, key: str | None) -> str:
    """Both files, when the key is apart: OpenSSL's "PEM lib" does not say which failed."""
    return f"{cert} with http_tls_key {key}" if key and key != cert else cert


def reload_certificate(server: HttpServer, cert: str | None, key: str | None) -> None:
    """Load the files again into a new context and hand it to the server: connections from
    now on get the renewed certificate, those open keep theirs. Files that cannot be loaded
    leave the old certificate serving (a new context, not the live one reloaded in place: a
    key refused after its certificate was taken left the two mismatched)."""
    if server.tls is None:
        log.info("api.tls.reload_skipped", extra={"reason": "the API serves plain http"})
        return
    try:
        context = api_tls_context(cert, key)
    except SettingsError as exc:
        log.error("api.tls.reload_failed", extra={"file": cert, "error": str(exc)})
        return
    assert context is not None  # server.tls is set only with a certificate
    server.tls = context
    log.info("api.tls.reloaded", extra={"file": cert, **certificate_fields(cert)})


def certificate_fields(cert: str | None) -> dict[str, object]:
    """The certificate's expiry and serial, as a log line's fields."""
    facts = certificate_facts(cert) if cert else {}
    return {k: facts[k] for k in ("expires", "serial") if k in facts}
