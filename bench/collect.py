"""Merge bench/out/<section>.json into bench/out/results.json with the machine and the date."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def machine() -> dict:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "unknown",
    )
    mem_kb = next(
        int(ln.split()[1])
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": round(mem_kb / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def main() -> None:
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "wall_seconds": int(sys.argv[1]) if len(sys.argv) > 1 else None,
    }
    for name in ("accept", "e2e", "replies", "backlog", "kannel"):
        path = OUT / f"{name}.json"
        results[name] = json.loads(path.read_text()) if path.exists() else None
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nbench: wrote {OUT / 'results.json'} (run took {results['wall_seconds']} s)")
    for name in ("accept", "e2e", "backlog"):
        section = results[name] or {}
        for target, ok in (section.get("targets") or {}).items():
            print(f"  {name}: {target}: {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
