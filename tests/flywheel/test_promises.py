"""Promised = delivered: what a route promises rests on a bound, and ``routes`` sets
what the gateway's checks measure since against it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from smallfleet.cli import app
from smallfleet.demo.workload import generate_workload, to_trace_records
from smallfleet.flywheel.pipeline import FlywheelOptions, latest_summary, run_flywheel
from smallfleet.report.html import write_report
from smallfleet.routing.routes import Route, RouteStore
from smallfleet.store.trace_store import TraceStore


def _cli(db_url: str, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"SMALLFLEET_STORE__URL": db_url, "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def _route(name: str, metrics: dict[str, Any]) -> Route:
    return Route(
        name=name, kind="classifier", specialist_path="/tmp/x", threshold=0.5, mode="on", metrics=metrics
    )


PROMISE = {
    "kept_accuracy": 0.99,
    "kept": 200,
    "kept_correct": 198,
    "kept_accuracy_lower": 0.968,
    "confidence": 0.95,
    "target_accuracy": 0.95,
    "coverage": 0.6,
    "n": 333,
}


def test_routes_show_promised_against_delivered(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    routes = RouteStore(TraceStore(db_url).engine)
    routes.promote(_route("kept", PROMISE))
    routes.promote(_route("broken", PROMISE))
    routes.promote(_route("quiet", PROMISE))
    # an older route, from before promises were stored: the bound is recomputed from its figures
    routes.promote(_route("old", {"kept_accuracy": 1.0, "coverage": 0.5, "n": 80}))
    for i in range(120):
        routes.record_check("kept", 1, "guard", agree=i % 40 != 0, confidence=0.9)  # 117/120
        routes.record_check("broken", 1, "guard", agree=i % 5 != 0, confidence=0.9)  # 96/120
    # shadow checks the specialist was not confident of were never served: they do not count
    for _ in range(30):
        routes.record_check("kept", 1, "shadow", agree=False, confidence=0.2)

    kept = _cli(db_url, "routes", "show", "kept")
    promised = "promised: at least 96.8% with 95% confidence (point estimate 99.0% on 200 kept held-out"
    assert promised in kept
    assert "delivered since v1: 97.5% of 120" in kept and "below the promise" not in kept
    broken = _cli(db_url, "routes", "show", "broken")
    assert "delivered since v1: 80.0% of 120" in broken and "below the promise" in broken
    assert "not measured yet" in _cli(db_url, "routes", "show", "quiet")
    # 40 of 40 right: 0.05 ** (1 / 40) ≈ 92.8%
    assert "promised: at least 92.8% with 95% confidence" in _cli(db_url, "routes", "show", "old")

    listing = _cli(db_url, "routes", "list")
    assert "promised" in listing and "delivered" in listing
    assert "≥96.8% (99.0% of 200)" in listing and "below the promise" in listing


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Intent with a few hundred calls beside urgency with sixty."""
    tmp = tmp_path_factory.mktemp("promises")
    calls = generate_workload(2800, seed=5)
    intent = [c for c in calls if c.task_type == "intent"]
    urgency = [c for c in calls if c.task_type == "urgency"][:34]
    store = TraceStore(f"sqlite:///{tmp / 'fw.db'}")
    store.write_traces(to_trace_records(intent + urgency))
    opts = FlywheelOptions(
        min_examples=30,
        target_accuracy=0.8,  # 27 answers, all right, for its 95% lower bound over 20 coverage levels
        specialists_dir=str(tmp / "specialists"),
        promote_mode="on",
        progress=False,
        kinds=["classifier"],
        specialist_params={"classifier": {"epochs": 4}},
    )
    return store, run_flywheel(store, opts), tmp


def test_a_small_validation_set_is_refused_with_the_reason_in_the_report(small_run: Any) -> None:
    store, run, tmp = small_run
    by_size = sorted(run.clusters, key=lambda c: c.size)
    small, large = by_size[0], by_size[-1]
    n = small.n_validation + small.n_test
    assert n < 27 and small.status == "not_promoted"
    (cand,) = small.candidates
    assert cand.reason == (
        f"too few answers: with {n} validation and test answers the 95% lower bound cannot reach 80% "
        "(it takes 27, all right)"
    )
    summary = latest_summary(store)
    assert summary is not None
    html, _ = write_report(summary, tmp / "report.html")
    assert "too few answers" in html.read_text()

    # the large task type is promoted, and its route carries its promise
    assert large.status == "promoted", [(c.reason, c.validation, c.test) for c in large.candidates]
    (route,) = RouteStore(store.engine).active()
    m = route.metrics
    assert m["confidence"] == 0.95 and m["target_accuracy"] == 0.8
    assert 0.8 <= m["kept_accuracy_lower"] < m["kept_accuracy"]
    assert m["kept_correct"] <= m["kept"] == round(m["coverage"] * m["n"])
