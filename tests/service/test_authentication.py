"""API keys: who gets in, and what a guesser leaves in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from smsrelay.errors import DomainError
from smsrelay.service.accounts import AccountDirectory, create_account
from smsrelay.service.clock import FixedClock
from smsrelay.store.sqlite_store import SqliteStore


async def test_wrong_keys_are_logged_as_a_count_a_minute_never_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The security review: 4,900 wrong keys a second left no line in the log.
    caplog.set_level(logging.WARNING, logger="smsrelay.api")
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    await store.open()
    try:
        created = await create_account(store, "shop", "1", FixedClock(1_000.0))
        accounts = AccountDirectory(store, FixedClock(1_000.0))
        guesses = [f"guess-{n:034d}" for n in range(50)]
        for guess in guesses:
            with pytest.raises(DomainError, match="incorrect API key"):
                await accounts.authenticate(guess, None)
        assert (await accounts.authenticate(created.api_key, None)).name == "shop"
    finally:
        await store.close()
    lines = [r for r in caplog.records if r.getMessage() == "api.key.incorrect"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING  # the first, then a minute
    assert not any(
        guess in r.getMessage() or guess in str(r.__dict__) for r in lines for guess in guesses
    )
