"""Bytes <-> PDUs, pure and I/O-free.

``encode(pdu)`` gives the wire bytes (it refuses values SMPP cannot carry with
:class:`LocalProtocolError`). :class:`PduReader` turns a byte stream, chunked any way, into PDUs;
a PDU it cannot read comes out as a :class:`RemoteProtocolError` in the same list, in order, so
the transport can answer it (generic_nack or an error response) and go on. A ``command_length``
outside 16..``max_length`` cannot be resynchronised: the error is ``fatal`` and the reader stops.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from smsrelay.smpp.errors import LocalProtocolError, RemoteProtocolError
from smsrelay.smpp.pdu import (
    PDU_TYPES,
    RESPONSE_BIT,
    AddressedPdu,
    Bind,
    BindResp,
    CommandStatus,
    DataSm,
    DataSmResp,
    DeliverSmResp,
    Pdu,
    ShortMessagePdu,
    SubmitSmResp,
    Tlvs,
)

MAX_COMMAND_LENGTH = 64 * 1024
HEADER_LENGTH = 16
MAX_SHORT_MESSAGE = 254
NO_LIMIT = sys.maxsize  # PduReader.feed's max_requests when nothing caps it

_HEADER = struct.Struct(">IIII")
_TLV_HEAD = struct.Struct(">HH")
_BIND_MID = struct.Struct(">BBB")
_ADDR = struct.Struct(">BB")
_SM_MID = struct.Struct(">BBB")
_SM_TAIL = struct.Struct(">BBBBB")
_DATA_SM_MID = struct.Struct(">BBB")

# C-octet string maximum sizes, terminating NUL included (SMPP 3.4 section 4).
_MAX = {
    "system_id": 16,
    "password": 9,
    "system_type": 13,
    "address_range": 41,
    "service_type": 6,
    "source_addr": 21,
    "destination_addr": 21,
    "schedule_delivery_time": 17,
    "validity_period": 17,
    "message_id": 65,
    "data_sm_addr": 65,  # data_sm's addresses may be longer than submit_sm's (4.7.1)
}
_MessageIdResp = SubmitSmResp | DeliverSmResp | DataSmResp

Event = Pdu | RemoteProtocolError


# --- encoding ------------------------------------------------------------------------------


def _cstr(value: str, field: str) -> bytes:
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{field} is not a latin-1 string") from exc
    if len(raw) >= _MAX[field] or b"\0" in raw:
        raise LocalProtocolError(f"{field} longer than {_MAX[field] - 1} octets or contains NUL")
    return raw + b"\0"


def _tlvs(tlvs: Tlvs) -> bytes:
    if not tlvs:
        return b""
    out = []
    for tag, value in tlvs:
        if not 0 <= tag <= 0xFFFF or len(value) > 0xFFFF:
            raise LocalProtocolError(f"TLV 0x{tag:04X} does not fit (length {len(value)})")
        out.append(_TLV_HEAD.pack(tag, len(value)))
        out.append(value)
    return b"".join(out)


def _bind_body(pdu: Pdu) -> bytes:
    assert isinstance(pdu, Bind)
    return b"".join(
        (
            _cstr(pdu.system_id, "system_id"),
            _cstr(pdu.password, "password"),
            _cstr(pdu.system_type, "system_type"),
            _BIND_MID.pack(pdu.interface_version, pdu.addr_ton, pdu.addr_npi),
            _cstr(pdu.address_range, "address_range"),
        )
    )


def _bind_resp_body(pdu: Pdu) -> bytes:
    assert isinstance(pdu, BindResp)
    return _cstr(pdu.system_id, "system_id") + _tlvs(pdu.tlvs)


def _addresses(pdu: AddressedPdu, source_field: str, destination_field: str) -> bytes:
    return b"".join(
        (
            _cstr(pdu.service_type, "service_type"),
            _ADDR.pack(pdu.source_addr_ton, pdu.source_addr_npi),
            _cstr(pdu.source_addr, source_field),
            _ADDR.pack(pdu.dest_addr_ton, pdu.dest_addr_npi),
            _cstr(pdu.destination_addr, destination_field),
        )
    )


def _sm_body(pdu: Pdu) -> bytes:
    assert isinstance(pdu, ShortMessagePdu)
    sm = pdu.short_message
    if len(sm) > MAX_SHORT_MESSAGE:
        raise LocalProtocolError("short_message longer than 254 octets: use message_payload")
    return b"".join(
        (
            _addresses(pdu, "source_addr", "destination_addr"),
            _SM_MID.pack(pdu.esm_class, pdu.protocol_id, pdu.priority_flag),
            _cstr(pdu.schedule_delivery_time, "schedule_delivery_time"),
            _cstr(pdu.validity_period, "validity_period"),
            _SM_TAIL.pack(
                pdu.registered_delivery,
                pdu.replace_if_present_flag,
                pdu.data_coding,
                pdu.sm_default_msg_id,
                len(sm),
            ),
            sm,
            _tlvs(pdu.tlvs),
        )
    )


def _data_sm_body(pdu: Pdu) -> bytes:
    assert isinstance(pdu, DataSm)
    return b"".join(
        (
            _addresses(pdu, "data_sm_addr", "data_sm_addr"),
            _DATA_SM_MID.pack(pdu.esm_class, pdu.registered_delivery, pdu.data_coding),
            _tlvs(pdu.tlvs),
        )
    )


def _message_id_body(pdu: Pdu) -> bytes:
    assert isinstance(pdu, _MessageIdResp)
    if pdu.status and not pdu.message_id:
        return b""  # SMPP 3.4 4.4.2: no body in an error response
    return _cstr(pdu.message_id, "message_id")


def _empty_body(pdu: Pdu) -> bytes:
    return b""


_BODY_ENCODERS: dict[int, Callable[[Pdu], bytes]] = {}
for _cid, _cls in PDU_TYPES.items():
    if issubclass(_cls, Bind):
        _BODY_ENCODERS[_cid] = _bind_body
    elif issubclass(_cls, BindResp):
        _BODY_ENCODERS[_cid] = _bind_resp_body
    elif issubclass(_cls, ShortMessagePdu):
        _BODY_ENCODERS[_cid] = _sm_body
    elif _cls is DataSm:
        _BODY_ENCODERS[_cid] = _data_sm_body
    elif _cls in (SubmitSmResp, DeliverSmResp, DataSmResp):
        _BODY_ENCODERS[_cid] = _message_id_body
    else:
        _BODY_ENCODERS[_cid] = _empty_body


def encode(pdu: Pdu) -> bytes:
    """The wire bytes of ``pdu``; raises :class:`LocalProtocolError` for unsendable values."""
    if not 0 <= pdu.sequence <= 0xFFFFFFFF or not 0 <= pdu.status <= 0xFFFFFFFF:
        raise LocalProtocolError("sequence and status must fit in 32 bits")
    try:
        body = _BODY_ENCODERS[pdu.command_id](pdu)
    except struct.error as exc:
        raise LocalProtocolError(f"{type(pdu).__name__}: {exc}") from exc
    length = HEADER_LENGTH + len(body)
    if length > MAX_COMMAND_LENGTH:
        raise LocalProtocolError(f"PDU of {length} octets exceeds {MAX_COMMAND_LENGTH}")
    return _HEADER.pack(length, pdu.command_id, pdu.status, pdu.sequence) + body


# --- decoding ------------------------------------------------------------------------------


class _Malformed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _read_cstr(body: bytes, pos: int) -> tuple[str, int]:
    nul = body.find(b"\0", pos)
    if nul < 0:
        raise _Malformed(CommandStatus.ESME_RINVCMDLEN, "unterminated C-octet string")
    return body[pos:nul].decode("latin-1"), nul + 1


def _read_tlvs(body: bytes, pos: int) -> Tlvs:
    end = len(body)
    if pos >= end:
        return ()
    out = []
    while pos < end:
        if end - pos < 4:
            raise _Malformed(CommandStatus.ESME_RINVOPTPARSTREAM, "truncated TLV header")
        tag, length = _TLV_HEAD.unpack_from(body, pos)
        pos += 4
        if pos + length > end:
            raise _Malformed(CommandStatus.ESME_RINVPARLEN, f"TLV 0x{tag:04X} overruns the PDU")
        out.append((tag, body[pos : pos + length]))
        pos += length
    return tuple(out)


def _need(body: bytes, pos: int, count: int) -> None:
    if pos + count > len(body):
        raise _Malformed(CommandStatus.ESME_RINVCMDLEN, "truncated mandatory parameters")


def _decode_bind(cls: type[Bind], status: int, seq: int, body: bytes) -> Pdu:
    system_id, p = _read_cstr(body, 0)
    password, p = _read_cstr(body, p)
    system_type, p = _read_cstr(body, p)
    _need(body, p, 3)
    version, ton, npi = _BIND_MID.unpack_from(body, p)
    address_range, p = _read_cstr(body, p + 3)
    return cls(
        sequence=seq,
        status=status,
        system_id=system_id,
        password=password,
        system_type=system_type,
        interface_version=version,
        addr_ton=ton,
        addr_npi=npi,
        address_range=address_range,
    )


def _decode_bind_resp(cls: type[BindResp], status: int, seq: int, body: bytes) -> Pdu:
    if not body:  # error responses usually come without a body
        return cls(sequence=seq, status=status)
    system_id, p = _read_cstr(body, 0)
    return cls(sequence=seq, status=status, system_id=system_id, tlvs=_read_tlvs(body, p))


def _read_addresses(body: bytes) -> tuple[dict[str, Any], int]:
    """service_type and both addresses (as AddressedPdu's fields), and where they end."""
    service_type, p = _read_cstr(body, 0)
    _need(body, p, 2)
    source_ton, source_npi = _ADDR.unpack_from(body, p)
    source_addr, p = _read_cstr(body, p + 2)
    _need(body, p, 2)
    dest_ton, dest_npi = _ADDR.unpack_from(body, p)
    destination_addr, p = _read_cstr(body, p + 2)
    fields = {
        "service_type": service_type,
        "source_addr_ton": source_ton,
        "source_addr_npi": source_npi,
        "source_addr": source_addr,
        "dest_addr_ton": dest_ton,
        "dest_addr_npi": dest_npi,
        "destination_addr": destination_addr,
    }
    return fields, p


def _decode_sm(cls: type[ShortMessagePdu], status: int, seq: int, body: bytes) -> Pdu:
    addresses, p = _read_addresses(body)
    _need(body, p, 3)
    esm_class, protocol_id, priority = _SM_MID.unpack_from(body, p)
    schedule, p = _read_cstr(body, p + 3)
    validity, p = _read_cstr(body, p)
    _need(body, p, 5)
    registered, replace, data_coding, default_id, sm_length = _SM_TAIL.unpack_from(body, p)
    p += 5
    if p + sm_length > len(body):
        raise _Malformed(CommandStatus.ESME_RINVMSGLEN, "sm_length overruns the PDU")
    return cls(
        sequence=seq,
        status=status,
        **addresses,
        esm_class=esm_class,
        protocol_id=protocol_id,
        priority_flag=priority,
        schedule_delivery_time=schedule,
        validity_period=validity,
        registered_delivery=registered,
        replace_if_present_flag=replace,
        data_coding=data_coding,
        sm_default_msg_id=default_id,
        short_message=body[p : p + sm_length],
        tlvs=_read_tlvs(body, p + sm_length),
    )


def _decode_data_sm(status: int, seq: int, body: bytes) -> Pdu:
    addresses, p = _read_addresses(body)
    _need(body, p, 3)
    esm_class, registered, data_coding = _DATA_SM_MID.unpack_from(body, p)
    return DataSm(
        sequence=seq,
        status=status,
        **addresses,
        esm_class=esm_class,
        registered_delivery=registered,
        data_coding=data_coding,
        tlvs=_read_tlvs(body, p + 3),
    )


def _decode_message_id(cls: type[_MessageIdResp], status: int, seq: int, body: bytes) -> Pdu:
    # Lenient: no body (error responses) or a missing NUL (seen in the wild) are accepted.
    nul = body.find(b"\0")
    raw = body if nul < 0 else body[:nul]
    return cls(sequence=seq, status=status, message_id=raw.decode("latin-1"))


def _decode_empty(cls: type[Pdu], status: int, seq: int, body: bytes) -> Pdu:
    return cls(sequence=seq, status=status)  # a stray body is ignored


_Decoder = Callable[[int, int, bytes], Pdu]
_DECODERS: dict[int, _Decoder] = {}
for _cid, _cls in PDU_TYPES.items():
    if issubclass(_cls, Bind):
        _DECODERS[_cid] = partial(_decode_bind, _cls)
    elif issubclass(_cls, BindResp):
        _DECODERS[_cid] = partial(_decode_bind_resp, _cls)
    elif issubclass(_cls, ShortMessagePdu):
        _DECODERS[_cid] = partial(_decode_sm, _cls)
    elif _cls is DataSm:
        _DECODERS[_cid] = _decode_data_sm
    elif issubclass(_cls, _MessageIdResp):
        _DECODERS[_cid] = partial(_decode_message_id, _cls)
    else:
        _DECODERS[_cid] = partial(_decode_empty, _cls)


def decode_pdu(command_id: int, status: int, sequence: int, body: bytes) -> Event:
    """One PDU from its header fields and body, or the error to answer it with."""
    decoder = _DECODERS.get(command_id)
    if decoder is None:
        return RemoteProtocolError(
            CommandStatus.ESME_RINVCMDID,
            sequence,
            f"unknown command_id 0x{command_id:08X}",
            command_id=command_id,
        )
    try:
        return decoder(status, sequence, body)
    except _Malformed as exc:
        return RemoteProtocolError(exc.status, sequence, str(exc), command_id=command_id)


def decode(data: bytes) -> Pdu:
    """Exactly one whole PDU from ``data``; raises :class:`RemoteProtocolError` otherwise."""
    events = PduReader().feed(data)
    if len(events) != 1 or not isinstance(events[0], Pdu):
        if events and isinstance(events[0], RemoteProtocolError):
            raise events[0]
        raise RemoteProtocolError(CommandStatus.ESME_RINVCMDLEN, 0, "not exactly one PDU")
    return events[0]


class PduReader:
    """Incremental framing: feed bytes as they come, get whole PDUs (and errors) in order.

    ``max_requests`` caps the requests one ``feed`` decodes (flow control: a peer that pipelines
    faster than we answer): whole PDUs past the cap are kept undecoded (``held_back``) and come
    out of a later ``feed``, ``b""`` included, in order."""

    __slots__ = ("_at", "_buf", "_held", "_max_length", "_need", "broken")

    def __init__(self, max_length: int = MAX_COMMAND_LENGTH) -> None:
        self._buf = bytearray()
        self._need = HEADER_LENGTH
        self._max_length = max_length
        # bytes held back by max_requests, from _at on: kept as read, not copied (a link
        # decoding a held read a few PDUs at a time would copy it again at each step)
        self._held = b""
        self._at = 0
        self.broken = False

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._held) - self._at

    @property
    def held_back(self) -> bool:
        """Whole PDUs wait, kept back by ``max_requests``: a ``feed(b"")`` decodes them."""
        return bool(self._held)

    def feed(self, data: bytes, max_requests: int = NO_LIMIT) -> list[Event]:
        if self.broken:
            return []
        if self._held:
            buf, start, self._held, self._at = self._held, self._at, b"", 0
            if data:  # read while held back (a transport that reads on once paused)
                buf, start = buf[start:] + data, 0
            return self._parse(buf, start, max_requests)
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []
            buf = bytes(self._buf)
            self._buf.clear()
        else:
            buf = data
        return self._parse(buf, 0, max_requests)

    def _parse(self, buf: bytes, pos: int, max_requests: int) -> list[Event]:
        out: list[Event] = []
        size = len(buf)
        unpack = _HEADER.unpack_from
        requests = 0
        while size - pos >= HEADER_LENGTH:
            length, command_id, status, seq = unpack(buf, pos)
            if length < HEADER_LENGTH or length > self._max_length:
                out.append(self._fatal(length, command_id, seq))
                return out
            if size - pos < length:
                self._need = length
                break
            if not command_id & RESPONSE_BIT:
                if requests >= max_requests:  # the rest waits, undecoded, for room
                    self._held, self._at, self._need = buf, pos, HEADER_LENGTH
                    return out
                requests += 1
            out.append(decode_pdu(command_id, status, seq, buf[pos + HEADER_LENGTH : pos + length]))
            pos += length
        else:
            self._need = HEADER_LENGTH
        if pos < size:
            self._buf += buf[pos:]
        return out

    def _fatal(self, length: int, command_id: int, seq: int) -> RemoteProtocolError:
        self.broken = True
        self._buf.clear()
        self._held = b""
        return RemoteProtocolError(
            CommandStatus.ESME_RINVCMDLEN,
            seq,
            f"command_length {length} outside {HEADER_LENGTH}..{self._max_length}",
            command_id=command_id,
            fatal=True,
        )
