"""SMPP 3.4 server (SMSC side) over asyncio, on the same codec and session as the client.

The server accepts binds (checking system_id / password against ``credentials``; ``None``
accepts anyone), answers enquire_link and unreadable PDUs itself, hands each submit_sm to an
:class:`SmscApplication` (which answers it, possibly later), and delivers deliver_sm to the
bound receivers / transceivers of a system_id, awaiting their deliver_sm_resp.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Protocol

from smsrelay.carrier.smpp_link import SmppLink
from smsrelay.errors import TransientError
from smsrelay.smpp.errors import NotSendableNow
from smsrelay.smpp.pdu import (
    INTERFACE_VERSION,
    Bind,
    BindReceiver,
    BindReceiverResp,
    BindResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CommandStatus,
    DataSm,
    DataSmResp,
    DeliverSm,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tag,
)
from smsrelay.smpp.session import CAN_RECEIVE, Role

_log = logging.getLogger("smsrelay.carrier.smsc")

_BIND_RESPONSES: dict[type[Bind], type[BindResp]] = {
    BindTransmitter: BindTransmitterResp,
    BindReceiver: BindReceiverResp,
    BindTransceiver: BindTransceiverResp,
}


class SmscApplication(Protocol):
    """What the server asks of the SMSC behind it (the simulator is one)."""

    def on_bound(self, link: SmscLink) -> None: ...

    def on_submit_sm(self, link: SmscLink, pdu: SubmitSm) -> None:
        """Answer with ``link.send(SubmitSmResp(...))`` now, or ``link.hold()`` now and
        ``link.answer_held(SubmitSmResp(...))`` later (flow control counts it meanwhile)."""


class _RefuseAll:
    def on_bound(self, link: SmscLink) -> None:
        return None

    def on_submit_sm(self, link: SmscLink, pdu: SubmitSm) -> None:
        link.send(SubmitSmResp(sequence=pdu.sequence, status=CommandStatus.ESME_RSUBMITFAIL))


class SmscLink(SmppLink):
    """One ESME connected to the server."""

    def __init__(self, server: SmppServer) -> None:
        super().__init__(
            Role.SMSC,
            window=server.window,
            response_timeout=server.response_timeout,
            enquire_link_interval=server.enquire_link_interval,
            logger=server.log,
            name="smsc",
        )
        self.server = server
        self.system_id = ""
        self._bind_deadline: asyncio.TimerHandle | None = None
        for bind in _BIND_RESPONSES:
            self.handlers[bind] = self._on_bind
        self.handlers[SubmitSm] = self._on_submit_sm
        self.handlers[DataSm] = self._on_data_sm

    @property
    def can_deliver(self) -> bool:
        return self.session.state in CAN_RECEIVE and self.is_open

    @property
    def is_closing(self) -> bool:
        return not self.is_open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.links.add(self)
        # SMPP 3.4 section 7.2 (session_init_timer): a connection that never binds is dropped,
        # or idle sockets would hold the server's resources for ever.
        self._bind_deadline = self.loop.call_later(self.server.bind_timeout, self._never_bound)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._bind_deadline is not None:
            self._bind_deadline.cancel()
        super().connection_lost(exc)
        self.server.links.discard(self)

    def _never_bound(self) -> None:
        self._bind_deadline = None
        if not self.system_id and not self.is_closing:
            self.log.warning(
                "smsc.bind.timeout",
                extra={"peer": self.peer, "after_s": self.server.bind_timeout},
            )
            self.abort()

    def _on_bind(self, pdu: Bind) -> None:
        status = self.server.check_credentials(pdu.system_id, pdu.password)
        response = _BIND_RESPONSES[type(pdu)](
            sequence=pdu.sequence,
            status=status,
            system_id=self.server.system_id,
            # SMPP 3.4 5.3.2.25: without it an ESME (Cloudhopper) takes the SMSC for 3.3;
            # none to a 3.3 ESME, which knows no TLVs
            tlvs=((Tag.SC_INTERFACE_VERSION, bytes([INTERFACE_VERSION])),)
            if not status and pdu.interface_version >= INTERFACE_VERSION
            else (),
        )
        self.send(response)
        fields = {"system_id": pdu.system_id, "peer": self.peer, "bind": type(pdu).__name__}
        if status:
            self.server.refused_binds += 1
            self.log.warning("smsc.bind.refused", extra={**fields, "status": status})
            return
        self.system_id = pdu.system_id
        if self._bind_deadline is not None:
            self._bind_deadline.cancel()
            self._bind_deadline = None
        self.log.info("smsc.bind.ok", extra=fields)
        self.server.notify_bound(self)

    def _on_submit_sm(self, pdu: SubmitSm) -> None:
        self.server.app.on_submit_sm(self, pdu)

    def _on_data_sm(self, pdu: DataSm) -> None:
        # Submitting by data_sm is not offered: answered, so the ESME does not wait for it.
        self.send(DataSmResp(sequence=pdu.sequence, status=CommandStatus.ESME_RINVCMDID))


class SmppServer:
    """Listens, tracks bound links, and delivers deliver_sm to receivers."""

    def __init__(
        self,
        app: SmscApplication | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 2775,
        credentials: Mapping[str, str] | None = None,
        system_id: str = "smsrelay",
        window: int = 100,
        response_timeout: float = 10.0,
        enquire_link_interval: float = 30.0,
        logger: logging.Logger | None = None,
        tls: ssl.SSLContext | None = None,
        bind_timeout: float = 30.0,
    ) -> None:
        self.app: SmscApplication = app or _RefuseAll()
        self.host = host
        self.port = port
        self.credentials = credentials
        self.system_id = system_id
        self.window = window
        self.response_timeout = response_timeout
        self.enquire_link_interval = enquire_link_interval
        self.tls = tls
        self.bind_timeout = bind_timeout  # seconds a connection may stay open without a bind
        self.log = logger or _log
        self.links: set[SmscLink] = set()
        self.refused_binds = 0
        self._server: asyncio.Server | None = None
        self._bound = asyncio.Event()
        self._round_robin = itertools.count()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SmscLink(self), self.host, self.port, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            link.abort()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None

    def check_credentials(self, system_id: str, password: str) -> int:
        if self.credentials is None:
            return CommandStatus.ESME_ROK
        if system_id not in self.credentials:
            return CommandStatus.ESME_RINVSYSID
        if self.credentials[system_id] != password:
            return CommandStatus.ESME_RINVPASWD
        return CommandStatus.ESME_ROK

    def notify_bound(self, link: SmscLink) -> None:
        self.app.on_bound(link)
        bound, self._bound = self._bound, asyncio.Event()
        bound.set()

    # --- delivering ----------------------------------------------------------------------

    def receivers(self, system_id: str | None = None) -> list[SmscLink]:
        """Bound receivers / transceivers (of ``system_id`` when given)."""
        return [
            link
            for link in self.links
            if link.can_deliver and (system_id is None or link.system_id == system_id)
        ]

    def _pick(self, system_id: str | None) -> SmscLink | None:
        links = self.receivers(system_id)
        return links[next(self._round_robin) % len(links)] if links else None

    def try_deliver(
        self, system_id: str | None, build: Callable[[int], DeliverSm | DataSm]
    ) -> asyncio.Future[Pdu] | None:
        """Send now if a receiver has a free window slot; None means use :meth:`deliver`.
        Raises LocalProtocolError when the PDU cannot be encoded."""
        link = self._pick(system_id)
        if link is None or link.session.window_full:
            return None
        try:
            return link.request(build(link.session.next_sequence()))
        except (NotSendableNow, TransientError):
            return None

    async def deliver(
        self, system_id: str | None, build: Callable[[int], DeliverSm | DataSm]
    ) -> Pdu:
        """Deliver to a receiver of ``system_id`` (waiting for one to bind) and return the resp.

        Retries on another (or a new) bind when the connection is lost or the resp is late;
        bound it with ``asyncio.timeout``.
        """
        while True:
            link = await self._wait_for_receiver(system_id)
            await link.window_available()
            if not link.can_deliver or link.session.window_full:
                continue
            try:
                return await link.request(build(link.session.next_sequence()))
            except (TransientError, NotSendableNow):  # that link went: another, or the next
                continue
            # a LocalProtocolError else: it cannot be encoded (an address past its field's
            # 20 characters), on any link: raised (retried at once, it spun the loop for good)

    async def _wait_for_receiver(self, system_id: str | None) -> SmscLink:
        link = self._pick(system_id)
        while link is None:
            await self._bound.wait()
            link = self._pick(system_id)
        return link
