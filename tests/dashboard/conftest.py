"""Fixtures of the dashboard tests: a scripted upstream and a PostgreSQL schema of their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from smallfleet.testing import ScriptedUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """The local PostgreSQL with every table in a fresh schema (dropped afterwards)."""
    schema = f"sf_dash_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(pg_url)
    with eng.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        u = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield u.render_as_string(hide_password=False)
    finally:
        with eng.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        eng.dispose()
