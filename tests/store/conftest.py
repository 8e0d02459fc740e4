"""Store fixtures: the same tests on a SQLite file and on the local PostgreSQL (own schema per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smallfleet.store import TraceStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'traces.db'}"
    return request.getfixturevalue("pg_schema")


@pytest.fixture
def store(store_url: str) -> Iterator[TraceStore]:
    s = TraceStore(store_url)
    try:
        yield s
    finally:
        s.close()
