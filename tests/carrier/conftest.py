"""Loopback fixtures: our Simulator on 127.0.0.1:0 and SmppConnectors bound to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from smsrelay.carrier.connector import InboundSm, OutboundPart
from smsrelay.carrier.simulator import Simulator, SimulatorOptions
from smsrelay.carrier.smpp_client import SmppConnector, SmppLinkConfig

POLL_INTERVAL = 0.005  # how often a wait-for-condition loop looks again

SOURCE = "33700000001"
DESTINATION = "33612345678"


async def eventually(
    condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Wait until ``condition()`` holds; fail the test after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(POLL_INTERVAL)
    except TimeoutError:
        pytest.fail(f"{what} not met within {timeout} s")


def part(n: int = 1, payload: bytes = b"hello", **changes: Any) -> OutboundPart:
    values: dict[str, Any] = {
        "part_id": n,
        "source": SOURCE,
        "destination": DESTINATION,
        "payload": payload,
        "data_coding": 0,
        "ref": 0,
        "total": 1,
        "seq": 1,
    }
    values.update(changes)
    return OutboundPart(**values)


class Handler:
    """An InboundHandler made of an async function that takes one item at a time."""

    def __init__(self, handle: Callable[[InboundSm], Awaitable[int]]) -> None:
        self._handle = handle

    async def __call__(self, inbound: InboundSm) -> int:
        return await self._handle(inbound)

    async def handle_many(self, inbounds: Sequence[InboundSm]) -> list[int]:
        """All at once (a slow one shows how many the SMSC has waiting); one that raises
        fails the whole call, as a failed store write would."""
        return list(await asyncio.gather(*(self(inbound) for inbound in inbounds)))

    async def answers_proven(self, bind_id: str, through: int) -> None:
        pass


class Inbox:
    """An InboundHandler that keeps what it got; ``statuses`` scripts its answers."""

    def __init__(self) -> None:
        self.items: list[InboundSm] = []  # acknowledged with 0
        self.seen: list[InboundSm] = []  # every call
        self.statuses: list[int | Exception] = []
        self.proven: dict[str, int] = {}  # bind -> answers proven read through (saved)

    @property
    def calls(self) -> int:
        return len(self.seen)

    async def __call__(self, inbound: InboundSm) -> int:
        self.seen.append(inbound)
        answer = self.statuses.pop(0) if self.statuses else 0
        if isinstance(answer, Exception):
            raise answer
        if answer == 0:
            self.items.append(inbound)
        return answer

    async def handle_many(self, inbounds: Sequence[InboundSm]) -> list[int]:
        """In turn; one that raises fails the whole call, as a failed store write would."""
        return [await self(inbound) for inbound in inbounds]

    async def answers_proven(self, bind_id: str, through: int) -> None:
        self.proven[bind_id] = max(self.proven.get(bind_id, 0), through)

    @property
    def receipts(self) -> list[InboundSm]:
        return [item for item in self.items if item.esm_class & 0x04]


MakeSimulator = Callable[..., Awaitable[Simulator]]
MakeConnector = Callable[..., Awaitable[SmppConnector]]


@pytest.fixture
async def make_simulator() -> AsyncIterator[MakeSimulator]:
    started: list[Simulator] = []

    async def make(**options: Any) -> Simulator:
        options.setdefault("seed", 7)
        options.setdefault("control_port", 0)
        simulator = Simulator(SimulatorOptions(port=0, **options))
        await simulator.start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        await simulator.stop()


@pytest.fixture
async def make_connector() -> AsyncIterator[MakeConnector]:
    started: list[SmppConnector] = []

    async def make(
        target: Simulator | int,
        inbox: Inbox | None = None,
        *,
        wait: bool = True,
        store_refusal: Callable[[], str | None] = lambda: None,
        **config: Any,
    ) -> SmppConnector:
        """A started connector to ``target`` (a Simulator, or a port on 127.0.0.1);
        ``store_refusal`` says why the store takes no write now, as the engine's health does."""
        config.setdefault("system_id", "esme")
        config.setdefault("password", "secret")
        config.setdefault("reconnect_min", 0.05)
        config.setdefault("reconnect_max", 0.5)
        port = target if isinstance(target, int) else target.port
        link = SmppLinkConfig("127.0.0.1", port, **config)
        connector = SmppConnector("test", link, inbox or Inbox(), store_refusal=store_refusal)
        await connector.start()
        started.append(connector)
        if wait:
            await eventually(lambda: connector.is_up, what="bind")
        return connector

    yield make
    for connector in started:
        await connector.stop()


@pytest.fixture
async def simulator(make_simulator: MakeSimulator) -> Simulator:
    return await make_simulator()


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()
