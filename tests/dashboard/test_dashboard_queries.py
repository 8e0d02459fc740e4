"""The dashboard's aggregates, in the database, on SQLite and on the local PostgreSQL."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashkit import seed_fleet

from smallfleet.dashboard.queries import Rollup, agreement_series, latest_clusters, overview, parse_range
from smallfleet.errors import UserError
from smallfleet.store import TraceRecord, TraceStore
from smallfleet.store.trace_store import percentile

NOW = 1_800_000_000.0  # a fixed "now", so buckets are known


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    url = (
        f"sqlite:///{tmp_path / 'q.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_schema_url")
    )
    s = TraceStore(url)
    yield s
    s.close()


def _traffic(n: int = 600) -> list[TraceRecord]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        small = i % 4 == 0
        out.append(
            TraceRecord(
                created_at=NOW - 1 - rng.uniform(0, 2 * 86400),  # two days back
                route="specialist:r1" if small else ("escalated:low_confidence" if i % 10 == 1 else "direct"),
                escalation="low_confidence" if i % 10 == 1 else None,
                latency_ms=rng.lognormvariate(2 if small else 6, 0.5),
                input_tokens=10,
                output_tokens=5,
                cost_usd=None if i % 50 == 0 else 0.001,
                status="error" if i % 25 == 3 else "ok",
            )
        )
    return out


def test_overview_matches_a_python_count(store: TraceStore) -> None:
    recs = _traffic()
    store.write_traces(recs)
    ov = overview(store.engine, "24h", now=NOW)
    start = math.floor((NOW - 86400) / 3600) * 3600  # whole hours
    assert ov.since == start
    window = [r for r in recs if r.created_at >= start]
    small = [r for r in window if r.route.startswith("specialist:")]
    t = ov.totals
    assert t["calls"] == len(window) and t["small_calls"] == len(small)
    assert t["share_small"] == pytest.approx(len(small) / len(window))
    assert t["tokens"] == 15 * len(window)
    assert t["cost_usd"] == pytest.approx(sum(r.cost_usd or 0 for r in window))
    assert t["errors"] == sum(r.status != "ok" for r in window)
    # hourly buckets over the day, each trace in exactly one
    assert ov.bucket_s == 3600.0 and len(ov.buckets) in (24, 25)
    assert sum(ov.series["large"].calls) + sum(ov.series["small"].calls) == len(window)
    for b, n in zip(ov.buckets, ov.series["small"].calls, strict=True):
        assert n == sum(1 for r in small if b <= r.created_at < b + ov.bucket_s)
    # percentiles from the SQL histogram: within one bin (12%) of the exact ones
    lat = sorted(r.latency_ms for r in window)
    assert t["p50_ms"] == pytest.approx(percentile(lat, 0.5), rel=0.12)
    assert t["p95_ms"] == pytest.approx(percentile(lat, 0.95), rel=0.12)
    assert (ov.escalations[0]["reason"], ov.escalations[0]["calls"]) == (
        "low_confidence",
        sum(1 for r in window if r.escalation),
    )
    # everything: the window starts at the first trace
    assert overview(store.engine, "all", now=NOW).totals["calls"] == len(recs)


def test_overview_of_an_empty_store(store: TraceStore) -> None:
    ov = overview(store.engine, "1h", now=NOW)
    assert ov.totals["calls"] == 0 and ov.totals["share_small"] is None and ov.totals["p50_ms"] is None
    assert len(ov.buckets) >= 60 and not ov.escalations


def test_fleet_reads(store: TraceStore) -> None:
    seed_fleet(store)
    [w] = latest_clusters(store.engine)
    assert w["workload"] == "triage" and [c["key"] for c in w["clusters"]] == [
        "triage-intent",
        "triage-other",
    ]
    x, series = agreement_series(store.engine)
    assert list(series) == ["triage-intent"] and len(x) == 1
    assert series["triage-intent"][0] == pytest.approx(32 / 40)


def test_parse_range() -> None:
    assert parse_range(None) == ("24h", 86400.0) and parse_range("all") == ("all", None)
    with pytest.raises(UserError, match="1h, 24h, 7d, 30d, all"):
        parse_range("1y")


def test_rollup_reads_finished_buckets_once(store: TraceStore) -> None:
    recs = _traffic(300)
    store.write_traces(recs)
    rollup = Rollup(store.engine, ttl=600)
    first = overview(store.engine, "7d", now=NOW, rollup=rollup)
    # a new call in the current bucket shows at once; one back-dated into a finished bucket waits for the ttl
    store.write_traces([TraceRecord(created_at=NOW - 1, route="specialist:r1", latency_ms=5.0)])
    store.write_traces([TraceRecord(created_at=NOW - 3 * 86400, route="direct", latency_ms=5.0)])
    again = overview(store.engine, "7d", now=NOW, rollup=rollup)
    assert again.totals["calls"] == first.totals["calls"] + 1
    assert again.totals["small_calls"] == first.totals["small_calls"] + 1
    fresh = overview(store.engine, "7d", now=NOW, rollup=Rollup(store.engine))
    assert fresh.totals["calls"] == first.totals["calls"] + 2
    # time moves on into the next bucket: the finished one is read once, nothing is counted twice
    later = overview(store.engine, "7d", now=NOW + 3 * 3600, rollup=rollup)
    assert later.totals["calls"] == overview(store.engine, "7d", now=NOW + 3 * 3600).totals["calls"]


def test_latency_bins_without_sql_ln(store: TraceStore) -> None:
    store.write_traces(_traffic(300))
    with_ln = overview(store.engine, "all", now=NOW)
    rollup = Rollup(store.engine)
    rollup._ln = False  # as on a SQLite built without math functions: the CASE tree
    without = overview(store.engine, "all", now=NOW, rollup=rollup)
    assert without.totals["p50_ms"] == pytest.approx(with_ln.totals["p50_ms"])
    assert without.series["large"].p95 == pytest.approx(with_ln.series["large"].p95)
