"""How submit_sm_resp statuses are named in logs and a part's last error."""

from __future__ import annotations

import pytest

from smsrelay.dispatch.outcomes import status_name


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (0x00, "ESME_ROK (0x00000000)"),  # a late answer that took the part: not an error
        (0x58, "ESME_RTHROTTLED (0x00000058)"),
        (0x0B, "ESME_RINVDSTADR (0x0000000B)"),
        (0x400, "ESME_ERROR (0x00000400)"),  # an SMSC's own code
    ],
)
def test_statuses_are_named_by_smpp_or_as_an_error_with_their_code(status: int, name: str) -> None:
    assert status_name(status) == name
