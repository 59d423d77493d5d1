"""What a submit_sm_resp status means for the part: pure classification."""

from __future__ import annotations

from enum import StrEnum

from smsrelay.smpp.pdu import SLOW_DOWN_STATUSES, CommandStatus
from smsrelay.smpp.pdu import status_name as smpp_status_name


class Outcome(StrEnum):
    OK = "ok"
    SLOW_DOWN = "slow_down"  # throttled / queue full: retry soon, not counted as a failure
    RETRY = "retry"  # transient or unknown: retry a bounded number of times
    REJECT = "reject"  # permanent: the message is rejected with the reason


ESME_ROK = 0x00
S = CommandStatus
# Refusals the same submit_sm would get again: the message is rejected with the reason. The
# others (system errors, a failed submit, an SMSC's own codes) are retried a bounded number of
# times; throttling and a full queue slow the link down and are not counted.
PERMANENT = frozenset(
    {
        *(S.ESME_RINVMSGLEN, S.ESME_RINVPRTFLG, S.ESME_RINVREGDLVFLG, S.ESME_RINVSRCADR),
        *(S.ESME_RINVDSTADR, S.ESME_RINVMSGID, S.ESME_RINVSERTYP, S.ESME_RINVNUMDESTS),
        *(S.ESME_RINVESMCLASS, S.ESME_RINVSRCTON, S.ESME_RINVSRCNPI, S.ESME_RINVDSTTON),
        *(S.ESME_RINVDSTNPI, S.ESME_RINVSCHED, S.ESME_RINVEXPIRY, S.ESME_RX_P_APPN),
        *(S.ESME_RX_R_APPN, S.ESME_RINVOPTPARSTREAM, S.ESME_ROPTPARNOTALLWD),
        *(S.ESME_RINVPARLEN, S.ESME_RMISSINGOPTPARAM, S.ESME_RINVOPTPARAMVAL),
        S.ESME_RDELIVERYFAILURE,
    }
)


def classify(status: int) -> Outcome:
    if status == ESME_ROK:
        return Outcome.OK
    if status in SLOW_DOWN_STATUSES:
        return Outcome.SLOW_DOWN
    if status in PERMANENT:
        return Outcome.REJECT
    return Outcome.RETRY


def status_name(status: int) -> str:
    """SMPP's name and the code, or ESME_ERROR for an SMSC's own code."""
    name = smpp_status_name(status)
    if name.startswith("0x"):
        name = "ESME_ERROR"
    return f"{name} (0x{status:08X})"
