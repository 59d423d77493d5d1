"""The shape of a message row and its parts' rows as the store reads them."""

from __future__ import annotations

from typing import Any

from smsrelay.domain.states import MessageState
from smsrelay.store.records import MessageView, PartView, ReceiptView

MESSAGE_COLUMNS = (
    "id, account_id, sender, recipient, region, text, encoding, nb_sms, cost_micros, tag, "
    "url_response, url_dlr, stop_sms, sandbox, state, connector, created_at, due_at, final_at"
)
PART_COLUMNS = "id, seq, state, attempts, carrier_id, stat, err, submitted_at, done_at, last_error"


def qualified(columns: str, table: str) -> str:
    """``columns`` (as above) each prefixed with ``table``: what a ``RETURNING`` of an
    ``UPDATE … FROM`` names, where a bare column could be the other side's."""
    return ", ".join(f"{table}.{column}" for column in columns.split(", "))


FINAL_MESSAGE_STATES = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.UNDELIVERED,
        MessageState.EXPIRED,
        MessageState.REJECTED,
        MessageState.FAILED,
        MessageState.CANCELLED,
    }
)


def message_from_row(
    row: tuple[Any, ...],
    parts: tuple[PartView, ...] = (),
    receipts: tuple[ReceiptView, ...] = (),
) -> MessageView:
    return MessageView(
        id=row[0],
        account_id=row[1],
        sender=row[2],
        recipient=row[3],
        region=row[4],
        text=row[5],
        encoding=row[6],
        nb_sms=row[7],
        cost_micros=row[8],
        tag=row[9],
        url_response=row[10],
        url_dlr=row[11],
        stop_sms=bool(row[12]),
        sandbox=bool(row[13]),
        state=row[14],
        connector=row[15],
        created_at=row[16],
        due_at=row[17],
        final_at=row[18],
        parts=parts,
        receipts=receipts,
    )
