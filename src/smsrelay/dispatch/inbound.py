"""deliver_sm and data_sm from the SMSC: receipts and replies, stored before acknowledged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from smsrelay.carrier.connector import MAY_BE_STORED, InboundSm
from smsrelay.domain.addresses import e164_of
from smsrelay.domain.data_coding import UCS2, alphabet_of, decode_sm_text, written_in_gsm
from smsrelay.domain.keywords import is_stop_text, keyword_of
from smsrelay.domain.states import stat_for_message_state_tlv
from smsrelay.domain.text import decode_gsm7, decode_ucs2
from smsrelay.errors import MaybeStored, TransientError
from smsrelay.logs import SparseLine
from smsrelay.service.clock import Clock
from smsrelay.smpp.concat import split_concat
from smsrelay.smpp.pdu import ESM_CLASS_TYPE_MASK, RECEIPT_ESM_TYPES, CommandStatus, Tag
from smsrelay.smpp.receipts import STAT_STATES, carrier_id_candidates, read_receipt_fields
from smsrelay.store.interface import Store
from smsrelay.store.records import CallbackBuilders, InboundReply, IncomingReceipt

log = logging.getLogger("smsrelay.dispatch")
REFUSALS_SAID_EVERY_S = 1.0


class InboundRouter:
    """The InboundHandler given to every connector."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        builders: CallbackBuilders,
        stop_keywords: tuple[str, ...],
    ) -> None:
        self._store = store
        self._clock = clock
        self._builders = builders
        self._stop_keywords = frozenset(k.upper() for k in stop_keywords)
        self.on_stored: Callable[[], None] = lambda: None  # wakes the webhook sender
        self.receipts_received = 0  # stored (and acknowledged) by this process: /metrics
        self.replies_received = 0  # likewise; a part the SMSC sent again counts again
        # a store refusing writes (a full disk) refuses every receipt: a line a second, not
        # a traceback per PDU (thousands in a minute)
        self._refusals: dict[str, SparseLine] = {}  # per event: receipts, replies
        self._unowned = SparseLine(log, "smpp.reply.unowned", REFUSALS_SAID_EVERY_S)

    async def __call__(self, sm: InboundSm) -> int:
        (status,) = await self.handle_many([sm])
        return status

    async def handle_many(self, sms: Sequence[InboundSm]) -> list[int]:
        """Per item its resp's status: 0 once stored, ESME_RX_T_APPN if it could not be (the
        SMSC sends it again). The receipts go to the store in one write and each reply in its
        own, all at once, so they commit together."""
        replies, receipts = self._sorted(sms)
        writes = [self._reply_status(sms[index]) for index in replies]
        if receipts:
            writes.append(self._receipts_status([receipt for _, receipt in receipts]))
        answers = await asyncio.gather(*writes) if len(writes) > 1 else [await w for w in writes]
        statuses = [int(CommandStatus.ESME_ROK)] * len(sms)  # unreadable receipts too
        for index, status in zip(replies, answers, strict=False):
            statuses[index] = status
        for index, _ in receipts:
            statuses[index] = answers[-1]
        return statuses

    def _sorted(
        self, sms: Sequence[InboundSm]
    ) -> tuple[list[int], list[tuple[int, IncomingReceipt]]]:
        """The replies' positions, and the readable receipts with theirs."""
        replies: list[int] = []
        receipts: list[tuple[int, IncomingReceipt]] = []
        for index, sm in enumerate(sms):
            if sm.esm_class & ESM_CLASS_TYPE_MASK not in RECEIPT_ESM_TYPES:
                replies.append(index)
            elif (receipt := self._readable_receipt(sm)) is not None:
                receipts.append((index, receipt))
        return replies, receipts

    def _readable_receipt(self, sm: InboundSm) -> IncomingReceipt | None:
        receipt = read_receipt(sm, self._clock.now())
        if receipt is None:
            # acknowledged all the same: re-sending an unreadable receipt would not help
            log.warning("smpp.receipt.unreadable", extra={"connector": sm.connector})
        elif receipt.stat not in STAT_STATES:  # kept, but it ends nothing: say so
            log.warning(
                "smpp.receipt.unknown_stat",
                extra={"connector": sm.connector, "stat": receipt.stat},
            )
        return receipt

    async def _receipts_status(self, receipts: list[IncomingReceipt]) -> int:
        """The status for every one of ``receipts``, stored in one write."""
        try:
            matched = await self._store.record_receipts_many(receipts, self._builders)
        except TransientError as exc:
            self._say_refused("smpp.receipt.not_stored", exc, len(receipts))
            return CommandStatus.ESME_RX_T_APPN
        except Exception:
            log.exception("smpp.receipt.not_stored", extra={"receipts": len(receipts)})
            return CommandStatus.ESME_RX_T_APPN
        self.on_stored()
        self.receipts_received += len(receipts)
        for receipt, found in zip(receipts, matched, strict=True):
            if not found:
                log.debug("smpp.receipt.early", extra={"carrier_id": receipt.carrier_id})
        return CommandStatus.ESME_ROK

    async def _reply_status(self, sm: InboundSm) -> int:
        try:
            await self._reply(sm)
        except MaybeStored as exc:  # the SMSC sends it again, and its row may be there
            self._say_refused("smpp.reply.not_stored", exc, 1)
            return MAY_BE_STORED
        except TransientError as exc:
            self._say_refused("smpp.reply.not_stored", exc, 1)
            return CommandStatus.ESME_RX_T_APPN
        except Exception:
            log.exception("smpp.reply.not_stored", extra={"connector": sm.connector})
            return CommandStatus.ESME_RX_T_APPN
        return CommandStatus.ESME_ROK

    def _say_refused(self, event: str, error: TransientError, count: int) -> None:
        """The store refused them: the SMSC sends them again. Said at most once a second."""
        line = self._refusals.get(event)
        if line is None:
            line = self._refusals[event] = SparseLine(
                log, event, REFUSALS_SAID_EVERY_S, "refused_since_last_line"
            )
        line.note({"error": str(error)}, count)

    async def _reply(self, sm: InboundSm) -> None:
        concat, body = split_concat(sm.esm_class, sm.short_message, sm.tlvs)
        text = decode_sm_text(body, sm.data_coding, sm.default_alphabet)
        reply = InboundReply(
            connector=sm.connector,
            msisdn=e164_of(sm.source, sm.source_ton, sm.destination, sm.destination_ton),
            virtual_number=e164_of(sm.destination, sm.destination_ton, sm.source, sm.source_ton),
            text=text,
            keyword=keyword_of(text),
            is_stop=self.is_stop,
            received_at=self._clock.now(),
            concat=None if concat is None else (concat.ref, concat.total, concat.seq),
            bind_id=sm.bind_id,
            bind_seq=sm.bind_seq,
            body=None if concat is None else body,
            data_coding=sm.data_coding,
            smsc_default=sm.default_alphabet,
        )
        outcome = await self._store.record_reply(reply, self._builders)
        self.replies_received += 1
        if outcome.callbacks or outcome.stopped:  # a STOP may have queued DLRs too
            self.on_stored()
        if outcome.account_id is None:
            self._say_unowned(reply)
        log.debug("smpp.reply.stored", extra={"reply_id": outcome.reply_id})

    def _say_unowned(self, reply: InboundReply) -> None:
        """Stored, owned by no account: a number no account has, or one another connector
        serves (that SMSC cannot speak for it). At most a line a second, naming the last,
        the end of a burst included."""
        self._unowned.note({"connector": reply.connector, "number": reply.virtual_number})

    async def answers_proven(self, bind_id: str, through: int) -> None:
        await self._store.record_answers_proven(bind_id, through, self._clock.now())

    def is_stop(self, text: str) -> bool:
        return is_stop_text(text, self._stop_keywords)


