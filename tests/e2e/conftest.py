from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smsrelay import runtime
from tests.support import (
    Receiver,
    RunningGateway,
    SmscProcess,
    gateway_settings,
    start_gateway,
    start_smsc,
)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """The whole gateway in-process with its built-in SMSC, on loopback ports."""
    gateway = await start_gateway(gateway_settings(tmp_path))
    yield gateway
    await runtime.stop(gateway.running)


@pytest.fixture
async def smsc() -> AsyncIterator[SmscProcess]:
    """The SMSC simulator as a separate process."""
    process = await start_smsc("--delivery-rate", "1.0")
    yield process
    await process.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A callback receiver on loopback that records what it is posted."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()
