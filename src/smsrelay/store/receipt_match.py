"""Which part a delivery receipt is for, and how it moves that part: pure rules."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from smsrelay.domain.states import (
    FINAL_PART_STATES,
    PartState,
    can_move,
    part_state_for_stat,
    part_state_of,
)
from smsrelay.store.records import IncomingReceipt

# A receipt comes at most a response timeout before its submit_sm_resp; one kept longer than
# this is for some other message (a lost one), and must not be taken by a later id like it.
EARLY_RECEIPT_WINDOW = 120.0
log = logging.getLogger("smsrelay.store")


def choose_part(rows: list[Any], connector: str, keys: tuple[str, ...]) -> int | None:
    """Of the parts of ``connector`` with one of the ``keys`` (rows: id, state, carrier
    key), the id of the one the receipt is for: ids are only unique per SMSC, and an SMSC
    may give an id again (a counter reset) or report it in another base."""
    if len(rows) < 2:  # the usual case: one part fits, nothing to weigh
        return None if not rows else int(rows[0][0])
    best = min(rows, key=partial(_match_rank, {key: rank for rank, key in enumerate(keys)}))
    awaiting = {row[2] for row in rows if row[1] == PartState.SUBMITTED}
    if len(awaiting) > 1:  # two messages fit two readings of the id: only a setting can tell
        log.warning(
            "smpp.receipt.ambiguous",
            extra={"connector": connector, "keys": sorted(awaiting), "chosen_part": best[0]},
        )
    return int(best[0])


def _match_rank(ranks: dict[str, int], row: tuple[Any, ...]) -> tuple[bool, int, int]:
    """A part still waiting for its receipt before a finished one (whose receipt this would
    only repeat), then the id as written before its hex/decimal readings, newest first."""
    return row[1] != PartState.SUBMITTED, ranks[row[2]], -int(row[0])


def receipt_move(current: str, receipt: IncomingReceipt) -> tuple[PartState, float | None] | None:
    """The part's new state and ``done_at``; None when the receipt moves nothing (an
    intermediate one, or a repeat for a part that has ended)."""
    new_state = part_state_for_stat(receipt.stat)
    if new_state is None or not can_move(part_state_of(current), new_state):
        return None
    return new_state, receipt.received_at if new_state in FINAL_PART_STATES else None
