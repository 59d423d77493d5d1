"""SMPP 3.4 PDUs as frozen values.

Every PDU carries its ``sequence`` and ``status`` (the header's command_status, 0 in requests).
TLVs (optional parameters) are kept in wire order as a tuple of ``(tag, value)`` pairs; use
:func:`tlv_get` to read one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from smsrelay.quick_init import quick_init

Tlv = tuple[int, bytes]
Tlvs = tuple[Tlv, ...]

RESPONSE_BIT = 0x80000000
INTERFACE_VERSION = 0x34
ESM_CLASS_UDHI = 0x40
ESM_CLASS_RECEIPT = 0x04
ESM_CLASS_TYPE_MASK = 0x3C
# esm_class message types of a report: SMSC receipt, SME ack, manual ack, intermediate
RECEIPT_ESM_TYPES = frozenset({0x04, 0x08, 0x10, 0x20})


class CommandId(IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class CommandStatus(IntEnum):
    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RCANCELFAIL = 0x11
    ESME_RREPLACEFAIL = 0x13
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVNUMDESTS = 0x33
    ESME_RINVESMCLASS = 0x43
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RMISSINGOPTPARAM = 0xC3
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RDELIVERYFAILURE = 0xFE
    ESME_RUNKNOWNERR = 0xFF


class Tag(IntEnum):
    """TLV tags the gateway reads or writes."""

    RECEIPTED_MESSAGE_ID = 0x001E
    SAR_MSG_REF_NUM = 0x020C
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    MESSAGE_STATE = 0x0427


class MessageState(IntEnum):
    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


# The SMSC asks us to slow down (throttled, queue full): retry soon, not a failure.
SLOW_DOWN_STATUSES = frozenset({CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL})


def status_name(status: int) -> str:
    """``ESME_RTHROTTLED`` for 0x58; ``0x...`` for a value without a name."""
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"0x{status:08X}"


def tlv_get(tlvs: Tlvs, tag: int) -> bytes | None:
    """The value of the first TLV with ``tag``, or None."""
    for t, value in tlvs:
        if t == tag:
            return value
    return None


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Pdu:
    command_id: ClassVar[CommandId]
    sequence: int
    status: int = 0

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)


# --- binds ---------------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Bind(Pdu):
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransmitter(Bind):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSMITTER


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class BindReceiver(Bind):
    command_id: ClassVar[CommandId] = CommandId.BIND_RECEIVER


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransceiver(Bind):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSCEIVER


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class BindResp(Pdu):
    system_id: str = ""
    tlvs: Tlvs = ()


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransmitterResp(BindResp):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSMITTER_RESP


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class BindReceiverResp(BindResp):
    command_id: ClassVar[CommandId] = CommandId.BIND_RECEIVER_RESP


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransceiverResp(BindResp):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSCEIVER_RESP


# --- short messages ------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AddressedPdu(Pdu):
    """What submit_sm, deliver_sm and data_sm begin with: service type, both addresses."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ShortMessagePdu(AddressedPdu):
    """The body shared by submit_sm and deliver_sm."""

    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: Tlvs = ()


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitSm(ShortMessagePdu):
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverSm(ShortMessagePdu):
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class DataSm(AddressedPdu):
    """SMPP 3.4 section 4.7: deliver_sm's alternative, text (if any) in message_payload.

    Some SMSCs deliver replies and receipts this way; the gateway never sends one.
    """

    command_id: ClassVar[CommandId] = CommandId.DATA_SM
    registered_delivery: int = 0
    data_coding: int = 0
    tlvs: Tlvs = ()


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitSmResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM_RESP
    message_id: str = ""


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverSmResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM_RESP
    message_id: str = ""


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class DataSmResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.DATA_SM_RESP
    message_id: str = ""


# --- header-only PDUs ----------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EnquireLink(Pdu):
    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EnquireLinkResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK_RESP


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Unbind(Pdu):
    command_id: ClassVar[CommandId] = CommandId.UNBIND


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class UnbindResp(Pdu):
    command_id: ClassVar[CommandId] = CommandId.UNBIND_RESP


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class GenericNack(Pdu):
    command_id: ClassVar[CommandId] = CommandId.GENERIC_NACK


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AlertNotification(Pdu):
    """SMPP 3.4 4.12: a handset is reachable again. It has no response PDU (a generic_nack
    is wrong too); its addresses are not read: the gateway never asks for alerts (set_dpf)."""

    command_id: ClassVar[CommandId] = CommandId.ALERT_NOTIFICATION


PDU_TYPES: dict[int, type[Pdu]] = {
    cls.command_id: cls
    for cls in (
        BindTransmitter,
        BindReceiver,
        BindTransceiver,
        BindTransmitterResp,
        BindReceiverResp,
        BindTransceiverResp,
        SubmitSm,
        SubmitSmResp,
        DeliverSm,
        DeliverSmResp,
        DataSm,
        DataSmResp,
        EnquireLink,
        EnquireLinkResp,
        Unbind,
        UnbindResp,
        GenericNack,
        AlertNotification,
    )
}


def response_to(command_id: int, sequence: int, status: int) -> Pdu:
    """The response PDU for a request ``command_id`` carrying ``status``.

    A command without a response type of its own (or an unknown one) gets a generic_nack.
    """
    cls = PDU_TYPES.get(command_id | RESPONSE_BIT)
    if cls is None or command_id & RESPONSE_BIT:
        return GenericNack(sequence=sequence, status=status)
    return cls(sequence=sequence, status=status)
