"""Fixtures of the gateway tests: a scripted upstream, and real gateways on loopback over real stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gwkit import Running

from smallfleet.config import load_settings
from smallfleet.gateway.app import create_app
from smallfleet.gateway.server import BackgroundServer
from smallfleet.store.trace_store import TraceStore
from smallfleet.testing import ScriptedUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Running]]:
    """Start a gateway on 127.0.0.1 with the given settings overrides (stopped at module end)."""
    started: list[Running] = []

    def start(overrides: dict[str, Any], store_url: str | None = None) -> Running:
        db: Path = tmp_path_factory.mktemp("gw") / "traces.db"
        url = store_url or f"sqlite:///{db}"
        overrides = {**overrides, "store": {"url": url}}
        overrides.setdefault("gateway", {}).setdefault("flush_interval_ms", 20)
        settings = load_settings(env={}, overrides=overrides)
        store = TraceStore(url)
        app = create_app(settings, store=store)
        server = BackgroundServer(app).start()
        running = Running(app, server, store)
        started.append(running)
        return running

    yield start
    for r in started:
        r.server.stop()
        r.store.close()
