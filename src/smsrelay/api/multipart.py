"""``multipart/form-data`` fields, read with the standard library's MIME parser.

PHP's curl posts a form this way when given an array. The API's fields are short text; a
file part carries nothing the API reads and is skipped.
"""

from __future__ import annotations

import re
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value

from smsrelay.api.params import MalformedBody, Params, refuse_lone_surrogates

_PARSER = BytesParser(policy=policy.HTTP)
# The MIME parser's header parameters take time quadratic in a header's length (a 30 KB run
# of ";" held the event loop for 4 s, before the API key is even read); the API's fields need
# a few hundred bytes of headers a part.
MAX_PART_HEAD = 2048


def multipart_fields(body: bytes, content_type: str) -> Params:
    """The text fields of a multipart body, names lower-cased; a broken body is code 90."""
    if len(content_type) > MAX_PART_HEAD:
        raise MalformedBody(f"a multipart Content-Type over {MAX_PART_HEAD} bytes")
    _check_part_heads(body)
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    try:  # nested multiparts and comments recurse: a crafted body exceeds the stack
        return _fields(_PARSER.parsebytes(head + body))
    except RecursionError as exc:
        raise MalformedBody("unreadable multipart body: nested too deeply") from exc


def _check_part_heads(body: bytes) -> None:
    """Code 90 if a part's headers exceed MAX_PART_HEAD, checked before the parser sees them:
    the header-shaped lines (``Name: value``, or a folded continuation) after any line that
    begins "--" (a delimiter of the body's boundary or of a nested one, which the parser may
    read as one), up to the first line of another shape. A "--" signature line in a field
    is followed by text, which ends the count at once."""
    size: int | None = None  # the header block being read, None outside one
    for raw in body.split(b"\n"):
        line = raw.rstrip(b"\r")
        if line.startswith(b"--"):
            size = 0
        elif size is not None and _HEADER_SHAPED.match(line):
            size += len(line)
            if size > MAX_PART_HEAD:
                raise MalformedBody(f"a multipart part with headers over {MAX_PART_HEAD} bytes")
        else:
            size = None


_HEADER_SHAPED = re.compile(rb"[!-9;-~]+:|[ \t]")  # a field name and its colon, or a fold


def _fields(message: Message) -> Params:
    if message.defects or not message.is_multipart():
        raise MalformedBody("unreadable multipart body: " + _defect_names(message))
    fields: Params = {}
    for part in message.get_payload():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        if part.defects or name is None or part.get_filename() is not None:
            continue
        fields[collapse_rfc2231_value(name).lower()] = _text_of(part)
    return fields


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = raw.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"a multipart field is not valid {charset}") from exc
    return refuse_lone_surrogates(text, "a multipart field")


def _defect_names(message: Message) -> str:
    names = [type(defect).__name__ for defect in message.defects]
    return ", ".join(names) or "not multipart"
