"""Certificate and key files as serve loads them: never a passphrase prompt, and what a
certificate says about its own expiry."""

from __future__ import annotations

import logging
import os
import ssl
import stat
import time
from typing import Any

SOON_DAYS = 14  # a certificate expiring within this is warned about at start and reload


class EncryptedKey(Exception):
    """The key asks for a passphrase."""


def no_passphrase() -> bytes:
    """``load_cert_chain``'s password callback: an encrypted key made OpenSSL ask for its
    passphrase on the terminal, blocking serve (twice, for a connector's key)."""
    raise EncryptedKey(
        "its key is encrypted and serve cannot ask for a passphrase: store it decrypted, "
        "readable by serve's user only (openssl pkey -in KEY -out KEY.plain)"
    )


def holds_a_key(pem_file: str) -> bool:
    try:
        with open(pem_file, "rb") as pem:
            return b"PRIVATE KEY-----" in pem.read(1 << 20)
    except OSError:
        return True  # unreadable: the error OpenSSL gave says so


def certificate_facts(pem_file: str) -> dict[str, Any]:
    """The first certificate's expiry and serial ({} when they cannot be read): for the log,
    since every client fails on an expired one and nothing else would say why."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)  # CPython's own
    if decode is None:
        return {}
    try:
        decoded = decode(pem_file)
        expires = ssl.cert_time_to_seconds(decoded["notAfter"])
    except (OSError, ssl.SSLError, KeyError, ValueError):
        return {}
    return {
        "expires": decoded["notAfter"],
        "expires_at": expires,
        "serial": decoded.get("serialNumber"),
    }


def warn_if_expiring(
    log: logging.Logger, what: str, pem_file: str, now: float | None = None
) -> None:
    """A warning for a certificate expired or expiring within SOON_DAYS."""
    facts = certificate_facts(pem_file)
    if not facts:
        return
    days = (facts["expires_at"] - (time.time() if now is None else now)) / 86400
    if days < SOON_DAYS:
        event = "tls.certificate.expired" if days < 0 else "tls.certificate.expiring"
        extra = {
            "what": what,
            "file": pem_file,
            "expires": facts["expires"],
            "days": round(days, 1),
        }
        log.warning(event, extra=extra)


def warn_if_readable_by_others(log: logging.Logger, what: str, key_file: str) -> None:
    """A warning for a private key every user of the machine can read (mode 644, say; 640
    with a group such as Debian's ssl-cert is the usual way to share one, and is not warned)."""
    try:
        mode = os.stat(key_file).st_mode
    except OSError:
        return  # loading it said what was wrong
    if mode & stat.S_IROTH:
        log.warning(
            "tls.key.readable_by_others",
            extra={"what": what, "file": key_file, "mode": oct(stat.S_IMODE(mode))},
        )
