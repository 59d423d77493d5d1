"""The inbound router: replies and receipts read from deliver_sm / data_sm, on a real store."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from smsrelay.carrier.connector import MAY_BE_STORED, InboundSm
from smsrelay.dispatch.inbound import InboundRouter, read_receipt
from smsrelay.domain.keywords import is_stop_text, keyword_of
from smsrelay.errors import MaybeStored, TransientError
from smsrelay.service.clock import FixedClock
from smsrelay.store.records import InboundReply
from smsrelay.store.sqlite_store import SqliteStore
from smsrelay.webhooks.payloads import BUILDERS

NUMBER = "+33757000001"


class RecordingStore(SqliteStore):
    """The real store, keeping each reply it was given."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.replies: list[InboundReply] = []

    async def record_reply(self, reply: InboundReply, builders: Any) -> Any:
        self.replies.append(reply)
        return await super().record_reply(reply, builders)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RecordingStore]:
    s = RecordingStore(f"sqlite:///{tmp_path}/s.db")
    await s.open()
    await s.create_account("a", "hash-a", 1_000_000, 0.0)
    await s.add_number("a", NUMBER, "default", 0.0)
    yield s
    await s.close()


@pytest.fixture
def router(store: RecordingStore) -> InboundRouter:
    return InboundRouter(store, FixedClock(1_700_000_000.0), BUILDERS, ("STOP",))


def mo(
    short_message: bytes,
    data_coding: int = 0,
    *,
    source: str = "33612345678",
    tlvs: Mapping[int, bytes] | None = None,
    **fields: Any,
) -> InboundSm:
    return InboundSm(
        connector="default",
        source=source,
        destination=NUMBER.removeprefix("+"),
        esm_class=0,
        data_coding=data_coding,
        short_message=short_message,
        tlvs=tlvs or {},
        **fields,
    )


# --- reply text by data_coding --------------------------------------------------------------


@pytest.mark.parametrize(
    ("short_message", "data_coding", "text"),
    [
        ("Привет".encode("iso8859-5"), 6, "Привет"),
        ("שלום".encode("iso8859-8"), 7, "שלום"),
        ("안녕".encode("euc_kr"), 14, "안녕"),
        (b"\xca\xfe", 2, "cafe"),  # 8-bit data, shown as hex like data_coding 4
        ("Ça va".encode("utf-16-be"), 0x18, "Ça va"),  # GSM general coding group, UCS-2
        (b"\xca\xfe", 0xF5, "cafe"),  # GSM message class group, 8-bit data
    ],
)
async def test_reply_text_is_decoded_by_its_data_coding(
    router: InboundRouter,
    store: RecordingStore,
    short_message: bytes,
    data_coding: int,
    text: str,
) -> None:
    assert await router(mo(short_message, data_coding)) == 0
    [reply] = store.replies
    assert reply.text == text


@pytest.mark.parametrize(("default_alphabet", "text"), [(0, "¡¤§"), (1, "@$_"), (3, "@$_")])
async def test_data_coding_0_reply_is_read_in_the_smsc_default_alphabet(
    router: InboundRouter, store: RecordingStore, default_alphabet: int, text: str
) -> None:
    await router(mo(b"@$_", 0, default_alphabet=default_alphabet))
    [reply] = store.replies
    assert reply.text == text


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "ton"), [("0612345678", 2), ("0612345678", 0), ("612345678", 2)]
)
async def test_a_national_sender_is_stored_and_stopped_in_e164(
    router: InboundRouter, store: RecordingStore, source: str, ton: int
) -> None:
    await router(mo(b"STOP", source=source, source_ton=ton))
    [reply] = store.replies
    assert (reply.msisdn, reply.virtual_number) == ("+33612345678", NUMBER)
    assert [entry.phone for entry in await store.stop_list(1)] == ["+33612345678"]


# --- receipts ------------------------------------------------------------------------------

RECEIPTED_ID, MESSAGE_STATE, MESSAGE_PAYLOAD = 0x001E, 0x0427, 0x0424
NETWORK_ERROR = 0x0423


def receipt(short_message: bytes, data_coding: int = 0, **tlvs: bytes) -> InboundSm:
    tags = {
        "receipted": RECEIPTED_ID,
        "state": MESSAGE_STATE,
        "payload": MESSAGE_PAYLOAD,
        "network_error": NETWORK_ERROR,
    }
    return mo(
        short_message,
        data_coding,
        tlvs={tags[name]: value for name, value in tlvs.items()},
    )


