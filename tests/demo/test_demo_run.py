"""`smallfleet demo` end to end on a small workload: the properties, not fixed numbers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from smallfleet.demo.run import run_demo
from smallfleet.routing.routes import RouteStore
from smallfleet.store.trace_store import TraceStore

OPEN_ENDED_KINDS = {"troubleshoot", "policy", "complaint"}


def test_demo_end_to_end(tmp_path: Path) -> None:
    fast = {
        "classifier": {"epochs": 4},
        "tool_caller": {"epochs": 2, "max_steps": 120},
        "extractor": {"max_steps": 120},
    }
    r = run_demo(
        tmp_path / "demo", calls=1200, seed=3, target_accuracy=0.9, progress=False, max_train=300,
        specialist_params=fast, confidence=0.5,  # 18-38 answers a task type: no 95% bound reaches 90%
    )  # fmt: skip
    # routes were promoted, and only for routine task types
    assert r.routes, "no route was promoted"
    assert {route["kind"] for route in r.routes} <= {"classifier", "extractor", "tool_caller"}
    for task in OPEN_ENDED_KINDS & set(r.by_task):
        assert r.by_task[task]["small"] == 0, f"open-ended {task} was served small"
    # what was served small agrees with the large model about as well as the target says
    assert r.served_small > 0 and r.agreement is not None and r.agreement >= 0.8
    # serving small made it cheaper and faster
    assert r.cost_after_usd < r.cost_before_usd
    assert r.latency_p50_after_ms <= r.latency_p50_before_ms
    # the report and the figures are on disk
    assert Path(r.report).exists() and "<svg" in Path(r.report).read_text()
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["served_small"] == r.served_small
    # the week is dated to end where the replay begins, and the replay, stored, ends now
    store = TraceStore(f"sqlite:///{tmp_path / 'demo' / 'smallfleet.db'}", create=False)
    now = time.time()
    traces = list(store.iter_traces(since=now - 14 * 86400))
    assert len(traces) == r.calls + r.replayed  # all of it dated within the last two weeks
    replayed = [t for t in traces if (t.metadata or {}).get("demo") == "replay"]
    assert len(replayed) == r.replayed
    assert sum(t.route.startswith("specialist:") for t in replayed) == r.served_small
    assert now - 1800 < max(t.created_at for t in replayed) <= now  # it ended when it ran
    assert max(t.created_at for t in traces if t not in replayed) < min(t.created_at for t in replayed)
    # the last 24 hours (stats --since 24h, the dashboard's default view) are mostly the replay
    last_day = [t for t in traces if t.created_at >= now - 86400]
    assert sum(t in replayed for t in last_day) > 0.8 * len(last_day)
    # what was served small is measured as delivered by its route (guard checks)
    routes = RouteStore(store.engine)
    checks = sum(routes.agreement(route["name"], kind="guard", window=100_000)[1] for route in r.routes)
    assert checks == r.served_small
    # the report shows the replay's figures beside the projection
    page = Path(r.report).read_text()
    assert 'id="replay"' in page and f"{r.share_small:.1%}" in page
    assert saved["not_promoted"] == [list(x) for x in r.not_promoted]