def read_receipt(sm: InboundSm, now: float) -> IncomingReceipt | None:
    """TLVs, when present, win over the Appendix B text (which is then only read for what
    they leave out): ``receipted_message_id``, ``message_state``, ``network_error_code``.

    With the id in its TLV, the text needs no ``id:``: its ``stat:`` and ``err:`` are read.
    """
    carrier_id = _tlv_text(sm.tlvs.get(Tag.RECEIPTED_MESSAGE_ID))
    state = sm.tlvs.get(Tag.MESSAGE_STATE)
    stat = stat_for_message_state_tlv(state[0]) if state else None
    # A data_sm (or a long deliver_sm) carries the text in message_payload.
    body = sm.short_message or sm.tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
    raw_text = receipt_text(body, sm.data_coding)
    if carrier_id and stat:
        err = _quick_err(raw_text)
    else:
        text = read_receipt_fields(raw_text)
        carrier_id, stat, err = carrier_id or text.id, stat or text.stat, text.err
    if not carrier_id or not stat:
        return None
    err = network_error(sm.tlvs.get(Tag.NETWORK_ERROR_CODE)) or err
    return IncomingReceipt(
        connector=sm.connector,
        carrier_id=carrier_id,
        candidate_keys=carrier_id_candidates(carrier_id, _id_form(sm, carrier_id)),
        stat=stat,
        err=err,
        received_at=now,
    )


def _id_form(sm: InboundSm, carrier_id: str) -> str:
    learnt = sm.receipt_ids
    return sm.receipt_id_form if learnt is None else learnt.form_for(carrier_id)


def network_error(value: bytes | None) -> str | None:
    """The error code of a ``network_error_code`` TLV (SMPP 3.4 5.3.2.31: a network type
    octet, then a two-octet code), written as the text's ``err:`` is (three digits, e.g.
    ``005``); None without the TLV, or with one of another length."""
    if value is None or len(value) != 3:
        return None
    return f"{int.from_bytes(value[1:], 'big'):03d}"


def receipt_text(body: bytes, data_coding: int) -> str:
    """Appendix B text is ASCII in every alphabet SMSCs write it in, but UCS-2. Read as GSM
    03.38, an id's "_" or "@" would change (and decoding would cost more)."""
    if alphabet_of(data_coding) == UCS2:
        return decode_ucs2(body)
    # GSM when the fields before text: say so (an id's "_" as 0x11 never matched, from
    # node-smpp's SMSC); not by text:, which copies our GSM submit's first bytes (an "é"
    # there read a whole ASCII receipt as GSM, and its id's "_" as "§")
    if written_in_gsm(_before_text(body)):
        return decode_gsm7(body)
    return body.decode("ascii", "replace")


def _before_text(body: bytes) -> bytes:
    found = [at for label in (b"text:", b"Text:", b"TEXT:") if (at := body.find(label)) >= 0]
    return body[: min(found)] if found else body


def _quick_err(text: str) -> str | None:
    start = text.find("err:")
    if start < 0:
        start = text.find("ERR:")
    if start < 0:
        return None
    value = text[start + 4 :].split(" ", 1)[0].strip()
    return value or None


def _tlv_text(value: bytes | None) -> str | None:
    if not value:
        return None
    return value.rstrip(b"\x00").decode("ascii", "replace").strip() or None