def test_receipted_id_tlv_without_message_state_reads_stat_and_err_from_the_text() -> None:
    sm = receipt(b"sub:001 dlvrd:000 stat:UNDELIV err:034", receipted=b"ab12\x00")
    read = read_receipt(sm, 5.0)
    assert read is not None
    assert (read.carrier_id, read.stat, read.err) == ("ab12", "UNDELIV", "034")


def test_receipt_text_in_ucs2_is_read() -> None:
    text = "id:ab12 sub:001 dlvrd:001 stat:DELIVRD err:000 text:Ça"
    read = read_receipt(receipt(text.encode("utf-16-be"), 8), 5.0)
    assert read is not None
    assert (read.carrier_id, read.stat, read.err) == ("ab12", "DELIVRD", "000")


def test_ucs2_receipt_text_in_message_payload_with_the_id_in_its_tlv() -> None:
    payload = "stat:EXPIRED err:027".encode("utf-16-be")
    read = read_receipt(receipt(b"", 8, receipted=b"77", payload=payload), 5.0)
    assert read is not None
    assert (read.carrier_id, read.stat, read.err) == ("77", "EXPIRED", "027")


def test_tlvs_still_win_over_the_text() -> None:
    sm = receipt(b"id:1 stat:UNDELIV err:001", receipted=b"2", state=bytes([2]))
    read = read_receipt(sm, 5.0)
    assert read is not None
    assert (read.carrier_id, read.stat, read.err) == ("2", "DELIVRD", "001")


def test_a_receipt_in_tlvs_alone_reports_the_network_error_code() -> None:
    # network type 3 (GSM), error 5: the err the DLR shows was null, the SMSC's reason lost
    tlvs = {"receipted": b"ab12\x00", "state": bytes([5]), "network_error": b"\x03\x00\x05"}
    read = read_receipt(receipt(b"", **tlvs), 5.0)
    assert read is not None
    assert (read.carrier_id, read.stat, read.err) == ("ab12", "UNDELIV", "005")


@pytest.mark.parametrize(
    ("network_error", "err"),
    [(b"\x03\x01\x2c", "300"), (b"\x01\x27\x10", "10000"), (b"\x03\x00", "034")],
    ids=["over the text", "wider than three digits", "malformed: the text's"],
)
def test_the_network_error_code_tlv_wins_over_the_texts_err(network_error: bytes, err: str) -> None:
    sm = receipt(b"id:1 stat:UNDELIV err:034", network_error=network_error)
    read = read_receipt(sm, 5.0)
    assert read is not None and read.err == err


@pytest.mark.parametrize(
    ("short_message", "tlvs"),
    [
        (b"stat:DELIVRD err:000", {}),  # no id anywhere
        (b"id:9 err:000", {}),  # no stat anywhere
        (b"err:000", {"receipted": b"9"}),
    ],
)
def test_a_receipt_without_id_or_stat_is_unreadable(
    short_message: bytes, tlvs: dict[str, bytes]
) -> None:
    assert read_receipt(receipt(short_message, **tlvs), 5.0) is None


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("Yes please", "YES"),
        ("Oui, merci", "OUI"),
        ("  stop.", "STOP"),
        ("«Info» svp", "INFO"),
        ("¿Qué?", "QUÉ"),
        ("はい。", "はい"),  # punctuation of any script
        ("OK！", "OK"),
        ("rdv-demain 10h", "RDV-DEMAIN"),
        (":-) ok", ":-)"),
        ("", ""),
    ],
)
def test_the_keyword_is_the_first_word_upper_cased_without_its_punctuation(
    text: str, keyword: str
) -> None:
    assert keyword_of(text) == keyword


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        "Stop, merci",
        "stop.",
        " Arrêt ! ",
        "STOP SMS",
        "ＳＴＯＰ",  # full width, as some keyboards type it
        "ARRE\u0302T",  # Ê decomposed
        "\u200bSTOP",  # a zero-width space in front
    ],
)
def test_a_stop_keyword_with_punctuation_around_it_still_stops(text: str) -> None:
    keywords = frozenset({"STOP", "STOP SMS", "ARRÊT"})
    assert is_stop_text(text, keywords)


