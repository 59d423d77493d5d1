"""Codec: every PDU round-trips; any chunking decodes alike; garbage gives errors, never crashes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrelay.smpp.codec import MAX_COMMAND_LENGTH, PduReader, decode, encode
from smsrelay.smpp.errors import LocalProtocolError, RemoteProtocolError
from smsrelay.smpp.pdu import (
    RESPONSE_BIT,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CommandId,
    CommandStatus,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    response_to,
)

SUBMIT = SubmitSm(
    sequence=7,
    source_addr_ton=1,
    source_addr_npi=1,
    source_addr="33612345678",
    dest_addr_ton=1,
    dest_addr_npi=1,
    destination_addr="33798765432",
    esm_class=0x40,
    registered_delivery=1,
    data_coding=8,
    short_message=b"\x05\x00\x03\x2a\x02\x01\x00h\x00i",
    tlvs=((0x020C, b"\x00\x2a"), (0x1403, b"vendor")),
)

EXAMPLES: list[Pdu] = [
    BindTransmitter(sequence=1, system_id="esme", password="secret", system_type="VMA"),
    BindReceiver(sequence=2, system_id="esme", password="pw", addr_ton=1, addr_npi=1),
    BindTransceiver(sequence=3, system_id="esme", password="pw", address_range="^336"),
    BindTransmitterResp(sequence=1, system_id="smsc"),
    BindReceiverResp(sequence=2, system_id="smsc", tlvs=((0x0210, b"\x34"),)),
    BindTransceiverResp(sequence=3, status=CommandStatus.ESME_RINVPASWD),
    SUBMIT,
    SubmitSmResp(sequence=7, message_id="0001e240"),
    SubmitSmResp(sequence=8, status=CommandStatus.ESME_RTHROTTLED),
    DeliverSm(sequence=9, esm_class=0x04, short_message=b"id:1 stat:DELIVRD", tlvs=()),
    DeliverSmResp(sequence=9),
    DeliverSmResp(sequence=10, status=CommandStatus.ESME_RX_T_APPN),
    EnquireLink(sequence=0x7FFFFFFF),
    EnquireLinkResp(sequence=0x7FFFFFFF),
    Unbind(sequence=11),
    UnbindResp(sequence=11),
    GenericNack(sequence=12, status=CommandStatus.ESME_RINVCMDID),
    DataSm(
        sequence=13,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="3" * 64,  # data_sm allows 65-octet addresses, submit_sm only 21
        destination_addr="33798765432",
        esm_class=0x04,
        data_coding=8,
        tlvs=((0x001E, b"0001e240\0"), (0x0427, b"\x02"), (0x0424, b"id:0001e240")),
    ),
    DataSmResp(sequence=13, message_id="mo-1"),
    DataSmResp(sequence=14, status=CommandStatus.ESME_RX_T_APPN),
]


@pytest.mark.parametrize("pdu", EXAMPLES, ids=lambda p: type(p).__name__)
def test_every_pdu_round_trips(pdu: Pdu) -> None:
    data = encode(pdu)
    assert struct.unpack(">II", data[:8]) == (len(data), pdu.command_id)
    assert decode(data) == pdu


def test_enquire_link_wire_bytes() -> None:
    assert encode(EnquireLink(sequence=1)).hex() == "00000010000000150000000000000001"


def test_submit_sm_wire_layout() -> None:
    body = encode(SUBMIT)[16:]
    assert body.startswith(b"\x00\x01\x0133612345678\x00\x01\x0133798765432\x00\x40\x00\x00")
    # schedule, validity, registered_delivery, replace, data_coding, default_msg_id, sm_length
    assert b"\x00\x00\x01\x00\x08\x00\x0a" + SUBMIT.short_message in body


def test_data_sm_wire_layout() -> None:
    pdu = DataSm(
        sequence=1,
        service_type="WAP",
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="33612345678",
        destination_addr="3361",
        esm_class=0x04,
        registered_delivery=1,
        data_coding=8,
        tlvs=((0x0424, b"hi"),),
    )
    # service_type, source ton/npi/addr, dest ton/npi/addr, esm_class, registered, coding, TLVs
    assert encode(pdu)[16:] == (
        b"WAP\x00\x01\x0133612345678\x00\x00\x003361\x00\x04\x01\x08\x04\x24\x00\x02hi"
    )
    assert encode(pdu)[4:8] == b"\x00\x00\x01\x03"


def test_error_response_is_sent_without_body() -> None:
    data = encode(SubmitSmResp(sequence=5, status=CommandStatus.ESME_RSUBMITFAIL))
    assert len(data) == 16


def test_bodyless_and_unterminated_responses_are_accepted() -> None:
    header = struct.pack(">IIII", 16, CommandId.BIND_TRANSMITTER_RESP, 0x0E, 4)
    assert decode(header) == BindTransmitterResp(sequence=4, status=0x0E)
    raw = b"abc123"
    data = struct.pack(">IIII", 16 + len(raw), CommandId.SUBMIT_SM_RESP, 0, 5) + raw
    assert decode(data) == SubmitSmResp(sequence=5, message_id="abc123")


def test_response_to_builds_the_matching_response() -> None:
    assert response_to(CommandId.SUBMIT_SM, 3, 0x58) == SubmitSmResp(sequence=3, status=0x58)
    assert response_to(0x99, 4, 3) == GenericNack(sequence=4, status=3)
    assert response_to(CommandId.SUBMIT_SM_RESP, 5, 3) == GenericNack(sequence=5, status=3)


@pytest.mark.parametrize(
    "pdu",
    [
        BindTransmitter(sequence=1, system_id="s", password="123456789"),
        SubmitSm(sequence=1, short_message=b"x" * 255),
        SubmitSm(sequence=1, source_addr="1" * 21),
        SubmitSm(sequence=1, destination_addr="caf\u00e9\u20ac"),
        SubmitSm(sequence=1, tlvs=((0x10000, b""),)),
        SubmitSmResp(sequence=2**32),
        DataSm(sequence=1, source_addr="1" * 65),
    ],
)
def test_encode_refuses_what_smpp_cannot_carry(pdu: Pdu) -> None:
    with pytest.raises(LocalProtocolError):
        encode(pdu)


# --- framing errors --------------------------------------------------------------------------


def test_command_length_above_cap_is_fatal_and_stops_the_reader() -> None:
    reader = PduReader()
    header = struct.pack(">IIII", MAX_COMMAND_LENGTH + 1, CommandId.SUBMIT_SM, 0, 9)
    [error] = reader.feed(header)
    assert isinstance(error, RemoteProtocolError)
    assert (error.status, error.sequence, error.fatal) == (CommandStatus.ESME_RINVCMDLEN, 9, True)
    assert reader.feed(encode(EnquireLink(sequence=1))) == []


def test_command_length_below_header_is_fatal() -> None:
    [error] = PduReader().feed(struct.pack(">IIII", 15, CommandId.ENQUIRE_LINK, 0, 1))
    assert isinstance(error, RemoteProtocolError) and error.fatal


def test_a_pdu_of_exactly_the_cap_is_read_and_one_more_octet_is_refused() -> None:
    filler = MAX_COMMAND_LENGTH - 16 - 11 - 4
    pdu = BindReceiverResp(sequence=1, system_id="x" * 10, tlvs=((0x1400, b"\x00" * filler),))
    data = encode(pdu)
    assert len(data) == MAX_COMMAND_LENGTH
    assert PduReader().feed(data) == [pdu]
    with pytest.raises(LocalProtocolError):
        encode(BindReceiverResp(sequence=1, system_id="x" * 11, tlvs=pdu.tlvs))


def test_unknown_command_is_an_error_and_the_stream_goes_on() -> None:
    unknown = struct.pack(">IIII", 20, 0x00000003, 0, 5) + b"abcd"
    events = PduReader().feed(unknown + encode(EnquireLink(sequence=6)))
    assert isinstance(events[0], RemoteProtocolError)
    assert events[0].status == CommandStatus.ESME_RINVCMDID and not events[0].fatal
    assert events[1] == EnquireLink(sequence=6)


def test_truncated_body_is_an_error_naming_the_pdu() -> None:
    good = encode(SUBMIT)
    cut = good[16:40]
    bad = struct.pack(">IIII", 16 + len(cut), CommandId.SUBMIT_SM, 0, 77) + cut
    events = PduReader().feed(bad + encode(Unbind(sequence=78)))
    error = events[0]
    assert isinstance(error, RemoteProtocolError)
    assert (error.sequence, error.command_id) == (77, CommandId.SUBMIT_SM)
    assert events[1] == Unbind(sequence=78)


def test_sm_length_overrunning_the_body_is_invalid_message_length() -> None:
    body = encode(SubmitSm(sequence=1, short_message=b"abc"))[16:]
    body = body[:-4] + b"\x09abc"  # sm_length 9, only 3 octets follow
    data = struct.pack(">IIII", 16 + len(body), CommandId.SUBMIT_SM, 0, 1) + body
    [error] = PduReader().feed(data)
    assert isinstance(error, RemoteProtocolError)
    assert error.status == CommandStatus.ESME_RINVMSGLEN


def test_truncated_tlv_is_an_optional_parameter_error() -> None:
    data = encode(SubmitSm(sequence=1, tlvs=((0x0424, b"abcdef"),)))[:-2]
    data = struct.pack(">I", len(data)) + data[4:]
    [error] = PduReader().feed(data)
    assert isinstance(error, RemoteProtocolError)
    assert error.status == CommandStatus.ESME_RINVPARLEN


# --- properties ------------------------------------------------------------------------------

_latin1 = st.characters(min_codepoint=1, max_codepoint=255)


def _cstr(max_len: int) -> st.SearchStrategy[str]:
    return st.text(_latin1, max_size=max_len - 1)


_octet = st.integers(0, 255)
_seq = st.integers(1, 0x7FFFFFFF)
_tlvs = st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=300)), max_size=4).map(tuple)


def _sm(cls: type[SubmitSm] | type[DeliverSm]) -> st.SearchStrategy[Pdu]:
    return st.builds(
        cls,
        sequence=_seq,
        service_type=_cstr(6),
        source_addr_ton=_octet,
        source_addr_npi=_octet,
        source_addr=_cstr(21),
        dest_addr_ton=_octet,
        dest_addr_npi=_octet,
        destination_addr=_cstr(21),
        esm_class=_octet,
        protocol_id=_octet,
        priority_flag=_octet,
        schedule_delivery_time=_cstr(17),
        validity_period=_cstr(17),
        registered_delivery=_octet,
        replace_if_present_flag=_octet,
        data_coding=_octet,
        sm_default_msg_id=_octet,
        short_message=st.binary(max_size=254),
        tlvs=_tlvs,
    )


def _bind(cls: type[BindTransmitter | BindReceiver | BindTransceiver]) -> st.SearchStrategy[Pdu]:
    return st.builds(
        cls,
        sequence=_seq,
        system_id=_cstr(16),
        password=_cstr(9),
        system_type=_cstr(13),
        interface_version=_octet,
        addr_ton=_octet,
        addr_npi=_octet,
        address_range=_cstr(41),
    )


def _bind_resp(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    return st.builds(cls, sequence=_seq, system_id=_cstr(16), tlvs=_tlvs)


pdus: st.SearchStrategy[Pdu] = st.one_of(
    _sm(SubmitSm),
    _sm(DeliverSm),
    *(_bind(c) for c in (BindTransmitter, BindReceiver, BindTransceiver)),
    *(_bind_resp(c) for c in (BindTransmitterResp, BindReceiverResp, BindTransceiverResp)),
    st.builds(SubmitSmResp, sequence=_seq, message_id=_cstr(65)),
    st.builds(DeliverSmResp, sequence=_seq),
    *(
        st.builds(c, sequence=_seq, status=st.integers(0, 0xFFFFFFFF))
        for c in (EnquireLink, EnquireLinkResp, Unbind, UnbindResp, GenericNack)
    ),
)


@settings(deadline=None)  # no flaky deadlines on a loaded machine
@given(pdus)
def test_any_pdu_round_trips(pdu: Pdu) -> None:
    assert decode(encode(pdu)) == pdu


@settings(deadline=None)  # no flaky deadlines on a loaded machine
@given(st.lists(pdus, min_size=1, max_size=6), st.data())
def test_any_chunking_decodes_alike(batch: list[Pdu], data: st.DataObject) -> None:
    stream = b"".join(encode(p) for p in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    reader, events = PduReader(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        events += reader.feed(stream[start:end])
    assert events == batch
    assert reader.buffered == 0


@settings(deadline=None)
@given(st.lists(pdus, min_size=1, max_size=8), st.data())
def test_a_request_cap_holds_pdus_back_in_order_and_never_decodes_past_it(
    batch: list[Pdu], data: st.DataObject
) -> None:
    # Flow control: a link at its mark decodes no further; what waits comes out later.
    stream = b"".join(encode(p) for p in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader, events = PduReader(), []

    def feed(chunk: bytes, cap: int) -> None:
        decoded = reader.feed(chunk, max_requests=cap)
        assert sum(not pdu.command_id & RESPONSE_BIT for pdu in decoded) <= cap
        events.extend(decoded)

    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        feed(stream[start:end], data.draw(st.integers(0, 3)))
        while reader.held_back:  # room again: a whole request waits, so each step takes one
            feed(b"", data.draw(st.integers(1, 3)))
    assert events == batch
    assert reader.buffered == 0 and not reader.held_back


def test_pdus_held_back_are_decoded_with_what_comes_after_them() -> None:
    first, second, third = (EnquireLink(sequence=n) for n in (1, 2, 3))
    reader = PduReader()
    assert reader.feed(encode(first) + encode(second), max_requests=1) == [first]
    assert reader.held_back
    assert reader.feed(encode(third)) == [second, third]  # a read that came meanwhile
    assert not reader.held_back and reader.buffered == 0


def test_responses_are_not_capped() -> None:
    answers = [SubmitSmResp(sequence=n, message_id=str(n)) for n in range(5)]
    request = EnquireLink(sequence=9)
    reader = PduReader()
    stream = b"".join(encode(pdu) for pdu in [*answers, request])
    assert reader.feed(stream, max_requests=0) == answers
    assert reader.feed(b"", max_requests=1) == [request]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_give_pdus_or_remote_errors_only(garbage: bytes) -> None:
    for event in PduReader().feed(garbage):
        assert isinstance(event, Pdu | RemoteProtocolError)


@settings(max_examples=300, deadline=None)
@given(pdus, st.data())
def test_corrupted_pdus_give_pdus_or_remote_errors_only(pdu: Pdu, data: st.DataObject) -> None:
    raw = bytearray(encode(pdu))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(4, len(raw) - 1))  # keep the length: test the bodies
        raw[index] = data.draw(_octet)
    for event in PduReader().feed(bytes(raw)):
        assert isinstance(event, Pdu | RemoteProtocolError)
