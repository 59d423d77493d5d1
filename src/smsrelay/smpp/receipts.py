"""Delivery receipt text (SMPP 3.4 Appendix B) and carrier message id matching.

The format is a de-facto standard only: :func:`parse_receipt` accepts seconds in the dates,
upper- or mixed-case keys, ``submit_date`` spellings, long stat words and missing fields.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from smsrelay.quick_init import quick_init
from smsrelay.smpp.pdu import MessageState

STAT_STATES: dict[str, MessageState] = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
}
STATE_STATS: dict[MessageState, str] = {state: word for word, state in STAT_STATES.items()}

# Long or odd spellings seen in the wild, mapped to the Appendix B words.
_STAT_ALIASES = {
    "DELIVERED": "DELIVRD",
    "UNDELIVERABLE": "UNDELIV",
    "UNDELIVERED": "UNDELIV",
    "ACCEPTED": "ACCEPTD",
    "REJECTED": "REJECTD",
    "EXPIRD": "EXPIRED",
    "DELETD": "DELETED",
    "FAILED": "UNDELIV",
}

_KEY = re.compile(r"(?i)(?<![a-z_])(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text):")
_MAX_ID_LENGTH = 64


@quick_init
@dataclass(frozen=True, slots=True)
class ReceiptText:
    id: str
    sub: int | None = None
    dlvrd: int | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    stat: str | None = None
    err: str | None = None
    text: str | None = None

    @property
    def state(self) -> MessageState | None:
        return STAT_STATES.get(self.stat or "")


@lru_cache(maxsize=256)
def _date(value: datetime) -> str:
    return value.strftime("%y%m%d%H%M")


def format_receipt(
    message_id: str,
    stat: str,
    *,
    submit_date: datetime,
    done_date: datetime,
    sub: int = 1,
    dlvrd: int | None = None,
    err: int = 0,
    text: str = "",
) -> str:
    """The Appendix B receipt text; ``dlvrd`` defaults to 1 for DELIVRD, else 0."""
    if dlvrd is None:
        dlvrd = 1 if stat == "DELIVRD" else 0
    return (
        f"id:{message_id} sub:{sub:03d} dlvrd:{dlvrd:03d} submit date:{_date(submit_date)} "
        f"done date:{_date(done_date)} stat:{stat} err:{err:03d} text:{text[:20]}"
    )


_DATE_FORMATS = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S", 14: "%Y%m%d%H%M%S"}


def _parse_date(value: str) -> datetime | None:
    fmt = _DATE_FORMATS.get(len(value))
    if fmt is None or not (value.isascii() and value.isdigit()):
        return None
    try:
        return datetime.strptime(value, fmt)
    except ValueError:
        return None


def _parse_int(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() else None


def _fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for match in _KEY.finditer(text):
        key = re.sub(r"[ _]", "", match.group(1).lower())
        if key == "text":
            fields["text"] = text[match.end() :]
            break
        rest = text[match.end() :].lstrip(" ")
        value = rest.split(None, 1)[0] if rest and not _KEY.match(rest) else ""
        fields.setdefault(key, value)
    return fields


def _stat(value: str | None) -> str | None:
    if not value:
        return None
    upper = value.upper()
    return _STAT_ALIASES.get(upper, upper)


def parse_receipt(text: str) -> ReceiptText | None:
    """The receipt fields of ``text``, or None when it has no ``id:``."""
    receipt = read_receipt_fields(text)
    return receipt if receipt.id else None


def read_receipt_fields(text: str) -> ReceiptText:
    """The receipt fields ``text`` has, ``id`` empty when it has none: for a receipt whose id
    came in the receipted_message_id TLV, its text may carry only ``stat:`` and ``err:``."""
    fields = _fields(text)
    return ReceiptText(
        id=fields.get("id", ""),
        sub=_parse_int(fields.get("sub", "")),
        dlvrd=_parse_int(fields.get("dlvrd", "")),
        submit_date=_parse_date(fields.get("submitdate", "")),
        done_date=_parse_date(fields.get("donedate", "")),
        stat=_stat(fields.get("stat")),
        err=fields.get("err") or None,
        text=fields.get("text"),
    )


# --- carrier id matching -------------------------------------------------------------------


def normalise_carrier_id(carrier_id: str) -> str:
    """Canonical key of an SMSC message id: trimmed, lower case, leading zeros stripped."""
    key = carrier_id.strip().lower().lstrip("0")
    if not key and carrier_id.strip():
        return "0"
    return key


def _converted(key: str, form: str) -> str:
    """The resp-side key of a receipt id written in ``form`` (as is when it does not fit)."""
    if len(key) <= _MAX_ID_LENGTH:
        if form == "decimal" and key.isascii() and key.isdigit():
            return format(int(key, 10), "x")
        if form == "hex" and _is_hex(key):
            return str(int(key, 16))
    return key


def _is_hex(value: str) -> bool:
    return bool(value) and all(c in "0123456789abcdef" for c in value)


RECEIPT_ID_FORMS = ("auto", "same", "decimal", "hex")


def carrier_id_candidates(carrier_id: str, form: str = "auto") -> tuple[str, ...]:
    """Keys under which ``carrier_id`` may have been stored by a peer writing the other base.

    ``form`` is what the connector knows of its SMSC: ``same`` (the receipt writes the id as
    the submit_sm_resp did), ``decimal`` (the resp id is hex, the receipt its decimal value),
    ``hex`` (the reverse): then there is one key. ``auto``: the id's own canonical key first,
    then (when the digits allow) the key of its decimal value written in hex and of its hex
    value written in decimal. Match a receipt by looking up the candidates among
    ``normalise_carrier_id(submit_sm_resp id)`` keys.
    """
    key = normalise_carrier_id(carrier_id)
    if form != "auto":
        return (_converted(key, form),)
    out = [key]
    if key and len(key) <= _MAX_ID_LENGTH:
        if key.isascii() and key.isdigit():
            out.append(format(int(key, 10), "x"))
        if _is_hex(key):
            out.append(str(int(key, 16)))
    return tuple(dict.fromkeys(out))


# How many receipts whose resp was seen, all read one way, teach an ``auto`` connector that way.
LEARN_AFTER = 16
# A receipt's vote is counted after this many more resps: more than a window holds, so the
# resp of a receipt that overtook it has come by then.
VOTE_AFTER_RESPS = 1024
RECENT_RESP_IDS = 16384  # resp ids kept while learning: a receipt votes only if its resp is
# still among them VOTE_AFTER_RESPS resps later (receipts up to 5 s late at 3,000/s)
_FORMS = ("same", "decimal", "hex")


class ReceiptIdForm:
    """How a connector reads its receipts' ids; left at ``auto``, learnt from its own SMSC.

    At ``auto`` every reading of an id is a candidate, and a receipt that overtakes its
    submit_sm_resp can be taken by a waiting part whose id is its other reading (receipt
    ``10`` by part ``16``, its hex value) before its own part has an id. So while learning,
    resp ids are kept, and each receipt found under exactly one reading of its id among them
    votes for that reading; LEARN_AFTER votes one way and none another settle the form, and
    from then on a receipt has one key (one that overtakes its resp waits for it). A receipt
    votes only once VOTE_AFTER_RESPS more resps have come: one that overtook its resp is then
    found under its own reading too, and does not vote (at once, it was found only under its
    other reading, and an SMSC whose receipts all come early taught the wrong form). Receipts
    that came through another node or read the same every way do not vote either. A
    configured form is never changed.
    """

    def __init__(self, configured: str = "auto", on_learnt: Callable[[str], None] | None = None):
        self.form = configured
        self._learning = configured == "auto"
        self._on_learnt = on_learnt
        # resp id keys, oldest first (popitem at the front is O(1); a dict's first key is
        # found past the holes its deletions left: ~10 µs a resp at 16,384)
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._resps = 0  # resps seen while learning
        self._waiting: deque[tuple[int, str]] = deque()  # (vote at resp count, receipt key)
        self._votes = dict.fromkeys(_FORMS, 0)

    def saw_resp(self, carrier_id: str) -> None:
        """A submit_sm_resp gave ``carrier_id`` to a part."""
        if not self._learning:
            return
        self._recent[normalise_carrier_id(carrier_id)] = None
        if len(self._recent) > RECENT_RESP_IDS:
            self._recent.popitem(last=False)
        self._resps += 1
        while self._learning and self._waiting and self._waiting[0][0] <= self._resps:
            self._vote(self._waiting.popleft()[1])

    def form_for(self, carrier_id: str) -> str:
        """The form to read the receipt id ``carrier_id`` in (it votes later, while
        learning)."""
        if self._learning and len(self._waiting) < RECENT_RESP_IDS:
            key = normalise_carrier_id(carrier_id)
            self._waiting.append((self._resps + VOTE_AFTER_RESPS, key))
        return self.form

    def _vote(self, key: str) -> None:
        found = [form for form in _FORMS if _converted(key, form) in self._recent]
        if len(found) != 1:
            return
        form = found[0]
        self._votes[form] += 1
        if self._votes[form] >= LEARN_AFTER and sum(self._votes.values()) == self._votes[form]:
            self.form, self._learning = form, False
            self._recent.clear()
            self._waiting.clear()
            if self._on_learnt is not None:
                self._on_learnt(form)
