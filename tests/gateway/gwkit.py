"""Helpers of the gateway tests (a uniquely named module: ``conftest`` is not importable by name)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from smallfleet.gateway.app import Gateway
from smallfleet.gateway.server import BackgroundServer
from smallfleet.store.trace_store import TraceStore

PRICE = {"input": 1.0, "output": 2.0}  # USD per 1M tokens, so cost = (in + 2 * out) / 1e6


def free_port() -> int:
    """A port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    app: Gateway
    server: BackgroundServer
    store: TraceStore

    @property
    def url(self) -> str:
        return self.server.url

    def traces(self) -> list[Any]:
        """Every trace, after the recorder has written what it holds."""
        deadline = time.monotonic() + 10
        while self.app.metrics.in_flight and time.monotonic() < deadline:  # responses go out before traces
            time.sleep(0.005)
        assert self.app.recorder.flush(10), "recorder did not flush"
        return list(self.store.iter_traces())

    def client(self, **kw: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.url, api_key=kw.pop("api_key", "x"), max_retries=0, timeout=15, **kw)


def model_cfg(url: str, **kw: Any) -> dict[str, Any]:
    cfg = {
        "backend": "openai",
        "base_url": url,
        "max_retries": 0,
        "backoff_base": 0.0,
        "read_timeout": 10.0,  # generous: the test machine may be busy
        "connect_timeout": 1.0,
        "price": PRICE,
    }
    cfg.update(kw)
    return cfg
