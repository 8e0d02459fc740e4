"""The dashboard's reads: every figure aggregated in the database (GROUP BY on bucketed time).

Latency percentiles per time bucket come from a latency histogram computed in
SQL (geometric bins 12% wide, chosen by a balanced CASE tree, so about six
comparisons a row), then read off in Python: the same code on SQLite, which
has no percentile function, and on PostgreSQL. A 30-day window of a million
traces is one scan returning at most a few thousand rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from smallfleet.errors import UserError
from smallfleet.store.fleet_tables import clusters, flywheel_runs, route_checks
from smallfleet.store.tables import traces

__all__ = [
    "RANGES",
    "Overview",
    "Rollup",
    "agreement_series",
    "latest_clusters",
    "overview",
    "parse_range",
    "small_route",
]

#: Time ranges of the selector: name → seconds (None: everything).
RANGES: dict[str, float | None] = {
    "1h": 3600.0,
    "24h": 86400.0,
    "7d": 7 * 86400.0,
    "30d": 30 * 86400.0,
    "all": None,
}

_MINUTE, _HOUR, _DAY = 60.0, 3600.0, 86400.0
#: Latency bins: upper bounds in ms, 0.1 ms to ~20 minutes, each 12% above the last.
_RATIO = 1.12
LATENCY_BOUNDS: tuple[float, ...] = tuple(0.1 * _RATIO**k for k in range(146))


def parse_range(name: str | None) -> tuple[str, float | None]:
    """``"24h"`` → ("24h", 86400.0); an unknown name is a UserError listing the choices."""
    name = (name or "24h").strip()
    if name not in RANGES:
        raise UserError(f"Unknown time range {name!r}; choose one of: {', '.join(RANGES)}.")
    return name, RANGES[name]


def small_route(route: str | None) -> bool:
    """A trace served by a small model (a specialist) rather than the large one."""
    return bool(route) and str(route).startswith("specialist:")


def _bucket_seconds(span: float) -> float:
    """Bucket width giving at most 60 points over ``span`` seconds (1h: minutes, 24h: hours, 30d: days)."""
    for width in (_MINUTE, 5 * _MINUTE, 15 * _MINUTE, _HOUR, 3 * _HOUR, 6 * _HOUR, _DAY, 7 * _DAY):
        if span / width <= 60:
            return width
    return 30 * _DAY


def _bucket_expr(dialect: str, width: float) -> sa.ColumnElement[Any]:
    scaled = traces.c.created_at / width
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(scaled), sa.BigInteger)
    return sa.cast(scaled, sa.Integer)  # SQLite's CAST truncates; created_at is positive


def _bin_expr(col: sa.ColumnElement[Any], lo: int = 0, hi: int = len(LATENCY_BOUNDS)) -> Any:
    """Index of the first bound ≥ col (len(bounds) when above all), as a balanced CASE tree."""
    if lo >= hi:
        return sa.literal(lo)
    mid = (lo + hi) // 2
    return sa.case((col <= LATENCY_BOUNDS[mid], _bin_expr(col, lo, mid)), else_=_bin_expr(col, mid + 1, hi))


def _hist_quantile(hist: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile of a binned latency histogram (geometric midpoint of the bin)."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            if b >= len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]
            upper = LATENCY_BOUNDS[b]
            return upper / math.sqrt(_RATIO) if b else upper / 2
    return None


@dataclass
class Series:
    """One size class (``large`` or ``small``) over the time buckets."""

    calls: list[int]
    tokens: list[int]
    cost: list[float]
    p50: list[float | None]
    p95: list[float | None]


@dataclass
class Overview:
    range: str
    since: float | None
    bucket_s: float
    buckets: list[float]
    series: dict[str, Series]
    totals: dict[str, Any]
    escalations: list[dict[str, Any]]
    by_route: list[dict[str, Any]] = field(default_factory=list)


class Rollup:
    """The overview's aggregates, with finished time buckets kept in memory for ``ttl`` seconds.

    A finished bucket no longer changes (traces are stamped when they are recorded),
    so a page reload reads only the current bucket from the database; the first view
    of a range reads the whole range once. Traces imported with old timestamps show
    up within ``ttl``.
    """

    def __init__(self, engine: sa.Engine, ttl: float = 600.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._ln: bool | None = None
        # bucket width → (made at, first bucket covered, first bucket not covered, rows)
        self._done: dict[float, tuple[float, int, int, list[tuple[Any, ...]]]] = {}

    def _has_ln(self, conn: sa.Connection) -> bool:
        if self._ln is None:
            try:
                conn.execute(sa.select(sa.func.ln(2.0))).scalar()
                self._ln = True
            except sa.exc.OperationalError:  # SQLite built without its math functions
                conn.rollback()
                self._ln = False
        return self._ln

    def _bin(self, conn: sa.Connection) -> sa.ColumnElement[Any]:
        col = traces.c.latency_ms
        if not self._has_ln(conn):
            return _bin_expr(col)
        scaled = sa.func.ln(col / LATENCY_BOUNDS[0]) / math.log(_RATIO)
        idx = sa.func.floor(scaled) if self.engine.dialect.name == "postgresql" else scaled
        return sa.case((col <= LATENCY_BOUNDS[0], 0), else_=sa.cast(idx, sa.Integer) + 1)

    def _scan(self, conn: sa.Connection, width: float, lo: int, hi: int | None) -> list[tuple[Any, ...]]:
        """Rows (bucket, route, escalation, latency bin, calls, tokens, cost, errors, no latency).

        For buckets ``lo`` to ``hi - 1`` (``hi`` None: to the end).
        """
        bucket = _bucket_expr(self.engine.dialect.name, width)
        where = [traces.c.created_at >= lo * width]
        if hi is not None:
            where.append(traces.c.created_at < hi * width)
        q = (
            sa.select(
                bucket,
                traces.c.route,
                traces.c.escalation,
                self._bin(conn),
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(traces.c.input_tokens + traces.c.output_tokens), 0),
                sa.func.coalesce(sa.func.sum(traces.c.cost_usd), 0.0),
                sa.func.sum(sa.case((traces.c.status != "ok", 1), else_=0)),
                sa.func.sum(sa.case((traces.c.latency_ms.is_(None), 1), else_=0)),
            )
            .where(*where)
            .group_by(sa.text("1"), sa.text("2"), sa.text("3"), sa.text("4"))  # by position: binds once
        )
        return [tuple(r) for r in conn.execute(q)]

    def rows(self, conn: sa.Connection, width: float, first: int, now: float) -> list[tuple[Any, ...]]:
        """Aggregate rows from bucket ``first`` on: finished buckets from memory, the current one read."""
        current = math.floor(now / width)
        made, lo, hi, done = self._done.get(width, (0.0, 0, 0, []))
        if now - made > self.ttl or lo > first or hi > current:
            made, lo, hi, done = now, first, first, []
        if hi < current:  # buckets finished since: read them once
            done = done + self._scan(conn, width, hi, current)
            hi = current
        self._done[width] = (made, lo, hi, done)
        fresh = self._scan(conn, width, current, None)
        return [r for r in done if int(r[0]) >= first] + fresh


def overview(
    engine: sa.Engine,
    range_name: str | None = "24h",
    *,
    now: float | None = None,
    rollup: Rollup | None = None,
) -> Overview:
    """Calls, tokens, cost and latency p50/p95 per time bucket, split large/small; escalations by reason.

    A range covers whole buckets: "24h" starts at the top of the hour 24 hours ago.
    """
    name, span = parse_range(range_name)
    now = time.time() if now is None else now
    rollup = rollup or Rollup(engine)
    with engine.connect() as conn:
        if span is None:
            oldest = conn.execute(sa.select(sa.func.min(traces.c.created_at))).scalar()
            start = float(oldest) if oldest is not None else now - _DAY
        else:
            start = now - span
        width = _bucket_seconds(max(now - start, _MINUTE))
        first_b = math.floor(start / width)
        rows = rollup.rows(conn, width, first_b, now)

    last_b = math.floor(now / width)
    for r in rows:  # traces stamped after "now" (clock skew) still show
        last_b = max(last_b, int(r[0]))
    n = last_b - first_b + 1
    acc = {
        s: {"calls": [0] * n, "tokens": [0] * n, "cost": [0.0] * n, "hist": [{} for _ in range(n)]}
        for s in ("large", "small")
    }
    errors = 0
    esc: dict[str, int] = {}
    routes: dict[str, int] = {}
    for bucket, route, escalation, lbin, calls, tokens, cost, errs, no_latency in rows:
        if int(bucket) < first_b:
            continue
        a, i = acc["small" if small_route(route) else "large"], int(bucket) - first_b
        calls = int(calls)
        a["calls"][i] += calls
        a["tokens"][i] += int(tokens or 0)
        a["cost"][i] += float(cost or 0.0)
        errors += int(errs or 0)
        routes[route or ""] = routes.get(route or "", 0) + calls
        if escalation is not None:
            esc[escalation] = esc.get(escalation, 0) + calls
        measured = calls - int(no_latency or 0)
        if measured and lbin is not None:
            h = a["hist"][i]
            b = min(int(lbin), len(LATENCY_BOUNDS))
            h[b] = h.get(b, 0) + measured
    series: dict[str, Series] = {}
    all_hist: dict[int, int] = {}
    for s, a in acc.items():
        series[s] = Series(
            calls=a["calls"],
            tokens=a["tokens"],
            cost=a["cost"],
            p50=[_hist_quantile(h, 0.5) for h in a["hist"]],
            p95=[_hist_quantile(h, 0.95) for h in a["hist"]],
        )
        for h in a["hist"]:
            for k, v in h.items():
                all_hist[k] = all_hist.get(k, 0) + v
    calls = sum(sum(s.calls) for s in series.values())
    small = sum(series["small"].calls)
    escalated = sum(esc.values())
    totals = {
        "calls": calls,
        "small_calls": small,
        "share_small": (small / calls) if calls else None,
        "tokens": sum(sum(s.tokens) for s in series.values()),
        "cost_usd": sum(sum(s.cost) for s in series.values()),
        "errors": errors,
        "error_rate": (errors / calls) if calls else None,
        "escalated": escalated,
        "escalation_rate": (escalated / calls) if calls else None,
        "p50_ms": _hist_quantile(all_hist, 0.5),
        "p95_ms": _hist_quantile(all_hist, 0.95),
    }
    escalations = [
        {"reason": k, "calls": v, "rate": v / calls if calls else 0.0}
        for k, v in sorted(esc.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    by_route = [{"route": k, "calls": v} for k, v in sorted(routes.items(), key=lambda kv: (-kv[1], kv[0]))]
    return Overview(
        range=name,
        since=first_b * width,
        bucket_s=width,
        buckets=[b * width for b in range(first_b, last_b + 1)],
        series=series,
        totals=totals,
        escalations=escalations,
        by_route=by_route[:20],
    )


def latest_clusters(engine: sa.Engine) -> list[dict[str, Any]]:
    """For each workload (None: a run over all workloads), its newest finished run and that run's clusters."""
    with engine.connect() as conn:
        runs = conn.execute(
            sa.select(flywheel_runs.c.id, flywheel_runs.c.workload, flywheel_runs.c.finished_at)
            .where(flywheel_runs.c.status == "done")
            .order_by(flywheel_runs.c.finished_at.desc())
        ).all()
        latest: dict[str | None, Any] = {}
        for r in runs:
            latest.setdefault(r.workload, r)
        out = []
        for wl, run in latest.items():
            rows = conn.execute(
                sa.select(clusters).where(clusters.c.run_id == run.id).order_by(clusters.c.size.desc())
            ).all()
            out.append(
                {
                    "workload": wl,
                    "run_id": run.id,
                    "finished_at": run.finished_at,
                    "clusters": [dict(c._mapping) for c in rows],
                }
            )
    out.sort(key=lambda w: str(w["workload"] or ""))
    return out


