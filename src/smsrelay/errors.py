"""One root error for the whole gateway.

Domain errors carry a stable ``code`` (a short dotted name) and the ``field`` they concern;
only ``smsrelay.api.errors`` maps them to SMS Partner's numeric codes.
"""

from __future__ import annotations


class SmsRelayError(Exception):
    """Root of every error smsrelay raises on purpose."""


class DomainError(SmsRelayError):
    """A business rule refused the input. ``code`` is stable; ``field`` names the input."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class TransientError(SmsRelayError):
    """An adapter failed in a way that may succeed if retried (timeout, connection lost)."""


class MaybeStored(TransientError):
    """A write whose commit may have happened all the same (PostgreSQL's outcome unknown, a
    failed fsync): refused to its caller, yet its row may be there."""


class StorageLow(TransientError):
    """New work refused while the store keeps its disk reserve for what already happened."""


class Busy(TransientError):
    """Refused for now because the caller's own requests fill its line; the words are meant
    for the client."""


class PermanentError(SmsRelayError):
    """An adapter failed in a way that retrying will not fix."""
