"""Test-wide rules: no network but loopback, no hub downloads."""

from __future__ import annotations

import ipaddress
import os
import socket

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
