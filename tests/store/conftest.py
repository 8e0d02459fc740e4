"""Store fixtures: the same tests on a SQLite file and on the local PostgreSQL (own schema per test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from smallfleet.store import TraceStore


def pg_schema_url(base: str, schema: str) -> str:
    """``base`` with every unqualified table in ``schema`` (so parallel runs never share tables)."""
    u = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return u.render_as_string(hide_password=False)


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A URL of the local PostgreSQL pointing at a fresh schema, dropped afterwards."""
    schema = f"sf_test_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(pg_url)
    with eng.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield pg_schema_url(pg_url, schema)
    finally:
        with eng.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        eng.dispose()


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
