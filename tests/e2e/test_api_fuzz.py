"""Property: whatever a client sends to any endpoint, the answer is in the API's own format
and never a server error. Random bodies (JSON of any shape, forms, raw bytes), random
parameters and types, against a real `smsrelay serve` over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import SMSRELAY, note_serve_banner

ENDPOINTS = [
    ("POST", "/v1/vn/send"),
    ("GET", "/v1/message-status"),
    ("POST", "/v1/message-status"),
    ("GET", "/v1/me"),
    ("POST", "/v1/multi-status"),
    ("GET", "/v1/bulk-status-by-tag"),
    ("GET", "/v1/message-cancel"),
    ("GET", "/v1/stop-sms/list"),
    ("POST", "/v1/stop-sms/add"),
    ("GET", "/v1/stop-sms/delete"),
]
FIELDS = [
    "apiKey", "from", "to", "message", "tag", "sandbox", "isStopSms", "scheduledDeliveryDate",
    "time", "minute", "urlDlr", "urlResponse", "messageId", "phoneNumber", "id", "_format",
    "SMSStatut_List", "page", "gamme", "sender",
]  # fmt: skip


@dataclass
class Served:
    base: str
    key: str
    number: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SMSRELAY_LOG_LEVEL": "WARNING",
        "SMSRELAY_BUILTIN_SMSC_PORT": "0",
        "SMSRELAY_BUILTIN_SMSC_CONTROL_PORT": "0",
        "SMSRELAY_DEMO_QUIET_HOURS": "false",  # the same answers at any hour
    }
    process = subprocess.Popen(
        [SMSRELAY, "serve", "--data-dir", str(data), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    seen: dict[str, str] = {}
    while "base" not in seen:
        line = process.stdout.readline()
        assert line, "serve exited before listening"
        note_serve_banner(line, seen)
    try:
        yield Served(seen["base"], seen["key"], seen["number"])
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()


def values(served_key: str, number: str) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=40),
        st.sampled_from([served_key, number, "0612345678", "+33612345678", "1", "0", "xml"]),
        st.sampled_from(["2026-13-45 25:61", "31/12/2026 10:00", "http://127.0.0.1:1/x"]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=6,
    )


@st.composite
def requests(draw: st.DrawFn, served: Served) -> tuple[str, str, dict[str, str], bytes, str]:
    method, path = draw(st.sampled_from(ENDPOINTS))
    names = draw(st.lists(st.sampled_from(FIELDS) | st.text(max_size=8), max_size=8))
    fields = {name: draw(values(served.key, served.number)) for name in names}
    if draw(st.booleans()):
        fields["apiKey"] = served.key  # most requests get past the key, to the real checks
    query: dict[str, str] = {}
    kind = draw(st.sampled_from(["json", "form", "query", "raw"]))
    if kind == "json":
        body, content_type = json.dumps(fields).encode(), "application/json"
    elif kind == "form":
        flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        body, content_type = (
            urllib.parse.urlencode(flat).encode(),
            draw(st.sampled_from(["application/x-www-form-urlencoded", "text/plain", ""])),
        )
    elif kind == "query":
        query = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        body, content_type = b"", ""
    else:
        body = draw(st.binary(max_size=200))
        content_type = draw(st.sampled_from(["application/json", "application/xml", ""]))
    if draw(st.booleans()):
        query["_format"] = draw(st.sampled_from(["xml", "json", "XML", "", "yaml"]))
    url = path + ("?" + urllib.parse.urlencode(query) if query else "")
    return method, url, {"Content-Type": content_type} if content_type else {}, body, kind


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_request_gets_an_answer_in_the_apis_format_never_a_server_error(
    served: Served, data: st.DataObject
) -> None:
    method, url, headers, body, _ = data.draw(requests(served))
    request = urllib.request.Request(
        served.base + url, data=body if method == "POST" else None, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, payload = response.status, response.read()
            content_type = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
        content_type = error.headers.get("Content-Type", "")
    assert status < 500, (status, method, url, body, payload)
    if "xml" in content_type:
        root = ET.fromstring(payload)  # well-formed, whatever went in
        assert root.tag == "result" and len(root) > 0, payload  # SMS Partner's XML shape
    else:
        answer = json.loads(payload)
        assert isinstance(answer, dict) and "success" in answer, (method, url, body, answer)
        if answer["success"] is False:
            assert isinstance(answer.get("code"), int), answer
