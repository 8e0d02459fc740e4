"""Helpers of the router tests: a real gateway over a real store with promoted routes, and a
scripted tool-calling specialist (the far side of the specialist seam, for validation tests).

A uniquely named module (``conftest`` is not importable by name); the specialist is found by
``load_specialist`` through ``KINDS[SCRIPTED_KIND] = "routekit:ScriptedToolCaller"``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from smallfleet.config import load_settings
from smallfleet.gateway.app import Gateway, create_app
from smallfleet.gateway.server import BackgroundServer
from smallfleet.routing.matcher import static_key_of_dict
from smallfleet.routing.routes import Route, RouteStore
from smallfleet.specialists.base import Prediction, Specialist, SpecialistMeta
from smallfleet.store.records import TraceRecord
from smallfleet.store.trace_store import TraceStore
from smallfleet.types import ChatRequest, ChatResponse, Usage

ALIAS = "gpt-4o-mini"
PRICE = {"input": 1.0, "output": 2.0}  # USD per 1M tokens
SCRIPTED_KIND = "scripted_tool_caller"


def key_matcher(system: str, tools: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A matcher dict owning the static key of requests with this system prompt and these tools."""
    body: dict[str, Any] = {"messages": [{"role": "system", "content": system}]}
    if tools:
        body["tools"] = list(tools)
    return {"version": 1, "keys": [static_key_of_dict(body)]}


def train_triage(out: Path) -> Any:
    """A support-desk classifier saved to ``out`` (head only on the frozen encoder: seconds,
    confident on easy data)."""
    from smallfleet.specialists.classifier import Classifier
    from smallfleet.testing.intents import support_desk_examples

    clf = Classifier(progress=False, trainable_layers=0, seed=0).fit(
        support_desk_examples(60, split="train", seed=1)
    )
    clf.save(out)
    return clf


class ScriptedToolCaller(Specialist):
    """Answers each user text with a scripted tool call and confidence (test-only); an empty tool
    name answers with a text reply instead."""

    kind: ClassVar[str] = SCRIPTED_KIND

    def __init__(self, script: dict[str, tuple[str, dict[str, Any], float]]) -> None:
        self.script = script
        self.meta = SpecialistMeta(
            kind=self.kind, base_model="scripted", params={"script": {k: list(v) for k, v in script.items()}}
        )

    def predict(self, requests: Sequence[ChatRequest]) -> list[Prediction]:
        out = []
        for r in requests:
            name, args, confidence = self.script[r.last_user_text()]
            response = (
                ChatResponse.of_tool_calls("scripted", [(name, args)], Usage.of(0, 0))
                if name
                else ChatResponse.of_text("scripted", "Which city do you mean?", Usage.of(0, 0))
            )
            out.append(Prediction(response, confidence))
        return out

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        self.meta.write(d)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ScriptedToolCaller:
        meta = SpecialistMeta.read(Path(directory))
        return cls({k: (v[0], v[1], float(v[2])) for k, v in meta.params["script"].items()})


@dataclass
class RoutedGateway:
    """A gateway started on 127.0.0.1 over its own SQLite store, with its routes."""

    app: Gateway
    server: BackgroundServer
    store: TraceStore
    routes: RouteStore
    db_url: str
    _client: Any = None

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> Any:
        """One ``openai`` client per gateway (its connections are reused)."""
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(base_url=self.url, api_key="x", max_retries=0, timeout=30)
        return self._client

    def trace(self, trace_id: str) -> TraceRecord:
        """One trace, after the recorder has written what it holds."""
        deadline = time.monotonic() + 10
        while self.app.metrics.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.app.recorder.flush(10), "recorder did not flush"
        rec = self.store.get_trace(trace_id)
        assert rec is not None, f"no trace {trace_id}"
        return rec

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        self.server.stop()
        self.store.close()


def start_gateway(
    directory: Path, upstream_url: str, routes: Sequence[Route], db_url: str | None = None, **routing: Any
) -> RoutedGateway:
    """Promote ``routes`` into a fresh store (SQLite in ``directory`` unless ``db_url``), then start
    a gateway with ``routing.enabled``."""
    db_url = db_url or f"sqlite:///{directory / 'traces.db'}"
    store = TraceStore(db_url)
    route_store = RouteStore(store.engine)
    for r in routes:
        route_store.promote(r, actor="test")
    overrides = {
        "models": {
            ALIAS: {
                "backend": "openai",
                "base_url": upstream_url,
                "max_retries": 0,
                "read_timeout": 20.0,
                "price": PRICE,
            }
        },
        "store": {"url": db_url},
        "gateway": {"flush_interval_ms": 20},
        "pricing": {"local_usd_per_hour": 0.5},
        "routing": {"enabled": True, "reload_seconds": 0.2, "seed": 7, "guard_fraction": 0.0, **routing},
    }
    settings = load_settings(env={}, overrides=overrides)
    app = create_app(settings, store=store)
    server = BackgroundServer(app).start()
    return RoutedGateway(app, server, store, route_store, db_url)
