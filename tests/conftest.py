"""Test-wide rules: no network but loopback, no hub downloads."""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
#: Where the dashboard's browser tests save screenshots (read before SMALLFLEET_* is cleared).
_SCREENSHOTS = os.environ.get("SMALLFLEET_SCREENSHOTS")
for _k in [k for k in os.environ if k.startswith("SMALLFLEET_")]:
    del os.environ[_k]

PG_URL = os.environ.get("SMALLFLEET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> object:
    if isinstance(address, tuple) and self.family in (socket.AF_INET, socket.AF_INET6):
        host = str(address[0])
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok:
            raise OSError(f"tests may not reach the network (tried {host})")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign]


def pg_schema_url(base: str, schema: str) -> str:
    """``base`` with every unqualified table in ``schema`` (so parallel runs never share tables)."""
    import sqlalchemy as sa

    u = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return u.render_as_string(hide_password=False)


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A URL of the local PostgreSQL pointing at a fresh schema, dropped afterwards."""
    import sqlalchemy as sa

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


@pytest.fixture
def pg_url() -> str:
    """The local PostgreSQL (database ``test``); skipped only when the server is not running."""
    import sqlalchemy as sa

    try:
        eng = sa.create_engine(PG_URL)
        with eng.connect():
            pass
        eng.dispose()
    except Exception as e:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {e}")
    return PG_URL


@pytest.fixture(scope="session")
def screenshots_env() -> str | None:
    """``$SMALLFLEET_SCREENSHOTS`` as it was when the tests started (the variable itself is cleared)."""
    return _SCREENSHOTS
