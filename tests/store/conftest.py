"""Every store test runs on both engines: SQLite (a file) and PostgreSQL (a real server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    server: Any = request.getfixturevalue("postgres")
    return str(server.new_database())
