"""Accepting messages, grouped (see ``grouped``): check ownership, STOP list and credit,
debit, insert; each message all or nothing.

The checks read everything they need in three statements (the senders' numbers, the
recipients' STOP entries, the accounts), then decide each message in order in Python, each
debit counting against the credit the ones before it left, as one ``accept`` after another
would. Then the debits, the messages and their parts are written with a few statements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smsrelay.domain.states import MessageState
from smsrelay.errors import DomainError
from smsrelay.store.grouped import (
    Answers,
    flat,
    insert_numbered,
    insert_rows,
    marks,
    padded_chunks,
    values,
)
from smsrelay.store.records import NewMessage
from smsrelay.store.sql import Conn

_PART_COLUMNS = (
    ("message_id", "BIGINT"),
    ("seq", "BIGINT"),
    ("connector", ""),
    ("state", ""),
    ("due_at", "DOUBLE PRECISION"),
)
_MESSAGE_COLUMNS = (
    ("account_id", "BIGINT"),
    ("sender", ""),
    ("recipient", ""),
    ("region", ""),
    ("text", ""),
    ("encoding", ""),
    ("nb_sms", "BIGINT"),
    ("cost_micros", "BIGINT"),
    ("tag", ""),
    ("url_response", ""),
    ("url_dlr", ""),
    ("stop_sms", "BIGINT"),
    ("sandbox", "BIGINT"),
    ("state", ""),
    ("connector", ""),
    ("created_at", "DOUBLE PRECISION"),
    ("due_at", "DOUBLE PRECISION"),
)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the checks read, for the whole run."""

    owners: dict[str, tuple[int, str]]  # sender msisdn -> (account id, connector)
    stopped: set[tuple[int, str]]  # (account id, phone)
    accounts: dict[int, tuple[bool, int]]  # account id -> (disabled, credit)


def accept_many(conn: Conn, items: Sequence[NewMessage]) -> Answers:
    """Per message its id, or the DomainError that refuses it (which wrote nothing)."""
    facts = _read_facts(conn, items)
    answers: Answers = []
    debits: dict[int, int] = defaultdict(int)
    accepted: list[tuple[int, NewMessage, str]] = []  # (index, message, connector)
    for index, msg in enumerate(items):
        try:
            connector = _check(facts, debits, msg)
        except DomainError as refusal:
            answers.append(refusal)
            continue
        answers.append(None)
        accepted.append((index, msg, connector))
    _debit(conn, debits)
    for (index, _, _), message_id in zip(accepted, _insert(conn, accepted), strict=True):
        answers[index] = message_id
    return answers


def _read_facts(conn: Conn, items: Sequence[NewMessage]) -> _Facts:
    senders = sorted({m.sender for m in items})
    recipients = sorted({m.recipient for m in items})
    owners = {
        str(r[0]): (int(r[1]), str(r[2]))
        for r in _rows(conn, "SELECT msisdn, account_id, connector FROM numbers", "msisdn", senders)
    }
    stopped = {
        (int(r[0]), str(r[1]))
        for r in _rows(conn, "SELECT account_id, phone FROM stop_list", "phone", recipients)
    }
    ids = sorted({m.account_id for m in items})
    accounts = {
        int(r[0]): (bool(r[1]), int(r[2]))
        for r in _rows(conn, "SELECT id, disabled, credit_micros FROM accounts", "id", ids)
    }
    return _Facts(owners, stopped, accounts)


def _rows(conn: Conn, select: str, column: str, keys: Sequence[object]) -> list[Any]:
    rows: list[Any] = []
    for chunk in padded_chunks(keys):
        rows += conn.execute(f"{select} WHERE {column} IN ({marks(len(chunk))})", chunk).fetchall()
    return rows


def _check(facts: _Facts, debits: dict[int, int], msg: NewMessage) -> str:
    """The message's connector, its debit counted; or the refusal."""
    owner = facts.owners.get(msg.sender)
    if owner is None or owner[0] != msg.account_id:
        raise DomainError("sender.not_owned", "from is not one of this account's numbers", "from")
    if (msg.account_id, msg.recipient) in facts.stopped:
        raise DomainError("recipient.stopped", "the number is in the STOP list", "to")
    account = facts.accounts.get(msg.account_id)
    if account is None:
        raise DomainError("account.unknown", "incorrect API key", "apiKey")
    disabled, credit = account
    if disabled:  # the API's account cache may be a second old: the write decides
        raise DomainError("account.disabled", "account disabled", "apiKey")
    if not msg.sandbox:
        if credit - debits[msg.account_id] < msg.cost_micros:
            raise DomainError("credit.insufficient", "insufficient credit", "apiKey")
        debits[msg.account_id] += msg.cost_micros
    return owner[1]


def _debit(conn: Conn, debits: dict[int, int]) -> None:
    for chunk in padded_chunks(sorted(debits.items())):  # each account once: a dict's
        conn.execute(
            "UPDATE accounts SET credit_micros = credit_micros - v.column2 "
            f"FROM {values(len(chunk), ('BIGINT', 'BIGINT'))} AS v WHERE accounts.id = v.column1",
            flat(chunk),
        )


def _insert(conn: Conn, accepted: Sequence[tuple[int, NewMessage, str]]) -> list[int]:
    """The messages' ids, in order, and their parts (a sandbox message has none)."""
    rows = [_message_row(msg, connector) for _, msg, connector in accepted]
    ids = insert_numbered(conn, "messages", _MESSAGE_COLUMNS, rows)
    parts = [
        (message_id, seq, connector, "queued", msg.due_at)
        for message_id, (_, msg, connector) in zip(ids, accepted, strict=True)
        if not msg.sandbox
        for seq in range(1, msg.nb_sms + 1)
    ]
    insert_rows(conn, "parts", _PART_COLUMNS, parts)
    return ids


def _message_row(msg: NewMessage, connector: str) -> tuple[object, ...]:
    state = MessageState.HELD if msg.due_at > msg.created_at else MessageState.QUEUED
    return (
        msg.account_id,
        msg.sender,
        msg.recipient,
        msg.region,
        msg.text,
        msg.encoding,
        msg.nb_sms,
        0 if msg.sandbox else msg.cost_micros,
        msg.tag,
        msg.url_response,
        msg.url_dlr,
        int(msg.stop_sms),
        int(msg.sandbox),
        str(state),
        connector,
        msg.created_at,
        msg.due_at,
    )
