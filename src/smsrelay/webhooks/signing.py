"""Callback signatures: HMAC-SHA256 over ``"<timestamp>." + body``, hex encoded.

Every callback of an account that has a webhook secret carries two headers::

    X-Smsrelay-Timestamp: 1767225600
    X-Smsrelay-Signature: v1=<64 hex digits>

Checking them on the receiving side (Python, standard library only)::

    import hashlib, hmac, time

    def is_from_smsrelay(secret: str, headers, body: bytes, tolerance: int = 300) -> bool:
        timestamp = headers.get("X-Smsrelay-Timestamp", "")
        signature = headers.get("X-Smsrelay-Signature", "").removeprefix("v1=")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
            return False  # missing, malformed or replayed
        signed = timestamp.encode() + b"." + body  # the raw body, before any JSON parsing
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), signature.encode())

The timestamp is part of the signed text, so an old callback replayed later fails the check;
``X-Smsrelay-Id`` stays the same across retries of one callback, so receivers can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Smsrelay-Timestamp"
SIGNATURE_HEADER = "X-Smsrelay-Signature"
VERSION = "v1"
DEFAULT_TOLERANCE = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: f"{VERSION}={sign(secret, timestamp, body)}",
    }


def verify(
    secret: str,
    timestamp: int,
    body: bytes,
    header: str,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> bool:
    """True when ``header`` (``v1=<hex>``) signs ``body`` at ``timestamp`` and ``timestamp`` is
    within ``tolerance`` seconds of ``now`` (either way)."""
    if abs(now - timestamp) > tolerance:
        return False
    scheme, _, given = header.partition("=")
    if scheme != VERSION:
        return False
    expected = sign(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, given.strip().encode())
