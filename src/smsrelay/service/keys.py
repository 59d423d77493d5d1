"""API keys: random, shown once, stored only as a SHA-256 hash.

A fast hash is enough: the keys are 160 bits of randomness, not guessable passwords.
"""

from __future__ import annotations

import hashlib
import secrets


def new_api_key() -> str:
    return secrets.token_hex(20)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_webhook_secret() -> str:
    return secrets.token_hex(32)
