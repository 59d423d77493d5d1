"""The store's own work per operation, one kind at a time, on a warm SQLite store: the figure
to decide a store change by, because these machines' speed moves more from hour to hour than
most such changes do.

Each kind runs in a fresh process: a setup (the rows the operation needs), then the operation
in runs of 64 (8 runs in flight, as a loaded gateway groups them) twice over, and only the
second half is measured, so every statement text it uses is already prepared.

  .venv/bin/python bench/store_ops.py                      # CPU µs per operation (noisy)
  .venv/bin/python bench/store_ops.py --instructions       # instructions per operation
  .venv/bin/python bench/store_ops.py --instructions --against /tmp/base/src

``--instructions`` runs each process under valgrind's callgrind twice, with and without the
measured half, and divides the difference by its count: the same code gives the same figure
within 0.2 % whatever else the machine does. ``--against SRC`` measures a second copy of the
sources (e.g. a ``git worktree`` of another commit) in the same run and prints the ratio.
Kinds: accept (a one-part message), claim (a due part), submit (its ``submit_sm_resp``
recorded), receipt (a final receipt with its DLR callback queued), callback (a DLR callback
claimed, posted elsewhere, its attempt recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

KINDS = ("accept", "claim", "submit", "receipt", "callback")
RUN = 64  # operations per grouped write
IN_FLIGHT = 8  # runs awaited together
NUMBER = "+33757000001"


def _message(now: float) -> Any:
    from smsrelay.store.records import NewMessage

    return NewMessage(
        account_id=1,
        sender=NUMBER,
        recipient="+33612345678",
        region="FR",
        text="Votre code de confirmation est 482913.",
        encoding="gsm7",
        nb_sms=1,
        cost_micros=1,
        tag=None,
        url_response=None,
        url_dlr="http://127.0.0.1:9/dlr",
        stop_sms=False,
        sandbox=False,
        created_at=now,
        due_at=now,
    )


async def _halves(
    items: Sequence[Any], run: Callable[[Sequence[Any]], Awaitable[Any]], both: bool
) -> float:
    """Run ``items`` in runs of RUN, IN_FLIGHT at a time: the first half, then (``both``)
    the second; the CPU seconds of the last half run."""
    runs = [items[i : i + RUN] for i in range(0, len(items), RUN)]
    spent = 0.0
    # The collector's passes fall by allocation counts, so which half pays for one moves with
    # any change; left out here (``serve`` spends ~1 % of its CPU in them, see runtime.py).
    gc.collect()
    gc.freeze()
    gc.disable()
    for half in (runs[: len(runs) // 2], runs[len(runs) // 2 :])[: 2 if both else 1]:
        started = time.process_time()
        for i in range(0, len(half), IN_FLIGHT):
            await asyncio.gather(*(run(chunk) for chunk in half[i : i + IN_FLIGHT]))
        spent = time.process_time() - started
    return spent


async def _worker(kind: str, count: int, both: bool) -> float:
    # imported here, in the worker: its PYTHONPATH chooses which tree's smsrelay is measured
    from smsrelay.store.records import IncomingReceipt, TakenPart, WebhookAttempt
    from smsrelay.store.sqlite_store import SqliteStore
    from smsrelay.webhooks.payloads import BUILDERS

    folder = Path(tempfile.mkdtemp(prefix="store-ops-"))
    store = SqliteStore(f"sqlite:///{folder / 'ops.db'}")
    try:
        await store.open()
        await store.create_account("bench", "hash", 10**15, time.time())
        await store.add_number("bench", NUMBER, "default", time.time())

        async def accept(chunk: Sequence[Any]) -> None:
            await asyncio.gather(*(store.accept_message(m) for m in chunk))

        if kind == "accept":
            return await _halves([_message(time.time()) for _ in range(count)], accept, both)
        for i in range(0, count, 512):
            await accept([_message(time.time()) for _ in range(min(512, count - i))])

        async def claim(chunk: Sequence[Any]) -> None:
            await store.claim_due_parts("default", time.time(), len(chunk), time.time() + 600)

        if kind == "claim":
            return await _halves(range(count), claim, both)
        parts: list[Any] = []
        while len(parts) < count:
            parts += await store.claim_due_parts("default", time.time(), 512, time.time() + 600)
        taken = [TakenPart(p.part_id, f"{p.part_id:x}", f"{p.part_id:x}", 1) for p in parts]

        async def submit(chunk: Sequence[TakenPart]) -> None:
            await store.mark_submitted_many(chunk, time.time(), BUILDERS)

        if kind == "submit":
            return await _halves(taken, submit, both)
        for i in range(0, count, 512):
            await submit(taken[i : i + 512])
        receipts = [
            IncomingReceipt(
                "default", t.carrier_id, (t.carrier_key,), "DELIVRD", "000", time.time()
            )
            for t in taken
        ]

        async def receipt(chunk: Sequence[IncomingReceipt]) -> None:
            await store.record_receipts_many(chunk, BUILDERS)

        if kind == "receipt":
            return await _halves(receipts, receipt, both)
        for i in range(0, count, 512):
            await receipt(receipts[i : i + 512])

        async def callback(chunk: Sequence[Any]) -> None:
            jobs = await store.claim_due_webhooks(time.time(), len(chunk), time.time() + 600)
            await store.record_webhook_attempts_many(
                [WebhookAttempt(j.id, time.time(), 200, 1.0, None, "delivered", None) for j in jobs]
            )

        return await _halves(range(count), callback, both)
    finally:
        await store.close()
        shutil.rmtree(folder, ignore_errors=True)


def _run_worker(kind: str, count: int, both: bool) -> float:
    import uvloop

    return uvloop.run(_worker(kind, count, both))


def _instructions(src: str, kind: str, count: int, both: bool) -> int:
    """Instructions of a worker process's main thread (the event loop's, where the SQL runs)
    under callgrind. The syncer thread is left out: its checkpoints come once a second of
    wall time, so where one falls depends on the speed of the run, not on the code."""
    with tempfile.TemporaryDirectory(prefix="store-ops-cg-") as folder:
        out = Path(folder) / "cg.out"
        args = ["valgrind", "--tool=callgrind", "--separate-threads=yes"]
        args += [f"--callgrind-out-file={out}", sys.executable, __file__]
        args += ["--worker", kind, str(count)] + ([] if both else ["--first-half"])
        env = {**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "0"}
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        main_thread = Path(f"{out}-01")
        if done.returncode != 0 or not main_thread.exists():
            raise SystemExit(f"store_ops: the {kind} worker failed under valgrind:\n{done.stderr}")
        found = re.search(r"^(?:summary|totals): (\d+)", main_thread.read_text(), re.MULTILINE)
        if found is None:
            raise SystemExit(f"store_ops: no instruction count in {main_thread.name}")
        return int(found.group(1))


def _measured(count: int) -> int:
    """How many operations the second half has (``_halves`` gives the first half of the runs,
    rounded down, to the first half)."""
    return count - math.ceil(count / RUN) // 2 * RUN


def _instructions_per_operation(src: str, kind: str, count: int) -> float:
    both, first = (_instructions(src, kind, count, half) for half in (True, False))
    return (both - first) / _measured(count)


def _cpu_us_per_operation(src: str, kind: str, count: int) -> float:
    args = [sys.executable, __file__, "--worker", kind, str(count)]
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"store_ops: the {kind} worker failed:\n{done.stderr}")
    return float(done.stdout.split()[-1]) / _measured(count) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--against", metavar="SRC", help="a second copy of src/ to compare")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds")
    parser.add_argument("--count", type=int, default=4096, help="operations per kind")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--first-half", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        kind, count = options.worker[0], int(options.worker[1])
        print(f"{_run_worker(kind, count, not options.first_half):.6f}")
        return
    if options.instructions and shutil.which("valgrind") is None:
        raise SystemExit("store_ops: --instructions needs valgrind (apt-get install valgrind)")
    here = str(Path(__file__).resolve().parent.parent / "src")
    sources = [("this tree", here)] + ([("against", options.against)] if options.against else [])
    for _, src in sources:
        # checked: a wrong path would silently measure the installed smsrelay, this tree's
        if not (Path(src) / "smsrelay" / "__init__.py").is_file():
            raise SystemExit(f"store_ops: {src} has no smsrelay package (give a tree's src/)")
    measure = _instructions_per_operation if options.instructions else _cpu_us_per_operation
    unit = "instructions" if options.instructions else "CPU µs"
    print(f"store work per operation ({unit}; {options.count} per kind, the warm half measured)")
    for kind in options.kinds.split(","):
        if kind not in KINDS:
            raise SystemExit(f"store_ops: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
        figures = [measure(src, kind, options.count) for _, src in sources]
        line = f"  {kind:<9}" + "".join(
            f"  {name}: {value:>12,.1f}" for (name, _), value in zip(sources, figures, strict=True)
        )
        if len(figures) == 2:
            line += f"  ratio {figures[0] / figures[1]:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
