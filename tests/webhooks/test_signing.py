"""Callback signatures: known values, round trips, refusals, and the README snippet itself."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import textwrap
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsrelay.webhooks import signing
from smsrelay.webhooks.signing import sign, signature_headers, verify

SECRET = "whsec_test"
TS = 1_767_225_600
BODY = b'{"messageId": 42, "status": "Delivered"}'


def test_sign_is_hex_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"whsec_test", b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, TS, BODY) == expected
    assert re.fullmatch(r"[0-9a-f]{64}", expected)


def test_known_vector() -> None:
    # From another implementation: printf '0.' | openssl dgst -sha256 -hmac key
    expected = "85841b4efc3cd7776c3c8f9b7cca9e281c550e5d19889d78e9e669c6337f000d"
    assert sign("key", 0, b"") == expected


def test_signature_headers() -> None:
    assert signature_headers(SECRET, TS, BODY) == {
        "X-Smsrelay-Timestamp": "1767225600",
        "X-Smsrelay-Signature": f"v1={sign(SECRET, TS, BODY)}",
    }


def test_verify_accepts_its_own_signature() -> None:
    header = signature_headers(SECRET, TS, BODY)["X-Smsrelay-Signature"]
    assert verify(SECRET, TS, BODY, header, now=TS)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "now"),
    [
        ("other", TS, BODY, TS),  # wrong secret
        (SECRET, TS, BODY + b" ", TS),  # body changed
        (SECRET, TS + 1, BODY, TS),  # timestamp changed
        (SECRET, TS, BODY, TS + 301),  # too old: a replay
        (SECRET, TS, BODY, TS - 301),  # from the future
    ],
)
def test_verify_refuses(secret: str, timestamp: int, body: bytes, now: float) -> None:
    header = signature_headers(SECRET, TS, BODY)["X-Smsrelay-Signature"]
    assert not verify(secret, timestamp, body, header, now=now)


def test_tolerance_is_inclusive_and_adjustable() -> None:
    header = f"v1={sign(SECRET, TS, BODY)}"
    assert verify(SECRET, TS, BODY, header, now=TS + 300)
    assert not verify(SECRET, TS, BODY, header, now=TS + 61, tolerance=60)


@pytest.mark.parametrize(
    "header", ["", "v1=", "v0=" + "0" * 64, "garbage", sign(SECRET, TS, BODY), "v1=é"]
)
def test_verify_refuses_malformed_headers_without_raising(header: str) -> None:
    assert not verify(SECRET, TS, BODY, header, now=TS)


@given(secret=st.text(min_size=1), timestamp=st.integers(0, 2**40), body=st.binary())
def test_round_trip(secret: str, timestamp: int, body: bytes) -> None:
    header = signature_headers(secret, timestamp, body)["X-Smsrelay-Signature"]
    assert verify(secret, timestamp, body, header, now=timestamp)


def _readme_snippet() -> dict[str, Any]:
    """The indented block after "standard library only)::", run as a module."""
    after = (signing.__doc__ or "").split("standard library only)::\n", 1)[1]
    block = itertools.takewhile(lambda line: not line or line.startswith("    "), after.split("\n"))
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent("\n".join(block)), namespace)
    return namespace


def test_the_receiver_snippet_in_the_docstring_works(monkeypatch: pytest.MonkeyPatch) -> None:
    snippet = _readme_snippet()
    monkeypatch.setattr(snippet["time"], "time", lambda: TS + 10)
    headers = signature_headers(SECRET, TS, BODY)
    assert snippet["is_from_smsrelay"](SECRET, headers, BODY)
    assert not snippet["is_from_smsrelay"]("other", headers, BODY)
    assert not snippet["is_from_smsrelay"](SECRET, headers, BODY + b"x")
    assert not snippet["is_from_smsrelay"](SECRET, {}, BODY)