@pytest.mark.parametrize("text", ["Stopper la pub ?", "non merci", "STOPPE"])
def test_a_reply_that_only_starts_like_a_stop_keyword_does_not_stop(text: str) -> None:
    assert not is_stop_text(text, frozenset({"STOP"}))


def test_failed_reads_as_undelivered() -> None:
    read = read_receipt(receipt(b"id:ab12 sub:001 dlvrd:000 stat:FAILED err:034"), 5.0)
    assert read is not None and read.stat == "UNDELIV"


async def test_a_receipt_whose_stat_no_one_knows_is_kept_and_said(
    router: InboundRouter, caplog: pytest.LogCaptureFixture
) -> None:
    sm = dataclasses.replace(receipt(b"id:ab12 sub:001 dlvrd:000 stat:FOOBAR err:000"), esm_class=4)
    assert await router(sm) == 0  # acknowledged: the SMSC would only send it again
    [warning] = [r for r in caplog.records if r.getMessage() == "smpp.receipt.unknown_stat"]
    assert warning.stat == "FOOBAR"


def delivery_receipt(carrier_id: str) -> InboundSm:
    text = f"id:{carrier_id} sub:001 dlvrd:001 stat:DELIVRD err:000".encode()
    return dataclasses.replace(receipt(text), esm_class=4)


def turn() -> list[InboundSm]:
    """What one read may bring: receipts, a reply, and a receipt no one can read."""
    unreadable = dataclasses.replace(receipt(b"sub:001 err:000"), esm_class=4)
    return [delivery_receipt("a1"), mo(b"hello"), unreadable, delivery_receipt("a2")]


async def test_a_turn_of_receipts_is_one_store_write_and_each_item_is_answered(
    router: InboundRouter, store: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[list[str]] = []
    real = store.record_receipts_many

    async def spy(receipts: Any, builders: Any) -> list[bool]:
        writes.append([r.carrier_id for r in receipts])
        return await real(receipts, builders)

    monkeypatch.setattr(store, "record_receipts_many", spy)
    assert await router.handle_many(turn()) == [0, 0, 0, 0]
    assert writes == [["a1", "a2"]]  # the readable receipts, in their order, in one write
    assert [reply.text for reply in store.replies] == ["hello"]
    kept = await store.db.read(lambda c: c.execute("SELECT carrier_id FROM receipts").fetchall())
    assert sorted(row[0] for row in kept) == ["a1", "a2"]  # no part has them yet: kept early


async def test_receipts_the_store_refuses_are_asked_again_and_the_rest_of_the_turn_stands(
    router: InboundRouter, store: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def locked(receipts: Any, builders: Any) -> list[bool]:
        raise TransientError("database commit failed: database is locked")

    monkeypatch.setattr(store, "record_receipts_many", locked)
    # The receipts get ESME_RX_T_APPN (the SMSC sends them again); the reply is stored and
    # acknowledged; the unreadable receipt is acknowledged, as it would only come back.
    assert await router.handle_many(turn()) == [0x64, 0, 0, 0x64]
    assert [reply.text for reply in store.replies] == ["hello"]


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (TransientError("database commit failed: disk is full"), 0x64),
        (MaybeStored("whether transaction 7 committed is unknown"), MAY_BE_STORED),
    ],
    ids=["not stored", "may be stored"],
)
async def test_a_reply_the_store_refuses_says_whether_it_may_be_stored(
    router: InboundRouter,
    store: RecordingStore,
    monkeypatch: pytest.MonkeyPatch,
    refusal: TransientError,
    status: int,
) -> None:
    # Both go to the SMSC as ESME_RX_T_APPN (it sends them again); only the second must never
    # count as proven read, its row being possibly there (carrier/answer_proof)
    async def refused(reply: InboundReply, builders: Any) -> Any:
        raise refusal

    monkeypatch.setattr(store, "record_reply", refused)
    assert await router.handle_many([mo(b"Oui")]) == [status]


