"""What a submit_sm_resp status means for the part: pure classification."""

from __future__ import annotations

from enum import StrEnum

from smsrelay.smpp.pdu import SLOW_DOWN_STATUSES


class Outcome(StrEnum):
    OK = "ok"
    SLOW_DOWN = "slow_down"  # throttled / queue full: retry soon, not counted as a failure
    RETRY = "retry"  # transient or unknown: retry a bounded number of times
    REJECT = "reject"  # permanent: the message is rejected with the reason


ESME_ROK = 0x00
SLOW_DOWN = {int(status): status.name for status in SLOW_DOWN_STATUSES}
PERMANENT = {
    0x0A: "ESME_RINVSRCADR",
    0x0B: "ESME_RINVDSTADR",
    0x01: "ESME_RINVMSGLEN",
    0x06: "ESME_RINVPRTFLG",
    0x0C: "ESME_RINVMSGID",
    0x33: "ESME_RINVNUMDESTS",
    0x48: "ESME_RINVSRCTON",
    0x49: "ESME_RINVSRCNPI",
    0x50: "ESME_RINVDSTTON",
    0x51: "ESME_RINVDSTNPI",
    0x61: "ESME_RINVSCHED",
    0x62: "ESME_RINVEXPIRY",
}
TRANSIENT = {0x08: "ESME_RSYSERR", 0x45: "ESME_RSUBMITFAIL", 0x64: "ESME_RX_T_APPN"}


def classify(status: int) -> Outcome:
    if status == ESME_ROK:
        return Outcome.OK
    if status in SLOW_DOWN:
        return Outcome.SLOW_DOWN
    if status in PERMANENT:
        return Outcome.REJECT
    return Outcome.RETRY


def status_name(status: int) -> str:
    name = SLOW_DOWN.get(status) or PERMANENT.get(status) or TRANSIENT.get(status)
    if name is None:
        name = "ESME_ROK" if status == 0 else "ESME_ERROR"
    return f"{name} (0x{status:08X})"
