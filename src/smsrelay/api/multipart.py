"""``multipart/form-data`` fields, read with the standard library's MIME parser.

PHP's curl posts a form this way when given an array. The API's fields are short text; a
file part carries nothing the API reads and is skipped.
"""

from __future__ import annotations

from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value

from smsrelay.api.params import MalformedBody, Params

_PARSER = BytesParser(policy=policy.HTTP)


def multipart_fields(body: bytes, content_type: str) -> Params:
    """The text fields of a multipart body, names lower-cased; a broken body is code 90."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = _PARSER.parsebytes(head + body)
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
        return raw.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"a multipart field is not valid {charset}") from exc


def _defect_names(message: Message) -> str:
    names = [type(defect).__name__ for defect in message.defects]
    return ", ".join(names) or "not multipart"
