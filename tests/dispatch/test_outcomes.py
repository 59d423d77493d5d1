"""How submit_sm_resp statuses are named in logs and a part's last error."""

from __future__ import annotations

import pytest

from smsrelay.dispatch.outcomes import Outcome, classify, status_name


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (0x00, "ESME_ROK (0x00000000)"),  # a late answer that took the part: not an error
        (0x58, "ESME_RTHROTTLED (0x00000058)"),
        (0x0B, "ESME_RINVDSTADR (0x0000000B)"),
        (0x400, "ESME_ERROR (0x00000400)"),  # an SMSC's own code
        (0x66, "ESME_RX_R_APPN (0x00000066)"),  # was ESME_ERROR: a name table of its own
    ],
)
def test_statuses_are_named_by_smpp_or_as_an_error_with_their_code(status: int, name: str) -> None:
    assert status_name(status) == name


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x00, Outcome.OK),
        (0x58, Outcome.SLOW_DOWN),
        (0x14, Outcome.SLOW_DOWN),
        (0x0B, Outcome.REJECT),
        # each was retried submit_attempts times, then ended "ko" instead of rejected
        *((code, Outcome.REJECT) for code in (0x07, 0x15, 0x43, 0x65, 0x66, 0xC0, 0xC4, 0xFE)),
        (0x08, Outcome.RETRY),  # the SMSC's trouble: it may take it next time
        (0x45, Outcome.RETRY),
        (0x64, Outcome.RETRY),  # "temporary application error"
        (0x400, Outcome.RETRY),  # an SMSC's own code: not known to be final
    ],
)
def test_refusals_the_same_submit_would_get_again_reject_the_message(
    status: int, outcome: Outcome
) -> None:
    assert classify(status) is outcome