async def test_the_replies_of_a_turn_are_written_together_not_one_after_another(
    router: InboundRouter, store: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A burst of replies would otherwise wait for one commit each (its fsync included).
    real = store.record_reply
    in_flight, most = 0, 0

    async def counting(reply: InboundReply, builders: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await real(reply, builders)
        finally:
            in_flight -= 1

    monkeypatch.setattr(store, "record_reply", counting)
    sms = [mo(f"reply {n}".encode(), source=f"3361234567{n}") for n in range(3)]
    assert await router.handle_many([*sms, delivery_receipt("b1")]) == [0, 0, 0, 0]
    assert most == 3
    assert sorted(reply.text for reply in store.replies) == ["reply 0", "reply 1", "reply 2"]


# --- a long reply cut inside a character ------------------------------------------------------


def _part(payload: bytes, data_coding: int, seq: int, total: int, ref: int = 9) -> InboundSm:
    udh = bytes([5, 0, 3, ref, total, seq])
    return dataclasses.replace(mo(udh + payload, data_coding), esm_class=0x40)


async def _reassembled_text(store: RecordingStore) -> str:
    bodies = await store.db.read(
        lambda conn: conn.execute("SELECT body FROM webhooks WHERE kind = 'reply'").fetchall()
    )
    [(body,)] = bodies
    return str(json.loads(body)["text"])


@pytest.mark.parametrize(
    ("parts", "data_coding", "whole"),
    [
        # an emoji's surrogate pair, its high half ending part 1 (UTF-16 big-endian)
        (
            [
                "Salut \ud83d".encode("utf-16-be", "surrogatepass"),
                "\ude00 à demain".encode("utf-16-be", "surrogatepass"),
            ],
            8,
            "Salut 😀 à demain",
        ),
        # a GSM escape pair: "€" is ESC (0x1B) then 0x65, ESC ending part 1
        ([b"Prix: 5\x1b", b"\x65 merci"], 0, "Prix: 5€ merci"),
    ],
)
async def test_a_reply_cut_inside_a_character_reads_whole_once_joined(
    router: InboundRouter, store: RecordingStore, parts: list[bytes], data_coding: int, whole: str
) -> None:
    # Each part was read alone, and the character cut between two came out as two wrong ones
    # (U+FFFD, or "?" and "e"): a phone or SMSC that cuts by octets sends such parts.
    await store.update_account("a", {"reassemble_replies": 1, "reply_url": "https://e.com/mo"})
    for seq, payload in enumerate(parts, 1):
        assert await router(_part(payload, data_coding, seq, len(parts))) == 0
    assert await _reassembled_text(store) == whole


async def test_a_ucs2_part_of_an_odd_length_spoils_only_itself(
    router: InboundRouter, store: RecordingStore
) -> None:
    # joined, its odd octet would shift every later part into other characters
    await store.update_account("a", {"reassemble_replies": 1, "reply_url": "https://e.com/mo"})
    parts = ["Bon".encode("utf-16-be") + b"\x00", "jour".encode("utf-16-be")]
    for seq, payload in enumerate(parts, 1):
        assert await router(_part(payload, 8, seq, len(parts))) == 0
    assert await _reassembled_text(store) == "Bon\ufffdjour"


@pytest.mark.parametrize("data_coding", [0, 1])
def test_a_receipt_written_in_gsm_keeps_its_ids_underscore(data_coding: int) -> None:
    # node-smpp's SMSC writes GSM 03.38 (even labelled IA5): "_" is 0x11, and read as ASCII
    # the id "nd_1" became "nd\x111", which matched nothing (the interop review)
    from smsrelay.domain.text import encode_gsm7

    body = encode_gsm7("id:nd_1 sub:001 dlvrd:001 stat:DELIVRD err:000")
    read = read_receipt(receipt(body, data_coding), 5.0)
    assert read is not None and read.carrier_id == "nd_1"


@pytest.mark.parametrize(
    "body",
    [
        b"id:MSG_0001 sub:001 dlvrd:001 stat:DELIVRD err:000 text:caf\x05 ok",
        b"id:MSG_0001 sub:001 dlvrd:001 stat:DELIVRD err:000 text:hi\x00",
    ],
    ids=["our GSM text copied into text:", "a NUL at the end"],
)
def test_an_ascii_receipt_whose_text_copies_gsm_bytes_keeps_its_id(body: bytes) -> None:
    # The diff review: any control byte read the whole receipt as GSM, "_" as "§"
    read = read_receipt(receipt(body, 0), 5.0)
    assert read is not None and read.carrier_id == "MSG_0001"
