"""The Store over SQL: async methods that run the operations on an engine (SQLite's
group-commit ``engine.Database`` or PostgreSQL's ``pg_engine.PgDatabase``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

from smsrelay.domain.states import PartState
from smsrelay.errors import StorageLow
from smsrelay.store import (
    account_ops,
    account_reads,
    data_steps,
    inbound_ops,
    message_ops,
    monitor_reads,
    retention_ops,
    smsc_history,
    webhook_ops,
)
from smsrelay.store.accept_batch import accept_many
from smsrelay.store.grouped import Grouped
from smsrelay.store.health import StoreHealth
from smsrelay.store.receipt_batch import Receipt, record_receipt_runs, record_receipts
from smsrelay.store.records import (
    PURGE_KINDS,
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
from smsrelay.store.sql import Conn
from smsrelay.store.submit_outcomes import Submitted, mark_submitted_many, mark_submitted_runs
from smsrelay.store.webhook_attempts import record_attempt_runs, record_attempts

PURGE_CHUNK = 2000  # sandbox messages deleted per write (~10-20 ms of the event loop)
_PURGES = dict(
    zip(
        PURGE_KINDS,
        (
            retention_ops.purge_messages,
            retention_ops.purge_replies,
            retention_ops.purge_callbacks,
            retention_ops.purge_unmatched_receipts,
        ),
        strict=True,
    )
)


T = TypeVar("T")


class Engine(Protocol):
    """Runs operations: each write atomic and durable when it returns, reads in a snapshot."""

    path: str
    broken: asyncio.Event  # set for good when the engine can no longer promise durability
    health: StoreHealth  # whether new work can be taken now, and why not

    async def start(self, *, only_new: bool = False) -> list[int]: ...
    async def stop(self) -> None: ...
    async def write(self, fn: Callable[[Conn], T]) -> T: ...
    async def read(self, fn: Callable[[Conn], T]) -> T: ...


class SqlStore:
    """Implements ``smsrelay.store.interface.Store`` on any ``Engine``."""

    def __init__(self, url: str, db: Engine) -> None:
        self.url = url
        self.db = db

    async def open(self, *, only_new: bool = False) -> list[int]:
        """Open the database, migrating it; ``only_new``: the schema only of a new database
        (an older one is refused with ``SchemaTooOld``: the CLI's commands, see schema)."""
        return await self.db.start(only_new=only_new)

    async def close(self) -> None:
        await self.db.stop()

    # -- accounts and numbers ----------------------------------------------------------------

    async def create_account(
        self, name: str, key_hash: str, credit_micros: int, now: float, demo_key: str | None = None
    ) -> Account:
        return await self.db.write(
            partial(
                account_ops.create_account,
                name=name,
                key_hash=key_hash,
                credit_micros=credit_micros,
                now=now,
                demo_key=demo_key,
            )
        )

    async def find_account(self, name: str) -> Account | None:
        return await self.db.read(partial(account_ops.find_account, name=name))

    async def account_by_key_hash(self, key_hash: str) -> Account | None:
        return await self.db.read(partial(account_ops.account_by_key_hash, key_hash=key_hash))

    async def list_accounts(self) -> list[Account]:
        return await self.db.read(account_ops.list_accounts)

    async def update_account(self, name: str, changes: dict[str, Any]) -> Account:
        return await self.db.write(partial(account_ops.update_account, name=name, changes=changes))

    async def add_credit(self, name: str, micros: int) -> Account:
        return await self.db.write(partial(account_ops.add_credit, name=name, micros=micros))

    async def set_key_hash(self, name: str, key_hash: str) -> Account:
        return await self.db.write(partial(account_ops.set_key_hash, name=name, key_hash=key_hash))

    async def add_number(
        self, account_name: str, msisdn: str, connector: str, now: float
    ) -> NumberRecord:
        return await self.db.write(
            partial(
                account_ops.add_number,
                account_name=account_name,
                msisdn=msisdn,
                connector=connector,
                now=now,
            )
        )

    async def remove_number(self, msisdn: str) -> None:
        await self.db.write(partial(account_ops.remove_number, msisdn=msisdn))

    async def unfinished_from(self, msisdn: str) -> int:
        return await self.db.read(partial(account_ops.unfinished_from, msisdn=msisdn))

    async def list_numbers(self, account_name: str | None = None) -> list[NumberRecord]:
        return await self.db.read(partial(account_ops.list_numbers, account_name=account_name))

    async def numbers_of(self, account_id: int) -> list[NumberRecord]:
        return await self.db.read(partial(account_ops.numbers_of, account_id=account_id))

    async def account_snapshot(self, account_id: int) -> AccountSnapshot | None:
        return await self.db.read(partial(account_reads.account_snapshot, account_id=account_id))

    async def stopped_among(self, account_id: int, phones: Iterable[str]) -> frozenset[str]:
        read = partial(account_reads.stopped_among, account_id=account_id, phones=list(phones))
        return await self.db.read(read)

    async def messages_and_stops(
        self, account_id: int, message_ids: list[int]
    ) -> tuple[dict[int, MessageView], frozenset[str]]:
        return await self.db.read(
            partial(
                account_reads.messages_and_stops, account_id=account_id, message_ids=message_ids
            )
        )

    # -- STOP list -----------------------------------------------------------------------------

    async def stop_add(
        self, account_id: int, phone: str, now: float, builders: CallbackBuilders
    ) -> StopAdded:
        return await self.db.write(
            partial(
                account_ops.stop_add,
                account_id=account_id,
                phone=phone,
                now=now,
                builders=builders,
            )
        )

    async def stop_remove(self, account_id: int, stop_id: int) -> None:
        await self.db.write(
            partial(account_ops.stop_remove, account_id=account_id, stop_id=stop_id)
        )

    async def stop_remove_phone(self, account_id: int, phone: str) -> None:
        await self.db.write(
            partial(account_ops.stop_remove_phone, account_id=account_id, phone=phone)
        )

    async def stop_list(self, account_id: int) -> list[StopEntry]:
        return await self.db.read(partial(account_ops.stop_list, account_id=account_id))

    async def stop_page(self, account_id: int, after_id: int, limit: int) -> list[StopEntry]:
        return await self.db.read(
            partial(account_ops.stop_page, account_id=account_id, after_id=after_id, limit=limit)
        )

    # -- messages ------------------------------------------------------------------------------

    async def accept_message(self, message: NewMessage) -> int:
        refusal = self.db.health.new_work_refusal()
        if refusal is not None:  # the reserve is kept for what has already happened
            raise StorageLow(refusal)
        return int(await self.db.write(Grouped(accept_many, message)))

    async def get_message(
        self, message_id: int, account_id: int | None = None
    ) -> MessageView | None:
        return await self.db.read(
            partial(message_ops.get_message, message_id=message_id, account_id=account_id)
        )

    async def messages_by_tag(
        self, account_id: int, tag: str, limit: int, offset: int
    ) -> tuple[list[MessageView], int]:
        return await self.db.read(
            partial(
                message_ops.messages_by_tag,
                account_id=account_id,
                tag=tag,
                limit=limit,
                offset=offset,
            )
        )

    async def recent_messages(self, account_id: int | None, limit: int) -> list[MessageView]:
        return await self.db.read(
            partial(message_ops.recent_messages, account_id=account_id, limit=limit)
        )

    async def recent_replies(self, account_id: int | None, limit: int) -> list[ReplyView]:
        return await self.db.read(
            partial(inbound_ops.recent_replies, account_id=account_id, limit=limit)
        )

    async def overdue_parts(self, now: float) -> dict[str, tuple[int, float]]:
        return await self.db.read(partial(message_ops.overdue_parts, now=now))

    async def sending_parts(self) -> dict[str, tuple[int, float | None]]:
        return await self.db.read(message_ops.sending_parts)

    async def queue_depth(self) -> dict[str, int]:
        return await self.db.read(message_ops.queue_depth)

    async def store_figures(self, now: float) -> StoreFigures:
        return await self.db.read(partial(monitor_reads.store_figures, now=now))

    async def cancel_message(self, account_id: int, message_id: int, now: float) -> int:
        return await self.db.write(
            partial(message_ops.cancel, account_id=account_id, message_id=message_id, now=now)
        )

    async def purge_sandbox(self, older_than: float) -> int:
        # In chunks: writes run on the event loop's thread, so one huge DELETE would stall it.
        purged = 0
        while True:
            chunk = await self.db.write(
                partial(message_ops.purge_sandbox, older_than=older_than, limit=PURGE_CHUNK)
            )
            purged += chunk
            if chunk < PURGE_CHUNK:
                return purged

    async def purge_history(
        self, kind: str, older_than: float, after_id: int, limit: int
    ) -> PurgeStep:
        """One chunk of ``kind`` (messages, replies, callbacks, unmatched receipts) older than
        the cutoff."""
        walk = _PURGES[kind]
        return await self.db.write(
            partial(walk, older_than=older_than, after_id=after_id, limit=limit)
        )

    async def run_data_steps(self, now: float, builders: CallbackBuilders) -> dict[str, int]:
        return await self.db.write(partial(data_steps.run, now=now, builders=builders))

    async def last_real_smsc(self) -> str | None:
        return await self.db.read(smsc_history.last_real_smsc)

    async def note_real_smsc(self, where: str) -> None:
        await self.db.write(partial(smsc_history.note_real_smsc, where=where))

    # -- dispatch ------------------------------------------------------------------------------

    async def claim_due_parts(
        self,
        connector: str,
        now: float,
        limit: int,
        lease_until: float,
        quiet_releases: Mapping[str, float] | None = None,
    ) -> list[ClaimedPart]:
        return await self.db.write(
            partial(
                message_ops.claim_due,
                connector=connector,
                now=now,
                limit=limit,
                lease_until=lease_until,
                quiet_releases=quiet_releases,
            )
        )

    async def release_expired_leases(self, now: float) -> int:
        return await self.db.write(partial(message_ops.release_expired_leases, now=now))

    async def release_expired_webhook_leases(self, now: float, keep: Collection[int] = ()) -> int:
        return await self.db.write(
            partial(webhook_ops.release_expired_leases, now=now, keep=tuple(keep))
        )

    async def release_held(self, account_id: int, limit: int) -> int:
        return await self.db.write(
            partial(message_ops.release_held, account_id=account_id, limit=limit)
        )

    async def defer_webhooks(self, items: list[tuple[int, float, float]]) -> int:
        return await self.db.write(partial(webhook_ops.defer, items=items))

    async def unpark_stranded_webhooks(self) -> int:
        return await self.db.write(webhook_ops.unpark_stranded)

    async def reschedule_webhooks(self, items: list[tuple[int, float]]) -> int:
        return await self.db.write(partial(webhook_ops.reschedule, items=items))

    async def bring_forward_webhooks(self, waits: Sequence[float], now: float) -> int:
        return await self.db.write(partial(webhook_ops.bring_forward, waits=waits, now=now))

    async def expire_unanswered(
        self, submitted_before: float, now: float, builders: CallbackBuilders
    ) -> int:
        return await self.db.write(
            partial(
                message_ops.expire_unanswered,
                submitted_before=submitted_before,
                now=now,
                builders=builders,
            )
        )

    async def renew_leases(self, part_ids: list[int], lease_until: float) -> int:
        return await self.db.write(
            partial(message_ops.renew_leases, part_ids=part_ids, lease_until=lease_until)
        )

    async def mark_submitted(
        self,
        part_id: int,
        carrier_id: str,
        carrier_key: str,
        now: float,
        builders: CallbackBuilders,
        nb_sms: int | None = None,
    ) -> bool:
        submitted = Submitted(part_id, carrier_id, carrier_key, now, builders, nb_sms)
        return bool(await self.db.write(Grouped(mark_submitted_many, submitted)))

    async def mark_submitted_many(
        self, parts: Sequence[TakenPart], now: float, builders: CallbackBuilders
    ) -> list[bool]:
        run = [
            Submitted(p.part_id, p.carrier_id, p.carrier_key, now, builders, p.nb_sms)
            for p in parts
        ]
        return list(await self.db.write(Grouped(mark_submitted_runs, run)))

    async def mark_retry(
        self,
        part_id: int,
        due_at: float,
        error: str,
        *,
        counted: bool = True,
        may_have_left: bool = False,
    ) -> bool:
        return await self.db.write(
            partial(
                message_ops.mark_retry,
                part_id=part_id,
                due_at=due_at,
                error=error,
                counted=counted,
                may_have_left=may_have_left,
            )
        )

    async def mark_part_final(
        self,
        part_id: int,
        state: PartState,
        error: str,
        now: float,
        builders: CallbackBuilders,
        nb_sms: int | None = None,
    ) -> None:
        await self.db.write(
            partial(
                message_ops.mark_part_final,
                part_id=part_id,
                state=state,
                error=error,
                now=now,
                builders=builders,
                nb_sms=nb_sms,
            )
        )

    async def record_receipt(self, receipt: IncomingReceipt, builders: CallbackBuilders) -> bool:
        return bool(await self.db.write(Grouped(record_receipts, Receipt(receipt, builders))))

    async def record_receipts_many(
        self, receipts: Sequence[IncomingReceipt], builders: CallbackBuilders
    ) -> list[bool]:
        run = [Receipt(receipt, builders) for receipt in receipts]
        return list(await self.db.write(Grouped(record_receipt_runs, run)))

    async def flush_stale_reassemblies(
        self, older_than: float, now: float, builders: CallbackBuilders
    ) -> int:
        return await self.db.write(
            partial(
                inbound_ops.flush_stale_reassemblies,
                older_than=older_than,
                now=now,
                builders=builders,
            )
        )

    async def record_reply(self, reply: InboundReply, builders: CallbackBuilders) -> ReplyOutcome:
        return await self.db.write(
            partial(inbound_ops.record_reply, reply=reply, builders=builders)
        )

    async def record_answers_proven(self, bind_id: str, through: int, now: float) -> None:
        await self.db.write(
            partial(inbound_ops.record_answers_proven, bind_id=bind_id, through=through, now=now)
        )

    # -- webhooks ------------------------------------------------------------------------------

    async def claim_due_webhooks(
        self, now: float, limit: int, lease_until: float
    ) -> list[WebhookJob]:
        return await self.db.write(
            partial(webhook_ops.claim_due, now=now, limit=limit, lease_until=lease_until)
        )

    async def record_webhook_attempt(
        self,
        webhook_id: int,
        at: float,
        status: int | None,
        latency_ms: float | None,
        error: str | None,
        outcome: str,
        next_due: float | None,
    ) -> None:
        attempt = WebhookAttempt(webhook_id, at, status, latency_ms, error, outcome, next_due)
        await self.db.write(Grouped(record_attempts, attempt))

    async def record_webhook_attempts_many(self, attempts: Sequence[WebhookAttempt]) -> None:
        await self.db.write(Grouped(record_attempt_runs, list(attempts)))

    async def list_webhooks(self, state: str | None = None, limit: int = 100) -> list[WebhookView]:
        return await self.db.read(partial(webhook_ops.list_webhooks, state=state, limit=limit))

    async def get_webhook(self, webhook_id: int) -> WebhookView | None:
        return await self.db.read(partial(webhook_ops.get_webhook, webhook_id=webhook_id))

    async def retry_webhooks(self, webhook_id: int | None, now: float) -> int:
        return await self.db.write(partial(webhook_ops.retry, webhook_id=webhook_id, now=now))

    async def retry_failed_webhooks(self, now: float, after_id: int, limit: int) -> tuple[int, int]:
        step = partial(webhook_ops.retry_failed_step, now=now, after_id=after_id, limit=limit)
        return await self.db.write(step)

    async def pending_webhooks(self) -> int:
        return await self.db.read(webhook_ops.pending_count)

    async def callback_backlog(self, late_before: float | None = None) -> CallbackBacklog:
        return await self.db.read(partial(webhook_ops.backlog, late_before=late_before))
