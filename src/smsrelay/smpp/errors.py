"""Protocol errors that say whose fault it was (the h11 way)."""

from __future__ import annotations

from smsrelay.errors import SmsRelayError


class SmppError(SmsRelayError):
    """Root of the SMPP codec and session errors."""


class LocalProtocolError(SmppError):
    """We tried to send something SMPP does not allow (a bug on our side)."""


class NotSendableNow(LocalProtocolError):
    """The request is valid but not now: the bind state or the window forbids it."""


class RemoteProtocolError(SmppError):
    """The peer sent something we cannot accept.

    ``status`` is the command_status to answer with, ``sequence`` and ``command_id`` identify the
    offending PDU (0 when unknown). ``fatal`` means the byte stream cannot be resynchronised and
    the connection must be closed after answering.
    """

    def __init__(
        self,
        status: int,
        sequence: int = 0,
        message: str = "",
        *,
        command_id: int = 0,
        fatal: bool = False,
    ) -> None:
        super().__init__(message or f"remote protocol error 0x{status:02X}")
        self.status = status
        self.sequence = sequence
        self.command_id = command_id
        self.fatal = fatal

    def __repr__(self) -> str:
        return (
            f"RemoteProtocolError(0x{self.status:02X}, {self.sequence}, {self.args[0]!r}, "
            f"command_id=0x{self.command_id:08X}, fatal={self.fatal})"
        )
