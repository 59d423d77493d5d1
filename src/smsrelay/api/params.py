"""Reading request parameters the way SMS Partner's clients send them.

A body that parses as a JSON object is JSON whatever its Content-Type says (the seed's PHP and
Python examples send JSON as a form or with no type at all); otherwise it is form fields.
Parameter names match case-insensitively (the official Go SDK sends ``APIKey``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from smsrelay.errors import DomainError

Params = dict[str, Any]


class MalformedBody(DomainError):
    """The body could not be read at all (SMS Partner's code 90)."""

    def __init__(self, message: str) -> None:
        super().__init__("body.malformed", message)


def read_params(body: bytes, query: Mapping[str, str]) -> tuple[Params, bool]:
    """Merge query and body parameters (body wins), keys lower-cased.

    Returns the parameters and whether the body was form-encoded (the escaped-quote rule
    applies to form fields only: in JSON an unescaped quote already breaks the body).
    """
    params: Params = {k.lower(): v for k, v in query.items()}
    body_params, is_form = _read_body(body)
    params.update(body_params)
    return params, is_form


UTF8_BOM = b"\xef\xbb\xbf"


def _read_body(body: bytes) -> tuple[Params, bool]:
    # .NET's and PowerShell's UTF-8 writers put a byte-order mark first: not part of the data.
    stripped = body.removeprefix(UTF8_BOM).strip()
    if not stripped:
        return {}, False
    if stripped[:1] in (b"{", b"["):
        return _read_json(stripped), False
    return _read_form(stripped), True


def _read_json(body: bytes) -> Params:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"malformed JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise MalformedBody("the JSON body must be an object")
    return {str(k).lower(): v for k, v in value.items()}


def _read_form(body: bytes) -> Params:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody("the body is not valid UTF-8") from exc
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody("the form body could not be read") from exc
    return {k.lower(): v for k, v in pairs}


def plain_param(params: Params, name: str) -> str | None:
    """A parameter of the read endpoints as text; absent, an object or a list -> None."""
    value = params.get(name.lower())
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def text_param(params: Params, name: str, errors: list[DomainError]) -> str | None:
    """A parameter as text: numbers are accepted as their digits, objects are refused."""
    value = params.get(name.lower())
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, str):
        return value
    errors.append(DomainError(f"{name}.type", f"{name} must be a string", name))
    return None
