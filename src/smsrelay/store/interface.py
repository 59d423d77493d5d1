"""The one storage interface the service layer and workers use.

``SqliteStore`` implements it; a PostgreSQL store must implement the same methods with the
same guarantees: every write method is atomic and durable when it returns, claims never hand
the same part or callback to two callers, and a lease that runs out makes the row claimable
again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from smsrelay.domain.states import PartState
from smsrelay.store.records import (
    Account,
    AccountSnapshot,
    CallbackBacklog,
    CallbackBuilders,
    ClaimedPart,
    InboundReply,
    IncomingReceipt,
    MessageView,
    NewMessage,
    NumberRecord,
    PurgeStep,
    ReplyOutcome,
    ReplyView,
    StopAdded,
    StopEntry,
    StoreFigures,
    TakenPart,
    WebhookAttempt,
    WebhookJob,
    WebhookView,
)


class Store(Protocol):
    async def open(self, *, only_new: bool = False) -> list[int]: ...
    async def close(self) -> None: ...
    async def create_account(
        self, name: str, key_hash: str, credit_micros: int, now: float, demo_key: str | None = None
    ) -> Account: ...
    async def find_account(self, name: str) -> Account | None: ...
    async def account_by_key_hash(self, key_hash: str) -> Account | None: ...
    async def list_accounts(self) -> list[Account]: ...
    async def update_account(self, name: str, changes: dict[str, Any]) -> Account: ...
    async def add_credit(self, name: str, micros: int) -> Account: ...
    async def set_key_hash(self, name: str, key_hash: str) -> Account: ...
    async def add_number(
        self, account_name: str, msisdn: str, connector: str, now: float
    ) -> NumberRecord: ...
    async def remove_number(self, msisdn: str) -> None: ...
    async def unfinished_from(self, msisdn: str) -> int:
        """How many messages sent from ``msisdn`` are not finished (a read)."""
        ...

    async def list_numbers(self, account_name: str | None = None) -> list[NumberRecord]: ...
    async def numbers_of(self, account_id: int) -> list[NumberRecord]: ...
    async def account_snapshot(self, account_id: int) -> AccountSnapshot | None: ...
    async def stopped_among(self, account_id: int, phones: Iterable[str]) -> frozenset[str]:
        """Which of ``phones`` are in the account's STOP list."""
        ...

    async def messages_and_stops(
        self, account_id: int, message_ids: list[int]
    ) -> tuple[dict[int, MessageView], frozenset[str]]: ...
    async def stop_add(
        self, account_id: int, phone: str, now: float, builders: CallbackBuilders
    ) -> StopAdded:
        """Add ``phone``; what still waits for it is cancelled, refunded, and its DLR queued."""
        ...

    async def stop_remove(self, account_id: int, stop_id: int) -> None: ...
    async def stop_remove_phone(self, account_id: int, phone: str) -> None: ...
    async def stop_list(self, account_id: int) -> list[StopEntry]: ...
    async def stop_page(self, account_id: int, after_id: int, limit: int) -> list[StopEntry]:
        """The next ``limit`` entries past ``after_id``, in id order (one read, one snapshot)."""
        ...

    async def accept_message(self, message: NewMessage) -> int: ...
    async def get_message(
        self, message_id: int, account_id: int | None = None
    ) -> MessageView | None: ...
    async def messages_by_tag(
        self, account_id: int, tag: str, limit: int, offset: int
    ) -> tuple[list[MessageView], int]: ...
    async def recent_messages(self, account_id: int | None, limit: int) -> list[MessageView]: ...
    async def recent_replies(self, account_id: int | None, limit: int) -> list[ReplyView]: ...
    async def queue_depth(self) -> dict[str, int]: ...
    async def store_figures(self, now: float) -> StoreFigures:
        """What ``GET /metrics`` shows of the store, in one snapshot."""
        ...

    async def overdue_parts(self, now: float) -> dict[str, tuple[int, float]]: ...
    async def sending_parts(self) -> dict[str, tuple[int, float | None]]: ...
    async def cancel_message(self, account_id: int, message_id: int, now: float) -> int: ...
    async def purge_sandbox(self, older_than: float) -> int: ...
    async def purge_history(
        self, kind: str, older_than: float, after_id: int, limit: int
    ) -> PurgeStep: ...
    async def claim_due_parts(
        self,
        connector: str,
        now: float,
        limit: int,
        lease_until: float,
        quiet_releases: Mapping[str, float] | None = None,
    ) -> list[ClaimedPart]:
        """Due parts under a lease; with ``quiet_releases`` (region -> release time, the
        regions quiet now), the parts quiet hours hold now go back, due at the release."""
        ...

    async def release_expired_leases(self, now: float) -> int: ...
    async def run_data_steps(self, now: float, builders: CallbackBuilders) -> dict[str, int]:
        """The one-off steps migrations left for the running gateway; each one's count."""
        ...

    async def last_real_smsc(self) -> str | None:
        """The real SMSC (HOST:PORT) the default connector last sent to; None: never one."""
        ...

    async def note_real_smsc(self, where: str) -> None: ...

    async def release_expired_webhook_leases(
        self, now: float, keep: Collection[int] = ()
    ) -> int: ...
    async def release_held(self, account_id: int, limit: int) -> int:
        """Up to ``limit`` parts held for quiet hours due at once; how many (0: none left)."""
        ...

    async def defer_webhooks(self, items: list[tuple[int, float, float]]) -> int:
        """Claimed callbacks (id, due at, the claim's lease_until) handed back unposted, no
        attempt counted, while that claim is still theirs."""
        ...

    async def unpark_stranded_webhooks(self) -> int: ...
    async def bring_forward_webhooks(self, waits: Sequence[float], now: float) -> int:
        """Pending callbacks due later than ``waits[attempts]`` from ``now`` (the last
        for any more attempts) are due now; how many."""
        ...

    async def reschedule_webhooks(self, items: list[tuple[int, float]]) -> int: ...
    async def expire_unanswered(
        self, submitted_before: float, now: float, builders: CallbackBuilders
    ) -> int: ...
    async def renew_leases(self, part_ids: list[int], lease_until: float) -> int: ...
    async def mark_submitted(
        self,
        part_id: int,
        carrier_id: str,
        carrier_key: str,
        now: float,
        builders: CallbackBuilders,
        nb_sms: int | None = None,
    ) -> bool: ...
    async def mark_submitted_many(
        self, parts: Sequence[TakenPart], now: float, builders: CallbackBuilders
    ) -> list[bool]:
        """``mark_submitted`` for each part, in one write: per part, its answer."""
        ...

    async def mark_retry(
        self,
        part_id: int,
        due_at: float,
        error: str,
        *,
        counted: bool = True,
        may_have_left: bool = False,
    ) -> bool: ...
    async def mark_part_final(
        self,
        part_id: int,
        state: PartState,
        error: str,
        now: float,
        builders: CallbackBuilders,
        nb_sms: int | None = None,
    ) -> None: ...
    async def record_receipt(
        self, receipt: IncomingReceipt, builders: CallbackBuilders
    ) -> bool: ...
    async def record_receipts_many(
        self, receipts: Sequence[IncomingReceipt], builders: CallbackBuilders
    ) -> list[bool]:
        """``record_receipt`` for each receipt in their order, in one write."""
        ...

    async def flush_stale_reassemblies(
        self, older_than: float, now: float, builders: CallbackBuilders
    ) -> int: ...
    async def record_reply(
        self, reply: InboundReply, builders: CallbackBuilders
    ) -> ReplyOutcome: ...
    async def record_answers_proven(self, bind_id: str, through: int, now: float) -> None:
        """The SMSC read our answers to the deliveries numbered up to ``through`` on the
        session ``bind_id``: a reply among them that comes again is the person again."""
        ...

    async def claim_due_webhooks(
        self, now: float, limit: int, lease_until: float
    ) -> list[WebhookJob]: ...
    async def record_webhook_attempt(
        self,
        webhook_id: int,
        at: float,
        status: int | None,
        latency_ms: float | None,
        error: str | None,
        outcome: str,
        next_due: float | None,
    ) -> None: ...
    async def record_webhook_attempts_many(self, attempts: Sequence[WebhookAttempt]) -> None:
        """``record_webhook_attempt`` for each attempt in their order, in one write."""
        ...

    async def list_webhooks(
        self, state: str | None = None, limit: int = 100
    ) -> list[WebhookView]: ...
    async def get_webhook(self, webhook_id: int) -> WebhookView | None: ...
    async def retry_webhooks(self, webhook_id: int | None, now: float) -> int: ...
    async def retry_failed_webhooks(self, now: float, after_id: int, limit: int) -> tuple[int, int]:
        """A step of retrying every failed callback: how many, and the last id looked at."""
        ...

    async def pending_webhooks(self) -> int: ...
    async def callback_backlog(self, late_before: float | None = None) -> CallbackBacklog: ...
