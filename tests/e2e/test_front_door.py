"""POST /v1/vn/send over real HTTP, the way each client of the contract sends it."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import sqlite3
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from smsrelay import runtime
from smsrelay.webhooks.payloads import BUILDERS
from tests.support import RunningGateway, eventually, gateway_settings, start_gateway

pytestmark = pytest.mark.asyncio


def _body(gw: RunningGateway, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "apiKey": gw.api_key,
        "to": "0612345678",
        "from": gw.number,
        "message": "This is your message",
    }
    body.update(fields)
    return body


async def test_seed_curl_line_succeeds(gw: RunningGateway) -> None:
    status, answer = await gw.post(
        "/v1/vn/send", _body(gw, message="test"), {"Content-Type": "application/json"}
    )
    assert status == 200
    assert answer["success"] is True and answer["code"] == 200
    assert isinstance(answer["message_id"], int)
    assert answer["nb_sms"] == 1 and answer["cost"] == 0.045 and answer["currency"] == "EUR"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-8",
        "text/plain",
        "multipart/form-data",  # was code 90, "unreadable multipart body"
        "multipart/form-data; boundary=xyz",
    ],
)
async def test_json_is_json_whatever_the_content_type(
    gw: RunningGateway, content_type: str | None
) -> None:
    # The seed's Python example: requests.post(url, data=json.dumps(data)) sends no type;
    # its PHP example sends a JSON string with curl's default form type.
    body = json.dumps(_body(gw)).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    status, answer = await gw.post("/v1/vn/send", body, headers)
    assert (status, answer["success"]) == (200, True)


async def test_a_utf8_byte_order_mark_before_the_body_is_not_data(gw: RunningGateway) -> None:
    # .NET's UTF-8 writers and PowerShell put one first; the body is JSON or a form all the same.
    bom = b"\xef\xbb\xbf"
    status, answer = await gw.post("/v1/vn/send", bom + json.dumps(_body(gw)).encode())
    assert (status, answer["success"]) == (200, True)
    form = bom + urlencode(_body(gw)).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, answer = await gw.post("/v1/vn/send", form, headers)
    assert (status, answer["success"]) == (200, True)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-32-be-with-bom"])
async def test_a_utf16_or_utf32_body_is_code_90_saying_so(
    gw: RunningGateway, encoding: str
) -> None:
    # .NET's Encoding.Unicode writes UTF-16 with its byte-order mark; read as a form, it
    # used to be answered "the API key is required", which sends the developer the wrong way
    text = json.dumps(_body(gw))
    big_endian = encoding.endswith("-with-bom")
    body = ("\ufeff" + text).encode("utf-32-be") if big_endian else text.encode(encoding)
    status, answer = await gw.post("/v1/vn/send", body, {"Content-Type": "application/json"})
    assert (status, answer["code"]) == (400, 90)
    assert "UTF-16" in answer["message"] and "send UTF-8" in answer["message"]


async def test_a_form_in_the_utf16_its_content_type_names_is_read(gw: RunningGateway) -> None:
    # its byte-order mark is the charset's own, not a JSON body in the wrong encoding
    pairs = _body(gw, message="Hé").items()  # plain characters: nothing here needs escaping
    form = "&".join(f"{name}={value}" for name, value in pairs).encode("utf-16")
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-16"}
    status, answer = await gw.post("/v1/vn/send", form, headers)
    assert (status, answer["success"]) == (200, True)


async def test_go_sdk_field_names_match_case_insensitively(gw: RunningGateway) -> None:
    body = {"APIKey": gw.api_key, "To": "+33612345678", "From": gw.number, "Message": "hi"}
    status, answer = await gw.post("/v1/vn/send", body, {"Content-Type": "application/json"})
    assert (status, answer["success"]) == (200, True)


async def test_form_fields(gw: RunningGateway) -> None:
    form = aiohttp.FormData(_body(gw, message="hello :br:world"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.base_url + "/v1/vn/send", data=form) as resp,
    ):
        answer = await resp.json()
    assert resp.status == 200 and answer["nb_sms"] == 1


async def test_multipart_form_fields_as_php_curl_posts_an_array(gw: RunningGateway) -> None:
    form = aiohttp.FormData(_body(gw, message="hello :br:world"), default_to_multipart=True)
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.base_url + "/v1/vn/send?_format=json", data=form) as resp,
    ):
        answer = await resp.json()
    assert resp.status == 200 and answer["nb_sms"] == 1


@pytest.mark.parametrize(
    "body",
    [b"--x\r\nContent-Disposition: form-data\r\n\r\nno end", b"not multipart at all", b""],
)
async def test_a_broken_multipart_body_is_code_90(gw: RunningGateway, body: bytes) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    status, answer = await gw.post("/v1/vn/send", body, headers)
    assert (status, answer["code"]) == (400, 90)


async def test_xml_from_query_and_from_body(gw: RunningGateway) -> None:
    status, text = await gw.post("/v1/vn/send?_format=xml", _body(gw))
    assert status == 200
    assert text.startswith("<?xml version='1.0' encoding='UTF-8'?>")
    assert "<result><entry>true</entry><entry>200</entry><entry>" in text
    assert text.rstrip().endswith(
        "<entry>1</entry><entry>0.045</entry><entry><![CDATA[EUR]]></entry></result>"
    )
    status, text = await gw.post("/v1/vn/send", _body(gw, _format="xml"))
    assert status == 200 and "<entry>true</entry>" in text


async def test_xml_errors_use_the_same_serializer(gw: RunningGateway) -> None:
    status, text = await gw.post("/v1/vn/send?_format=xml", _body(gw, message=None, to="abc"))
    assert status == 400
    assert "<entry>false</entry><entry>43</entry>" in text
    status, text = await gw.post("/v1/vn/send?_format=xml", _body(gw, to="12"))
    assert status == 400
    assert (
        "<entry>false</entry><entry>9</entry><entry><entry><entry>children[to].data</entry>"
        "<entry><![CDATA[" in text
    )


async def test_long_gsm_message_is_priced_per_part(gw: RunningGateway) -> None:
    status, answer = await gw.send(message="a" * 161)
    assert status == 200 and answer["nb_sms"] == 2 and answer["cost"] == 0.09
    status, answer = await gw.send(message="a" * 1530)
    assert answer["nb_sms"] == 10
    status, answer = await gw.send(message="a" * 1531)
    assert (status, answer["code"]) == (400, 52)


async def test_unicode_and_emoji_switch_to_ucs2(gw: RunningGateway) -> None:
    status, answer = await gw.send(message="Привет " * 10)  # 70 UCS-2 units
    assert answer["nb_sms"] == 1
    status, answer = await gw.send(message="😀" * 36)  # 72 units: two parts
    assert answer["nb_sms"] == 2


async def test_special_characters_follow_sms_partner_table(gw: RunningGateway) -> None:
    status, answer = await gw.send(message="Ça coûte 5:euro: [promo] ~ ok")
    assert status == 200
    message = await gw.store.get_message(answer["message_id"])
    assert message.text == "Ça coute 5€ (promo)  ok"
    assert message.encoding == "gsm7"


async def test_stop_mention_is_appended_and_counted(gw: RunningGateway) -> None:
    status, answer = await gw.send(message="a" * 150, isStopSms=1)
    assert answer["nb_sms"] == 2  # 150 + newline + "STOP au 36180" > 160
    message = await gw.store.get_message(answer["message_id"])
    assert message.text.endswith("\nSTOP au 36180") and message.stop_sms


async def test_sandbox_prices_but_neither_sends_nor_charges(gw: RunningGateway) -> None:
    before = (await gw.store.find_account("demo")).credit_micros
    status, answer = await gw.send(sandbox=1, message="a" * 200)
    assert status == 200 and answer["nb_sms"] == 2 and answer["cost"] == 0.09  # 2 x 0.045
    assert (await gw.store.find_account("demo")).credit_micros == before
    message = await gw.store.get_message(answer["message_id"])
    assert message.sandbox and message.parts == ()


async def test_credit_is_debited_and_refused_when_short(gw: RunningGateway) -> None:
    await gw.store.add_credit("demo", -(await gw.store.find_account("demo")).credit_micros + 50_000)
    status, answer = await gw.send()
    assert status == 200
    assert (await gw.store.find_account("demo")).credit_micros == 5_000
    status, answer = await gw.send()
    assert (status, answer["code"]) == (402, 11)
    assert (await gw.store.find_account("demo")).credit_micros == 5_000


@pytest.mark.parametrize(
    ("fields", "http", "code"),
    [
        ({"apiKey": None}, 400, 1),
        ({"apiKey": ""}, 400, 1),
        ({"apiKey": " \t"}, 400, 1),  # blank is missing, as for message
        ({"apiKey": "wrong"}, 401, 10),
        ({"to": None}, 400, 2),
        ({"to": ""}, 400, 2),
        ({"to": "  "}, 400, 2),
        ({"message": None}, 400, 43),
        ({"message": "   "}, 400, 43),
        ({"to": "not a number"}, 400, 9),
        ({"to": "447911123"}, 400, 9),
        ({"from": "0612345678"}, 400, 9),
        ({"from": None}, 400, 9),
        ({"from": "33612345678"}, 400, 44),
        ({"tag": "Has Upper"}, 400, 9),
        ({"tag": "a" * 21}, 400, 9),
        ({"tag": "with space"}, 400, 9),
        ({"tag": "ctl\u0001"}, 400, 9),
        ({"urlDlr": "ftp://x"}, 400, 9),
        ({"urlResponse": "not a url"}, 400, 9),
        ({"urlDlr": "https://example.com/\u0000"}, 400, 9),
        ({"urlResponse": "https://example.com/\u0007"}, 400, 9),
        ({"urlDlr": "http://127.0.0.1:8080\\@1.1.1.1/q"}, 400, 9),  # no poster would take it
        ({"message": "nul \u0000 inside"}, 400, 9),
        ({"isStopSms": "maybe"}, 400, 9),
        ({"message": {"nested": "object"}}, 400, 9),
        ({"to": ["0612345678"]}, 400, 9),
        ({"message": "x" * 5000}, 400, 52),
    ],
)
async def test_refusals_answer_the_contracts_code(
    gw: RunningGateway, fields: dict[str, object], http: int, code: int
) -> None:
    body = {k: v for k, v in _body(gw, **fields).items() if v is not None}
    status, answer = await gw.post("/v1/vn/send", body, {"Content-Type": "application/json"})
    assert (status, answer["success"], answer["code"]) == (http, False, code)
    if code == 9:
        assert answer["error"] and all("elementId" in e for e in answer["error"])


async def test_code_9_names_every_failing_field(gw: RunningGateway) -> None:
    status, answer = await gw.send(to="x", tag="BAD", urlDlr="nope")
    ids = {e["elementId"] for e in answer["error"]}
    assert ids == {"children[to].data", "children[tag].data", "children[urlDlr].data"}


async def test_a_value_of_the_wrong_type_is_one_error_not_also_required(
    gw: RunningGateway,
) -> None:
    body = _body(gw, to=["0612345678"], tag={"a": 1})
    status, answer = await gw.post("/v1/vn/send", body, {"Content-Type": "application/json"})
    ids = [e["elementId"] for e in answer["error"]]
    assert sorted(ids) == ["children[tag].data", "children[to].data"]


async def test_json_true_is_a_flag_not_a_message(gw: RunningGateway) -> None:
    body = _body(gw, message=True, isStopSms=True, sandbox=True)
    status, answer = await gw.post("/v1/vn/send", body, {"Content-Type": "application/json"})
    assert (status, [e["elementId"] for e in answer["error"]]) == (400, ["children[message].data"])
    status, answer = await gw.send(isStopSms=True, sandbox=False)
    assert (status, answer["nb_sms"]) == (200, 1)


async def test_a_query_string_that_is_not_utf8_once_decoded_is_code_90_not_stored_as_u_fffd(
    gw: RunningGateway, tmp_path: Path
) -> None:
    fields = urlencode({k: v for k, v in _body(gw).items() if k != "message"})
    status, answer = await gw.post(f"/v1/vn/send?{fields}&message=caf%E9", b"")
    assert (status, answer["code"]) == (400, 90)
    with sqlite3.connect(tmp_path / "data" / "smsrelay.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)


async def test_a_form_is_read_in_the_charset_its_content_type_names(gw: RunningGateway) -> None:
    form = urlencode(_body(gw, message="Café à 8h"), encoding="iso-8859-1").encode("ascii")
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=ISO-8859-1"}
    status, answer = await gw.post("/v1/vn/send", form, headers)
    assert (status, answer["success"]) == (200, True)
    message = await gw.store.get_message(answer["message_id"], None)
    assert message.text == "Café à 8h"


async def test_no_price_for_destination_is_code_13(gw: RunningGateway) -> None:
    status, answer = await gw.send(to="+850 2 381 2321")  # North Korea: not in the table
    assert (status, answer["code"]) == (400, 13)


@pytest.mark.parametrize(
    "body",
    [
        b'{"apiKey": "x", "to": "0612345678", "message": "he said "hi""}',
        b'{"apiKey": "x", ',
        b"[1, 2, 3]",
        b'{"a": 1}{"b": 2}',
        b"\xff\xfe\x00garbage",
        '{"apiKey": "x", "message": "é'.encode(),  # Content-Length counted in UTF-16 units
    ],
)
async def test_broken_bodies_are_code_90_never_500(gw: RunningGateway, body: bytes) -> None:
    status, answer = await gw.post("/v1/vn/send", body, {"Content-Type": "application/json"})
    assert (status, answer["code"]) == (400, 90)


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_the_node_examples_short_content_length_is_code_90_in_json(
    gw: RunningGateway, keep_alive: bool
) -> None:
    # SMS Partner's Node example: Content-Length = data.length (UTF-16 units), one write. The
    # bytes past it are read as a broken next request, before any route runs.
    body = json.dumps({"apiKey": gw.api_key, "message": "café"}, ensure_ascii=False).encode()
    head = (
        f"POST /v1/vn/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body.decode())}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    host, port = gw.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.encode() + body)
    answer = await asyncio.wait_for(reader.read(), 10)  # every answer, until the server closes
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert status_line.split()[1] == b"400"
    assert b"Content-Type: application/json" in headers
    # One answer, and it closes the connection: the bytes past the Content-Length were
    # answered too, as a second 400 that a keep-alive client (Node 20's agent) read as the
    # answer to its next, valid send, which was then lost.
    assert b"Connection: close" in headers
    error = json.loads(payload)
    assert error["code"] == 90 and gw.api_key not in error["message"]


async def _raw_exchange(gw: RunningGateway, data: bytes) -> bytes:
    """``data`` written at once on one connection; every byte answered until the server
    closes."""
    host, port = gw.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_a_form_body_cut_short_by_its_content_length_is_refused_not_sent_truncated(
    gw: RunningGateway,
) -> None:
    # A form still reads when cut short: "café ok" went out as "café o", charged, and the
    # rest was answered as a broken next request, which the client took for its next send's.
    body = f"apiKey={gw.api_key}&to=0612345678&from={gw.number}&message=café ok".encode()
    head = (
        "POST /v1/vn/send HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body.decode())}\r\n\r\n"  # counted in characters
    )
    health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = await _raw_exchange(gw, head.encode() + body + health)
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closes
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert status_line.split()[1] == b"400" and b"Connection: close" in headers
    assert json.loads(payload)["code"] == 90
    assert await gw.store.get_message(1) is None  # nothing sent, nothing charged


async def test_an_unreadable_query_without_a_body_keeps_the_connection(gw: RunningGateway) -> None:
    # Code 90 closed every connection, though a query says nothing of the framing.
    first = b"GET /v1/me?apiKey=%ff HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await _raw_exchange(gw, first + last)
    assert answer.count(b"HTTP/1.1 ") == 2 and b'"code":90' in answer and b"HTTP/1.1 200" in answer


async def test_a_multipart_body_whose_preamble_starts_with_a_brace_is_multipart(
    gw: RunningGateway,
) -> None:
    fields = "".join(
        f'--xyz\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in _body(gw).items()
    )
    body = ("{a preamble: RFC 2046 lets a sender write one}\r\n" + fields + "--xyz--\r\n").encode()
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    status, answer = await gw.post("/v1/vn/send", body, headers)
    assert (status, answer["success"]) == (200, True)


@pytest.mark.parametrize("key", ["_format", "_FORMAT", "_Format"])
async def test_a_malformed_body_is_answered_in_the_xml_the_query_asks_for(
    gw: RunningGateway, key: str
) -> None:
    status, text = await gw.post(f"/v1/vn/send?{key}=xml", b"{not json", {})
    assert status == 400 and "<entry>90</entry>" in text


async def test_unescaped_quote_in_form_field_is_refused(gw: RunningGateway) -> None:
    form = f"apiKey={gw.api_key}&to=0612345678&from={gw.number}&message=say+%22hi%22".encode()
    status, answer = await gw.post(
        "/v1/vn/send", form, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 400 and answer["code"] == 9
    form = form.replace(b"%22hi%22", b"%5C%22hi%5C%22")
    status, answer = await gw.post(
        "/v1/vn/send", form, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200
    message = await gw.store.get_message(answer["message_id"])
    assert message.text == 'say "hi"'


@pytest.mark.parametrize(
    ("encoding", "pack"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
)
async def test_a_compressed_body_is_accepted(
    gw: RunningGateway, encoding: str, pack: Callable[[bytes], bytes]
) -> None:
    body = pack(json.dumps(_body(gw, message="packed")).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    status, answer = await gw.post("/v1/vn/send", body, headers)
    assert status == 200, answer
    assert (await gw.store.get_message(answer["message_id"])).text == "packed"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
async def test_a_body_its_content_encoding_cannot_decode_is_code_90(
    gw: RunningGateway, encoding: str
) -> None:
    status, answer = await gw.post(
        "/v1/vn/send",
        b"not compressed at all",
        {"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert (status, answer["code"]) == (400, 90)


async def test_huge_body_is_refused_in_api_format(gw: RunningGateway) -> None:
    status, answer = await gw.post(
        "/v1/vn/send", b"{" + b" " * 200_000 + b"}", {"Content-Type": "application/json"}
    )
    assert status == 413 and answer["code"] == 90


async def test_disabled_account_is_code_20(gw: RunningGateway) -> None:
    await gw.store.update_account("demo", {"disabled": 1})
    gw.running.gateway.accounts.forget()
    status, answer = await gw.send()
    assert (status, answer["code"]) == (403, 20)


async def test_stop_listed_recipient_is_code_14(gw: RunningGateway) -> None:
    demo = await gw.store.find_account("demo")
    await gw.store.stop_add(demo.id, "+33612345678", 0.0, BUILDERS)
    status, answer = await gw.send()
    assert (status, answer["code"]) == (400, 14)
    status, text = await gw.post("/v1/vn/send?_format=xml", _body(gw))
    assert status == 400 and "<entry>14</entry>" in text


async def test_accepted_means_committed_to_disk(gw: RunningGateway, tmp_path: Path) -> None:
    status, answer = await gw.send(tag="promo", urlDlr="https://example.com/dlr")
    # A separate connection sees the row at once: the answer came after the commit.
    conn = sqlite3.connect(tmp_path / "data" / "smsrelay.db")
    row = conn.execute(
        "SELECT tag, url_dlr, nb_sms FROM messages WHERE id = ?", (answer["message_id"],)
    ).fetchone()
    conn.close()
    assert row == ("promo", "https://example.com/dlr", 1)


async def test_status_lookup_answers_in_contract_shape(gw: RunningGateway) -> None:
    _, answer = await gw.send()
    status = await gw.status(answer["message_id"])
    assert status["success"] is True and status["messageId"] == str(answer["message_id"])
    assert status["number"] == "33612345678" and status["countryCode"] == "FR"
    assert status["statut"] in {"Waiting", "Delivered"}
    lookup = {"apiKey": gw.api_key, "messageId": "999", "phoneNumber": "0612345678"}
    _, missing = await gw.get("/v1/message-status", lookup)
    assert missing["code"] == 4


async def test_unknown_paths_and_methods_answer_json(gw: RunningGateway) -> None:
    status, answer = await gw.get("/v1/vn/send")
    assert status == 405 and answer["success"] is False
    status, answer = await gw.get("/nope")
    assert status == 404 and answer["success"] is False


async def test_unknown_paths_and_methods_answer_the_xml_the_query_asks_for(
    gw: RunningGateway,
) -> None:
    status, text = await gw.get("/nope", {"_format": "xml"})
    assert status == 404 and "<entry>false</entry><entry>404</entry>" in text
    status, text = await gw.get("/v1/vn/send/", {"_format": "xml"})
    assert status == 405 and "<entry>false</entry><entry>405</entry>" in text


@pytest.mark.parametrize(("base", "tail"), [("/v1", "/"), ("/v1/", ""), ("//v1/", "//")])
async def test_a_path_with_a_trailing_or_doubled_slash_reaches_its_endpoint(
    gw: RunningGateway, base: str, tail: str
) -> None:
    # A client whose base URL ends in "/v1/" joins it to "/vn/send" as "/v1//vn/send".
    path = f"{base}/vn/send{tail}"
    status, answer = await gw.post(path, _body(gw), {"Content-Type": "application/json"})
    assert (status, answer["success"]) == (200, True)
    status, answer = await gw.get(f"{base}/me{tail}", {"apiKey": gw.api_key})
    assert (status, answer["success"]) == (200, True)


async def test_a_message_outside_quiet_hours_is_not_held(gw: RunningGateway) -> None:
    # The demo account of the test gateway has quiet hours off: nothing is ever held.
    for _ in range(20):
        _, answer = await gw.send()
        message = await gw.store.get_message(answer["message_id"])
        assert message.due_at == message.created_at and message.state != "held"


async def test_cli_send_goes_through_a_running_gateway(gw: RunningGateway) -> None:
    import asyncio

    from tests.support import SMSRELAY

    async def cli_send(key: str, url: str = gw.base_url) -> tuple[int, bytes]:
        process = await asyncio.create_subprocess_exec(
            SMSRELAY,
            "send",
            "--url",
            url,
            "--api-key",
            key,
            "--from",
            gw.number,
            "--to",
            "0612345678",
            "Bonjour :euro:",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await process.communicate()
        return process.returncode or 0, out

    code, out = await cli_send(gw.api_key)
    assert code == 0 and b'"success":true' in out
    code, out = await cli_send("wrong-key")
    assert code == 1 and b'"code":10' in out
    code, out = await cli_send(gw.api_key, gw.base_url + "/v1/")  # the API's base URL works too
    assert code == 0 and b'"success":true' in out
    code, out = await cli_send(gw.api_key, gw.base_url + "/v1/vn/send")  # the endpoint: a 404
    assert code == 0 and b'"success":true' in out
    code, _ = await cli_send(gw.api_key, "foo")  # not a URL: a usage error
    assert code == 2


async def test_cli_send_takes_the_key_from_the_environment_out_of_ps(
    gw: RunningGateway, tmp_path: Path
) -> None:
    import os

    from tests.support import SMSRELAY

    async def cli_send(*key_flag: str, env_key: str | None) -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMSRELAY_")}
        env["SMSRELAY_DATA_DIR"] = str(tmp_path / "unused")  # settings_from reads them
        if env_key is not None:
            env["SMSRELAY_API_KEY"] = env_key
        process = await asyncio.create_subprocess_exec(
            *(SMSRELAY, "send", "--url", gw.base_url, *key_flag, "--from", gw.number),
            *("--to", "0612345678", "Bonjour"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli_send(env_key=gw.api_key)
    assert code == 0 and '"success":true' in out, err
    assert "is not a setting" not in err  # the command's own variable, not a misspelt one
    code, out, _ = await cli_send("--api-key", "wrong-key", env_key=gw.api_key)
    assert code == 1 and '"code":10' in out  # the flag, given, wins
    code, out, err = await cli_send(env_key=None)
    assert code == 2 and not out
    assert "error: no API key: give --api-key KEY, or set SMSRELAY_API_KEY" in err


async def test_serve_says_nothing_of_quiet_hours_when_nothing_is_held(gw: RunningGateway) -> None:
    assert not [line for line in gw.lines if line.startswith("quiet hours:")]


async def _raw_connection(gw: RunningGateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = gw.base_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


@contextlib.asynccontextmanager
async def _gateway_with_short_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout: str, seconds: float
) -> AsyncIterator[RunningGateway]:
    """A gateway of its own whose HTTP ``timeout`` (a ``runtime`` constant) is ``seconds``."""
    monkeypatch.setattr(runtime, timeout, seconds)
    gw = await start_gateway(gateway_settings(tmp_path))
    try:
        yield gw
    finally:
        await runtime.stop(gw.running)


async def test_a_client_that_stalls_mid_body_gets_code_90_and_loses_its_socket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with _gateway_with_short_timeout(tmp_path, monkeypatch, "HTTP_BODY_TIMEOUT", 0.3) as gw:
        body = json.dumps(_body(gw)).encode()
        reader, writer = await _raw_connection(gw)
        writer.write(
            b"POST /v1/vn/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        answer = await asyncio.wait_for(reader.read(1000), 10)
        writer.close()
    assert answer.split()[1] == b"408" and b'"code":90' in answer
    assert b"Connection: close" in answer
    with sqlite3.connect(tmp_path / "data" / "smsrelay.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)


async def test_a_connection_that_never_completes_a_request_is_closed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with _gateway_with_short_timeout(tmp_path, monkeypatch, "HTTP_IDLE_TIMEOUT", 0.5) as gw:
        silent, half = await _raw_connection(gw), await _raw_connection(gw)
        half[1].write(b"POST /v1/vn/send HTTP/1.1\r\nHost: x\r\nContent-Le")
        for reader, writer in (silent, half):
            assert await asyncio.wait_for(reader.read(), 10) == b""  # the server hung up
            writer.close()


async def test_an_over_long_url_is_code_90_without_repeating_its_api_key(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smsrelay.api")
    reader, writer = await _raw_connection(gw)
    writer.write(f"GET /v1/me?apiKey={gw.api_key}{'x' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.split()[1] == b"400" and b'"code":90' in answer
    assert gw.api_key.encode() not in answer
    assert any(r.getMessage() == "api.malformed_request" for r in caplog.records)
    assert all(
        gw.api_key not in record.getMessage() + str(record.__dict__) for record in caplog.records
    )


async def test_a_client_that_leaves_mid_body_is_no_error(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smsrelay.api")
    reader, writer = await _raw_connection(gw)
    writer.write(b"POST /v1/vn/send HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    writer.close()

    async def logged() -> bool:
        return any(r.getMessage() == "api.client_gone" for r in caplog.records)

    await eventually(logged, timeout=5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (await gw.send())[0] == 200


async def test_a_missing_sender_is_named_as_the_sender(gw: RunningGateway) -> None:
    status, answer = await gw.post("/v1/vn/send", _body(gw, **{"from": ""}))
    [error] = answer["error"]
    assert (status, error["elementId"]) == (400, "children[from].data")
    assert error["message"] == "The sender (from) is required."


@pytest.mark.parametrize("path", ["/v1/me", "/v1/me/"])
async def test_an_unexpected_error_is_a_500_in_the_apis_format_on_any_spelling_of_the_path(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    async def broken(key: str | None, origin: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gw.running.gateway.accounts, "authenticate", broken)
    status, answer = await gw.get(path, {"apiKey": gw.api_key})
    assert (status, answer["success"], answer["code"]) == (500, False, 500)


async def test_over_the_connection_cap_a_send_gets_503_and_nothing_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await start_gateway(gateway_settings(tmp_path, http_max_connections=2))
    try:
        # Idle connections give way: one client that held every slot with connections that
        # sent nothing had every send, and /health, answered 503 for as long as it liked.
        flood = [await _raw_connection(gw), await _raw_connection(gw)]
        await eventually(lambda: len(gw.running.http.connections) == 2)
        status, answer = await gw.post("/v1/vn/send", _body(gw))
        assert (status, answer["success"]) == (200, True)
        assert await asyncio.wait_for(flood[0][0].read(), 10) == b""  # closed for the send

        # every slot has a send in hand (its key being checked): the newcomer gets the 503
        accounts = gw.running.gateway.accounts
        checked, gate = [], asyncio.Event()
        authenticate = accounts.authenticate

        async def held(key: str | None, origin: object) -> object:
            checked.append(key)
            await gate.wait()
            return await authenticate(key, origin)

        monkeypatch.setattr(accounts, "authenticate", held)
        body = json.dumps(_body(gw)).encode()
        request = (
            b"POST /v1/vn/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        in_hand = []
        for count in (1, 2):
            in_hand.append(await _raw_connection(gw))
            in_hand[-1][1].write(request)
            await eventually(lambda: len(checked) == count)  # noqa: B023
        assert await asyncio.wait_for(flood[1][0].read(), 10) == b""  # it gave way too
        await eventually(lambda: len(gw.running.http.connections) == 2)
        reader, writer = await _raw_connection(gw)
        writer.write(request)
        refused = await asyncio.wait_for(reader.read(), 10)  # the answer, then the server's FIN
        writer.close()
        head, _, payload = refused.partition(b"\r\n\r\n")
        assert head.split()[1] == b"503" and b"Connection: close" in head
        assert b"\r\nRetry-After: 1\r\n" in head
        assert json.loads(payload) == {
            "success": False,
            "code": 500,
            "message": "too many connections (at most 2): retry later",
        }
        with sqlite3.connect(tmp_path / "data" / "smsrelay.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (1,)
        gate.set()  # the sends in hand all along are answered
        for in_hand_reader, _ in in_hand:
            assert (await asyncio.wait_for(in_hand_reader.readline(), 10)).split()[1] == b"200"
        for _, in_hand_writer in in_hand:
            in_hand_writer.close()
        await eventually(lambda: not gw.running.http.connections)
        status, health = await gw.get("/health")  # what an operator sees of it
        assert status == 200
        assert (health["http"]["turned_away"], health["http"]["max_connections"]) == (1, 2)
        assert health["http"]["reclaimed"] >= 2  # flood's two (and any closing in between)
        for _, flood_writer in flood:
            flood_writer.close()
    finally:
        await runtime.stop(gw.running)


async def _next_id(gw: RunningGateway) -> int:
    """The id of a message sent now: one more than the last stored (nothing is deleted here)."""
    status, answer = await gw.send()
    assert status == 200
    return int(answer["message_id"])


@pytest.mark.parametrize(
    ("charset", "message"),
    [("utf-7", b"hi+2AA-"), ("unicode_escape", b"hi\\ud800"), ("unicode_escape", b"hi%5Cud800")],
    ids=["utf-7", "unicode_escape", "unicode_escape once %-decoded"],
)
async def test_a_form_whose_charset_decodes_to_a_lone_surrogate_is_code_90_not_stored(
    gw: RunningGateway, charset: str, message: bytes
) -> None:
    # It was stored as "hi\ufffd" and priced as UCS-2; the same tag in bulk-status-by-tag
    # reached SQL, which cannot encode it: a 500.
    fields = urlencode(_body(gw, message="")).encode() + b"hi"
    headers = {"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"}
    before = await _next_id(gw)
    status, answer = await gw.post("/v1/vn/send", fields.replace(b"hi", message), headers)
    assert (status, answer["code"]) == (400, 90)
    tag_query = f"apiKey={gw.api_key}&tag=a".encode() + message  # a GET with a form body
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.base_url + "/v1/bulk-status-by-tag", data=tag_query, headers=headers) as r,
    ):
        assert (r.status, (await r.json(content_type=None))["code"]) == (400, 90)
    assert await _next_id(gw) == before + 1  # nothing stored in between


def _multipart(*parts: bytes) -> bytes:
    return b"".join(b"--b\r\n" + part + b"\r\n" for part in parts) + b"--b--\r\n"


@pytest.mark.parametrize(
    "body",
    [
        # a part's headers long enough to hold the loop for seconds in the MIME parser
        _multipart(b'Content-Disposition: form-data; name="apikey"' + b";" * 30_000 + b"\r\n\r\nk"),
        # nested multiparts and comments deep enough to exhaust the stack: it was a 500
        _multipart(b'Content-Disposition: form-data; name="apikey"' + b"(" * 3000 + b"\r\n\r\nk"),
        b"".join(
            b"--%x\r\nContent-Type: multipart/mixed; boundary=%x\r\n\r\n" % (n, n + 1)
            for n in range(1, 1200)
        ),
    ],
    ids=["long part headers", "deep comment", "deep nesting"],
)
async def test_a_crafted_multipart_body_is_code_90(gw: RunningGateway, body: bytes) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    if body.startswith(b"--1"):
        headers["Content-Type"] = "multipart/form-data; boundary=1"
    status, answer = await gw.post("/v1/vn/send", body, headers)
    assert (status, answer["code"]) == (400, 90)


async def test_head_never_reaches_a_get_that_changes_something(gw: RunningGateway) -> None:
    status, added = await gw.post(
        "/v1/stop-sms/add", {"apiKey": gw.api_key, "phoneNumber": "0612345679"}
    )
    assert status == 200
    query = f"?apiKey={gw.api_key}&id={added['stopId']}"
    async with aiohttp.ClientSession() as session:
        for path in ("/v1/stop-sms/delete", "/v1/message-cancel"):
            async with session.head(gw.base_url + path + query) as resp:
                assert resp.status == 405
    status, listed = await gw.get("/v1/stop-sms/list", {"apiKey": gw.api_key})
    assert [entry["id"] for entry in listed["data"]] == [added["stopId"]]


async def test_a_multipart_field_with_a_signature_line_is_read(gw: RunningGateway) -> None:
    # Any "--" line opened a header count: a message with a signature separator and 2 KiB of
    # text after it was refused as headers over 2 KiB.
    text = "Bonjour,\r\n--\r\n" + "Merci, " + "é" * 1100  # 2.2 KB of UTF-8, 8 SMS
    fields = {"apiKey": gw.api_key, "to": "0612345678", "from": gw.number, "message": text}
    body = _multipart(
        *(
            f'Content-Disposition: form-data; name="{k}"\r\n\r\n{v}'.encode()
            for k, v in fields.items()
        )
    )
    status, answer = await gw.post(
        "/v1/vn/send", body, {"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert (status, answer["success"]) == (200, True), answer
