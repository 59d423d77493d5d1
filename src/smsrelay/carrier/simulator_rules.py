"""What the simulator does with the parts for one number, set from a test.

A CI suite needs, in one run, one message delivered, another undeliverable, a third refused
by the carrier, a fourth whose receipt comes late or never: the simulator's rates are global
and random. A rule names a destination and what happens to every part sent to it until it
is removed: the ``submit_sm_resp`` status, the receipt's ``stat`` (or none at all) and its
delay. Pure: the simulator applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smsrelay.domain.numbers import parse_recipient
from smsrelay.errors import DomainError
from smsrelay.smpp.pdu import CommandStatus, MessageState, status_name
from smsrelay.smpp.receipts import STAT_STATES

# The receipt stats SMPP 3.4 Appendix B lists for final states, with their message_state.
STATS: dict[str, MessageState] = {
    stat: state for stat, state in STAT_STATES.items() if state is not MessageState.ENROUTE
}
MAX_DELAY_MS = 24 * 3600 * 1000
_FIELDS = {"to", "submit_status", "stat", "err", "receipt", "receipt_delay_ms"}


class RuleError(ValueError):
    """A rule the simulator cannot follow; the message says which field and why."""


@dataclass(frozen=True)
class Rule:
    to: str  # international digits, as submit_sm carries them: "33612345678"
    submit_status: int = 0  # ESME_ROK: taken; anything else refuses the part
    stat: str | None = None  # None: the simulator's delivery_rate decides
    err: int | None = None  # None: 0 for DELIVRD, 1 otherwise
    receipt: bool = True  # False: the SMSC never reports (the message stays submitted)
    receipt_delay_ms: int | None = None  # None: the simulator's own

    def as_json(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "submit_status": status_name(self.submit_status),
            "stat": self.stat,
            "err": self.err,
            "receipt": self.receipt,
            "receipt_delay_ms": self.receipt_delay_ms,
        }


def number_key(number: str) -> str:
    """A submit_sm's destination as rules are keyed: its digits (international)."""
    return "".join(char for char in number if char.isdigit())


def rule_number(raw: str) -> str:
    """A rule's ``to`` read as the API reads a send's (06…, +33 6…, 0033…), as digits."""
    try:
        return parse_recipient(raw).digits
    except DomainError as exc:
        raise RuleError(f'"to" must be the destination number, e.g. "0612345678": {exc}') from None


def parse_rule(body: Any) -> Rule:
    """A rule from a control API body (JSON object); RuleError names what is wrong."""
    if not isinstance(body, dict):
        raise RuleError('expected a JSON object such as {"to": "33612345678", "stat": "UNDELIV"}')
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise RuleError(f"unknown field(s) {unknown}: the fields are {sorted(_FIELDS)}")
    return Rule(
        to=rule_number(str(body.get("to", ""))),
        submit_status=_submit_status(body.get("submit_status", 0)),
        stat=_stat(body.get("stat")),
        err=_whole(body, "err", 0, 999),
        receipt=_flag(body.get("receipt", True)),
        receipt_delay_ms=_whole(body, "receipt_delay_ms", 0, MAX_DELAY_MS),
    )


def receipt_err(rule: Rule, stat: str) -> int:
    if rule.err is not None:
        return rule.err
    return 0 if stat == "DELIVRD" else 1


def _submit_status(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(CommandStatus[value.strip().upper()])
        except KeyError:
            raise RuleError(
                f"submit_status {value!r} is not an SMPP status name (e.g. ESME_RINVDSTADR) "
                "nor a number"
            ) from None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF:
        return value
    raise RuleError("submit_status must be an SMPP status name or a number (0 = taken)")


def _stat(value: Any) -> str | None:
    if value is None:
        return None
    stat = str(value).strip().upper()
    if stat not in STATS:
        raise RuleError(f"stat must be one of {sorted(STATS)}")
    return stat


def _whole(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RuleError(f"{name} must be a whole number from {low} to {high}")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise RuleError("receipt must be true or false")
