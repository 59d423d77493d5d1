"""bench/store_ops.py, the tool store changes are decided by, still runs every kind against
the store's current interface (plain CPU mode: valgrind is not needed here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "store_ops.py"


def _store_ops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_store_ops_measures_every_operation_kind() -> None:
    done = _store_ops("--count", "256")
    assert done.returncode == 0, done.stderr
    figures = dict(re.findall(r"^\s+(\w+)\s+this tree:\s+([\d,.]+)$", done.stdout, re.MULTILINE))
    assert set(figures) == {"accept", "claim", "submit", "receipt", "callback"}
    assert all(float(value.replace(",", "")) > 0 for value in figures.values())


def test_store_ops_refuses_an_unknown_kind() -> None:
    done = _store_ops("--kinds", "nope")
    assert done.returncode != 0
    assert "unknown kind 'nope'" in done.stderr


def test_store_ops_refuses_a_tree_without_the_package(tmp_path: Path) -> None:
    done = _store_ops("--against", str(tmp_path), "--kinds", "claim", "--count", "128")
    assert done.returncode != 0
    assert f"{tmp_path} has no smsrelay package" in done.stderr