def agreement_series(
    engine: sa.Engine, since: float | None = None, *, now: float | None = None
) -> tuple[list[float], dict[str, list[float | None]]]:
    """Agreement rate of each route's shadow/guard checks per time bucket: (bucket starts, route → rates)."""
    now = time.time() if now is None else now
    with engine.connect() as conn:
        if since is None:
            first = conn.execute(sa.select(sa.func.min(route_checks.c.at))).scalar()
            since = float(first) if first is not None else now - _DAY
        width = _bucket_seconds(max(now - since, _MINUTE))
        scaled = route_checks.c.at / width
        bucket = (
            sa.cast(sa.func.floor(scaled), sa.BigInteger)
            if engine.dialect.name == "postgresql"
            else sa.cast(scaled, sa.Integer)
        ).label("bucket")
        rows = conn.execute(
            sa.select(
                route_checks.c.route,
                bucket,
                sa.func.count().label("n"),
                sa.func.sum(sa.case((route_checks.c.agree.is_(True), 1), else_=0)).label("agree"),
            )
            .where(route_checks.c.at >= since)
            .group_by(sa.text("1"), sa.text("2"))
        ).all()
    if not rows:
        return [], {}
    lo = min(int(r.bucket) for r in rows)
    hi = max(int(r.bucket) for r in rows)
    idx = {b: i for i, b in enumerate(range(lo, hi + 1))}
    out: dict[str, list[float | None]] = {}
    for r in rows:
        s = out.setdefault(r.route, [None] * len(idx))
        s[idx[int(r.bucket)]] = int(r.agree or 0) / int(r.n)
    return [b * width for b in range(lo, hi + 1)], dict(sorted(out.items()))
