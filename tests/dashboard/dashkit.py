"""Helpers of the dashboard tests: a real gateway on loopback (with its /ui) over a real store, seeded."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from smallfleet.config import load_settings
from smallfleet.gateway.app import Gateway, create_app
from smallfleet.gateway.auth import hash_key
from smallfleet.gateway.server import BackgroundServer
from smallfleet.routing.routes import Route, RouteStore
from smallfleet.store import TraceRecord, TraceStore
from smallfleet.store.fleet_tables import clusters, flywheel_runs
from smallfleet.testing import Reply, ScriptedUpstream

ADMIN_KEY = "sf-admin-" + "a" * 20
VIEWER_KEY = "sf-viewer-" + "b" * 20
PRICE = {"input": 1.0, "output": 2.0}

#: What each seeded call asks, by workload: (workload, user text, upstream answer).
CALLS = [
    ("support", "Where is my order {i}? It was due on Monday.", "It ships tomorrow."),
    ("support", "Cancel my subscription number {i} please", "Done: cancelled."),
    ("triage", "Classify this ticket: printer {i} is on fire", "hardware"),
]


@dataclass
class Site:
    app: Gateway
    server: BackgroundServer
    store: TraceStore

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def routes(self) -> RouteStore:
        return RouteStore(self.store.engine)

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=15, **kw)

    def flush(self) -> None:
        deadline = time.monotonic() + 10
        while self.app.metrics.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.app.recorder.flush(10), "recorder did not flush"

    def stop(self) -> None:
        self.server.stop()
        self.store.close()


def start_site(
    tmp: Path,
    upstream: ScriptedUpstream,
    *,
    keys: bool = True,
    store_url: str | None = None,
    gateway: dict[str, Any] | None = None,
) -> Site:
    """A gateway on loopback; ``gateway`` overrides its settings (a session secret, other keys)."""
    url = store_url or f"sqlite:///{tmp / 'traces.db'}"
    gateway = {"flush_interval_ms": 20, **(gateway or {})}
    if keys and "keys" not in gateway:
        gateway["keys"] = [
            {"name": "ops", "sha256": hash_key(ADMIN_KEY), "admin": True},
            {"name": "viewer", "sha256": hash_key(VIEWER_KEY)},
        ]
    settings = load_settings(
        env={},
        overrides={
            "store": {"url": url},
            "gateway": gateway,
            "models": {
                "big": {"backend": "openai", "base_url": upstream.url, "max_retries": 0, "price": PRICE}
            },
        },
    )
    store = TraceStore(url)
    app = create_app(settings, store=store)
    server = BackgroundServer(app).start()
    return Site(app, server, store)


def record_calls(
    site: Site, upstream: ScriptedUpstream, n: int = 12, key: str | None = ADMIN_KEY
) -> list[str]:
    """``n`` chat calls through the gateway (real HTTP); returns their trace ids."""
    ids = []
    with site.client(key) as c:
        for i in range(n):
            workload, text, answer = CALLS[i % len(CALLS)]
            upstream.push(Reply.text(answer, prompt_tokens=10 + i))
            r = c.post(
                "/v1/chat/completions",
                json={"model": "big", "messages": [{"role": "user", "content": text.format(i=i)}]},
                headers={"x-smallfleet-workload": workload},
            )
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-smallfleet-trace-id"])
    site.flush()
    return ids


def seed_history(store: TraceStore, now: float | None = None, n: int = 60) -> list[TraceRecord]:
    """Earlier traffic as the router would have left it: small-served calls and escalations."""
    now = time.time() if now is None else now
    recs = []
    for i in range(n):
        small = i % 3 != 0
        reason = "low_confidence" if i % 2 else "invalid_output"
        recs.append(
            TraceRecord(
                created_at=now - 600 - i * 300,
                workload="triage",
                model_requested="big",
                model_served="intent-clf" if small else "big",
                route="specialist:triage-intent" if small else f"escalated:{reason}",
                escalation=None if small else reason,
                confidence=0.97 if small else 0.4,
                request={"model": "big", "messages": [{"role": "user", "content": f"Classify ticket {i}"}]},
                response={"choices": [{"index": 0, "message": {"role": "assistant", "content": "billing"}}]},
                input_tokens=12,
                output_tokens=1,
                latency_ms=8.0 + i % 5 if small else 400.0 + 10 * i,
                cost_usd=0.000001 if small else 0.00002,
            )
        )
    store.write_traces(recs)
    return recs


def seed_fleet(store: TraceStore) -> None:
    """A finished flywheel run with two task clusters, one promoted route (two versions), shadow checks."""
    routes = RouteStore(store.engine)
    base = {"kind": "classifier", "specialist_path": "/tmp/none", "workload": "triage", "labels": ["a", "b"]}
    routes.promote(Route(name="triage-intent", threshold=0.9, mode="shadow", **base))
    routes.promote(Route(name="triage-intent", threshold=0.85, mode="shadow", **base))
    for i in range(40):
        routes.record_check("triage-intent", 2, "shadow", agree=i % 5 != 0, confidence=0.9)
    run_id = uuid.uuid4().hex
    now = time.time()
    summary = {
        "run_id": run_id,
        "started_at": now - 60,
        "finished_at": now,
        "workload": "triage",
        "params": {"target_accuracy": 0.95},
        "traffic": {"calls": 60, "cost_usd": 0.0005},
        "curation": {"total": 60, "kept": 55, "dropped": {}, "splits": {"train": 40, "test": 7}},
        "clusters": [
            {"key": "triage-intent", "name": "classify tickets", "size": 50, "shape": "label",
             "status": "promoted", "share_calls": 0.8, "share_cost": 0.7, "cost_usd": 0.0004,
             "latency_p50_ms": 420.0, "candidates": [], "route": {"name": "triage-intent", "mode": "shadow"}},
        ],
        "noise": {},
        "projection": {},
        "changes": [],
    }  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(flywheel_runs).values(
                id=run_id, started_at=now - 60, finished_at=now, workload="triage", status="done",
                params={}, summary=summary,
            )
        )  # fmt: skip
        for i, (key, name, size, shape, status, sc, sk) in enumerate(
            [
                ("triage-intent", "classify tickets", 50, "label", "promoted", 0.8, 0.7),
                ("triage-other", "free-form replies", 10, "text", "too_small", 0.2, 0.3),
            ]
        ):
            conn.execute(
                sa.insert(clusters).values(
                    id=f"{run_id}-{i}", run_id=run_id, key=key, name=name, workload="triage", size=size,
                    shape=shape, status=status, stats={"share_calls": sc, "share_cost": sk}, profile={},
                )
            )  # fmt: skip
