"""The rule for callback URLs (``urlDlr``, ``urlResponse``, an account's reply URL): an
absolute http(s) URL with a host, no whitespace or control characters, at most 2,048
characters."""

from __future__ import annotations

from urllib.parse import urlsplit

from yarl import URL

from smsrelay.errors import DomainError

MAX_URL_LENGTH = 2048
MAX_REMEMBERED_URLS = 1024
_VALID_URLS: set[str] = set()  # URLs already found valid: a client sends the same few each time


def check_callback_url(url: str | None, field: str) -> None:
    """Nothing for an absent or empty URL; DomainError ``url.invalid`` naming ``field``."""
    if url is None or url == "" or url in _VALID_URLS:
        return
    _check_new_url(url, field)
    if len(_VALID_URLS) >= MAX_REMEMBERED_URLS:
        _VALID_URLS.clear()
    _VALID_URLS.add(url)


def _check_new_url(url: str, field: str) -> None:
    if len(url) > MAX_URL_LENGTH or any(ch.isspace() for ch in url) or not url.isprintable():
        raise DomainError("url.invalid", f"{field} is not a valid URL", field)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a non-numeric port
    except ValueError as exc:
        raise DomainError("url.invalid", f"{field} is not a valid URL", field) from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname or port == 0:
        raise DomainError("url.invalid", f"{field} must be an http(s) URL with a host", field)
    try:  # the parser the callback is posted with must take it too (it refuses a backslash
        # in the host part, which urlsplit passes): accepted here, it could never be posted
        posted = URL(url)
        posted_host = posted.raw_host
    except (ValueError, TypeError) as exc:
        raise DomainError("url.invalid", f"{field} is not a valid URL", field) from exc
    if not posted_host:
        raise DomainError("url.invalid", f"{field} must be an http(s) URL with a host", field)
