"""Reading request parameters the way SMS Partner's clients send them.

A body that parses as a JSON object is JSON whatever its Content-Type says (the seed's PHP and
Python examples send JSON as a form or with no type at all); otherwise it is form fields.
Parameter names match case-insensitively (the official Go SDK sends ``APIKey``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson

from smsrelay.errors import DomainError

Params = dict[str, Any]


class MalformedBody(DomainError):
    """The body could not be read at all (SMS Partner's code 90)."""

    def __init__(self, message: str) -> None:
        super().__init__("body.malformed", message)


def read_params(body: bytes, raw_query: str, charset: str | None = None) -> tuple[Params, bool]:
    """Merge query and body parameters (body wins), keys lower-cased.

    Returns the parameters and whether the body was form-encoded (the escaped-quote rule
    applies to form fields only: in JSON an unescaped quote already breaks the body). A form
    is read in the ``charset`` its Content-Type names (UTF-8 if none).
    """
    params = _read_pairs(raw_query, "utf-8", "the query string") if raw_query else {}
    body_params, is_form = _read_body(body, charset or "utf-8")
    params.update(body_params)
    return params, is_form


UTF8_BOM = b"\xef\xbb\xbf"
# .NET's Encoding.Unicode writes these: read as a form, such a body said "apiKey is required"
# (UTF-16 either way round; UTF-32 little-endian starts as UTF-16's, big-endian does not)
WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


def _read_body(body: bytes, charset: str) -> tuple[Params, bool]:
    # .NET's and PowerShell's UTF-8 writers put a byte-order mark first: not part of the data.
    stripped = body.removeprefix(UTF8_BOM).strip()
    if stripped.startswith(WIDE_BOMS) and not charset.lower().startswith(("utf-16", "utf-32")):
        raise MalformedBody(
            "the body is UTF-16 or UTF-32 (it starts with a byte-order mark): send UTF-8"
        )
    if not stripped:
        return {}, False
    if stripped[:1] in (b"{", b"["):
        return _read_json(stripped), False
    return _read_form(stripped, charset), True


def _read_json(body: bytes) -> Params:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"malformed JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise MalformedBody("the JSON body must be an object")
    return {str(k).lower(): v for k, v in value.items()}


def _read_form(body: bytes, charset: str) -> Params:
    try:
        text = body.decode(charset)
    except LookupError as exc:
        raise MalformedBody(f"unknown charset {charset!r}") from exc
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"the body is not valid {charset}") from exc
    return _read_pairs(text, charset, "the form body")


# A lone surrogate is not a character. UTF-8 cannot carry one, but some charsets a client may
# name decode to one (utf-7, unicode_escape): it would reach SQL (which cannot encode it) or
# be stored as U+FFFD and priced as UCS-2. The body did not decode to text: code 90.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def refuse_lone_surrogates(text: str, what: str) -> str:
    """``text`` unless it holds a lone surrogate (then code 90, naming ``what``)."""
    if _LONE_SURROGATE.search(text) is not None:
        raise MalformedBody(f"{what} does not decode to text (a lone surrogate)")
    return text


def _read_pairs(text: str, charset: str, what: str) -> Params:
    """``a=1&b=2`` with its %-escapes read strictly: a byte sequence that is not ``charset``
    is an error, not a U+FFFD stored in the message (and turning it into UCS-2)."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"{what} is not valid {charset} once %-decoded") from exc
    return {
        refuse_lone_surrogates(k, what).lower(): refuse_lone_surrogates(v, what) for k, v in pairs
    }


def plain_param(params: Params, name: str) -> str | None:
    """A parameter of the read endpoints as text; absent, an object or a list -> None."""
    value = params.get(name.lower())
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # JSON's 1.0 (some encoders write every number so) is id 1
    return str(value)


def text_param(
    params: Params, name: str, errors: list[DomainError], *, flag: bool = False
) -> str | None:
    """A parameter as text: numbers are accepted as their digits, objects are refused, and
    JSON's true/false only for a ``flag`` (as "1"/"0": a message "true" is a client's bug)."""
    value = params.get(name.lower())
    if value is None:
        return None
    if isinstance(value, bool) and flag:
        return "1" if value else "0"
    if isinstance(value, bool):
        errors.append(DomainError(f"{name}.type", f"{name} must be a string", name))
        return None
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, str):
        return value
    errors.append(DomainError(f"{name}.type", f"{name} must be a string", name))
    return None
