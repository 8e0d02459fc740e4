"""``smallfleet demo``: the whole loop on one CPU, offline, in minutes.

1. a simulated week of a support-desk agent's calls to a large model is written into a
   fresh SQLite store (redacted and priced, as the gateway would have recorded it), dated
   so that the replay of step 3 ends now: the week ends where the replay begins (the
   flywheel's run time between them);
2. the flywheel curates, clusters, trains and evaluates specialists, and promotes
   the ones that meet the target with mode ``on``;
3. the newest held-out traffic is replayed through the router in-process: requests a
   specialist serves are answered by it, live; requests that stay on the large model are
   answered from the recording (there is no large model here, and the demo says so);
   each replayed call is stored as a trace (dated in the day after the week, ending now),
   with the route that served it, and each answer served small as a guard check of its
   route (agreement with the large model's recorded answer), so ``smallfleet stats --since 24h``,
   ``smallfleet routes list`` and the dashboard's default view show the replay;
4. the report is written, with the replay's figures beside the flywheel's projection, and
   the before/after figures are printed.

Dating moves every call by the same number of seconds, so the order of the calls, and with
it every split, route and figure, is what it would be on the workload's own dates (a call's
text still mentions the dates of the simulated week).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEMO_SPECIALIST_PARAMS", "DemoResult", "run_demo"]

#: Training budgets that keep the demo to minutes on 2 CPU cores (the span models dominate).
#: Each cluster has one fixed tool set or schema, so every argument / field of a request is
#: answered in one encoder pass (``pack=None``): several times cheaper to train and serve.
#: The span models learn from the newest 400 examples of a task type; the classifier, whose
#: training costs little (only its top layer and head are trained), from all of them. The
#: tool callers train their top two encoder layers, not three: measured on the demo's four
#: tool tasks (2026-12-01), as accurate or more (issue_refund 91.8% -> 97.5% exact) and
#: 10 s faster each; the extractor keeps three (98.2% vs 96.5% with two).
DEMO_SPECIALIST_PARAMS: dict[str, dict[str, Any]] = {
    "tool_caller": {"max_steps": 150, "pack": None, "max_train": 400, "train_layers": 2},
    "extractor": {"max_steps": 150, "pack": None, "max_train": 400},
}


@dataclass
class DemoResult:
    workdir: str
    calls: int
    replayed: int
    served_small: int
    agreement: float | None
    cost_before_usd: float
    cost_after_usd: float
    latency_p50_before_ms: float
    latency_p50_after_ms: float
    routes: list[dict[str, Any]]
    report: str
    by_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    escalations: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: (task type, why) for each task type the flywheel did not promote
    not_promoted: list[tuple[str, str]] = field(default_factory=list)
    #: what to do when nothing was promoted (None when something was)
    hint: str | None = None

    @property
    def share_small(self) -> float:
        return self.served_small / self.replayed if self.replayed else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share_small": self.share_small}


def _redact(records: list[Any]) -> None:
    from smallfleet.config import RedactionConfig
    from smallfleet.store.redact import Redactor

    redactor = Redactor(RedactionConfig())
    for rec in records:
        rec.request, rec.response = redactor.redact_trace(rec.request, rec.response)


def run_demo(
    workdir: str | Path = "smallfleet-demo",
    calls: int = 10_000,
    seed: int = 0,
    target_accuracy: float = 0.95,
    min_examples: int | None = None,
    confidence: float = 0.5,
    usd_per_hour: float = 0.10,
    progress: bool = True,
    max_train: int = 1500,
    specialist_params: dict[str, dict[str, Any]] | None = None,
) -> DemoResult:
    from rich.console import Console

    from smallfleet.demo.workload import generate_workload, to_trace_records
    from smallfleet.flywheel.pipeline import FlywheelOptions, run_flywheel
    from smallfleet.report.html import write_report
    from smallfleet.routing.router import Router
    from smallfleet.routing.routes import RouteStore
    from smallfleet.store.trace_store import TraceStore
    from smallfleet.types import ChatRequest, ChatResponse

    console = Console(quiet=not progress)
    t_start = time.perf_counter()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    db = work / "smallfleet.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = TraceStore(f"sqlite:///{db}")

    console.print(
        f"[bold]1/4[/] Simulating a week of a support-desk agent: {calls:,} calls to the large model"
    )
    workload = generate_workload(calls, seed=seed)
    records = to_trace_records(workload)
    _redact(records)
    replay_span, dated_at = _date_to_now(records), time.time()
    for i in range(0, len(records), 2000):
        store.write_traces(records[i : i + 2000])

    console.print(
        "[bold]2/4[/] Running the flywheel: curate, cluster, train, evaluate, promote "
        f"(routes promised at {target_accuracy:.0%} with {confidence:.0%} confidence)"
    )
    opts = FlywheelOptions(
        target_accuracy=target_accuracy,
        min_examples=min_examples if min_examples is not None else max(30, calls // 100),
        confidence=confidence,
        promote_mode="on",
        specialists_dir=str(work / "specialists"),
        usd_per_hour=usd_per_hour,
        progress=progress,
        max_train=max_train,
        specialist_params=DEMO_SPECIALIST_PARAMS if specialist_params is None else specialist_params,
    )
    run = run_flywheel(store, opts)

    console.print("[bold]3/4[/] Replaying the newest held-out traffic through the router")
    import torch

    from smallfleet.encoders import clear_embedding_cache

    # the flywheel embedded these requests when it curated them; a live request arrives
    # unseen, so the replay starts with an empty embedding cache (honest latencies)
    clear_embedding_cache()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one request at a time: one thread is fastest for a 22M-parameter encoder
    router = Router.from_store(RouteStore(store.engine))
    held_out = sorted(records, key=lambda r: r.created_at)[-max(1, int(len(records) * 0.15)) :]
    # the replay follows the week by the time training took: it ends now, as it runs
    replay = _Replay(replay_span + (time.time() - dated_at))
    truth = {c.id: c for c in workload}
    lat_before, lat_after = [], []
    cost_before = cost_after = 0.0
    served = agreed = 0
    escalations: dict[str, int] = {}
    by_task: dict[str, dict[str, Any]] = {}
    for rec in held_out:
        if rec.request is None or rec.response is None:
            continue
        request = ChatRequest.model_validate(rec.request)
        large = ChatResponse.model_validate(rec.response)
        task = truth[rec.id].task_type if rec.id in truth else "unknown"
        stats = by_task.setdefault(task, {"calls": 0, "small": 0, "agree": 0})
        stats["calls"] += 1
        t0 = time.perf_counter()
        decision = router.decide(request, rec.workload)
        took_ms = (time.perf_counter() - t0) * 1000
        lat_before.append(rec.latency_ms or 0.0)
        cost_before += rec.cost_usd or 0.0
        if decision.action == "small" and decision.response is not None:
            served += 1
            stats["small"] += 1
            ok = router.agree(request, decision.response, large)
            agreed += ok
            stats["agree"] += ok
            lat_after.append(took_ms)
            cost_after += took_ms / 3_600_000 * usd_per_hour
            replay.served(rec, decision, took_ms, took_ms / 3_600_000 * usd_per_hour, bool(ok))
        else:
            key = (decision.reason or "not routable").split(":")[0]
            escalations[key] = escalations.get(key, 0) + 1
            lat_after.append((rec.latency_ms or 0.0) + took_ms)  # the recorded large-model answer
            cost_after += rec.cost_usd or 0.0
            replay.escalated(rec, decision, took_ms)

    torch.set_num_threads(threads)
    replay.store(store)
    console.print("[bold]4/4[/] Writing the report")
    from smallfleet.report.outcomes import not_promoted_reasons, nothing_promoted_hint

    summary = run.to_dict()
    result = DemoResult(
        workdir=str(work),
        calls=len(records),
        replayed=len(lat_before),
        served_small=served,
        agreement=(agreed / served) if served else None,
        cost_before_usd=cost_before,
        cost_after_usd=cost_after,
        latency_p50_before_ms=float(statistics.median(lat_before)) if lat_before else 0.0,
        latency_p50_after_ms=float(statistics.median(lat_after)) if lat_after else 0.0,
        routes=[
            {"name": r.name, "kind": r.kind, "mode": r.mode, "threshold": r.threshold} for r in router.routes
        ],
        report=str(work / "report.html"),
        by_task=by_task,
        escalations=escalations,
        not_promoted=not_promoted_reasons(summary),
        hint=nothing_promoted_hint(summary),
    )
    summary["replay"] = _replay_figures(result)
    _store_replay_figures(store, run.run_id, summary["replay"])  # `smallfleet report` shows them too
    write_report(summary, work / "report.html")
    result.seconds = time.perf_counter() - t_start
    (work / "demo.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _date_to_now(records: list[Any], held_out: float = 0.15) -> float:
    """Move every record by one whole number of seconds so that the week ends where the replay
    (its newest ``held_out`` share, replayed over the same span right after) would end now;
    returns that span, the shift from a held-out call to its replay (to which the replay adds
    the time the flywheel took)."""
    times = sorted(r.created_at for r in records)
    if not times:
        return 0.0
    first_held_out = times[-max(1, int(len(times) * held_out))]
    span = float(math.ceil(times[-1] - first_held_out) + 60)  # the replay starts a minute after the week
    shift = math.floor(time.time() - span - times[-1])
    for r in records:
        r.created_at = round(r.created_at + shift, 3)
    return span


class _Replay:
    """The replay's traces (as the gateway records them) and the guard checks of what was served small."""

    def __init__(self, shift: float) -> None:
        self.shift = shift
        self.traces: list[Any] = []
        self.checks: list[dict[str, Any]] = []

    def _trace(self, rec: Any, decision: Any, **fields: Any) -> Any:
        from smallfleet.store.records import TraceRecord, new_trace_id

        return TraceRecord(
            id=new_trace_id(),
            created_at=round(rec.created_at + self.shift, 3),
            workload=rec.workload,
            model_requested=rec.model_requested,
            route=decision.label,
            request=rec.request,
            tool_names=list(rec.tool_names),
            input_tokens=rec.input_tokens,
            confidence=decision.confidence,
            metadata={"demo": "replay", "replay_of": rec.id},
            **fields,
        )

    def served(self, rec: Any, decision: Any, took_ms: float, cost: float, agree: bool) -> None:
        response = decision.response.to_dict() if decision.response is not None else None
        usage = (response or {}).get("usage") or {}
        trace = self._trace(
            rec,
            decision,
            model_served=decision.route.name,
            response=response,
            output_tokens=int(usage.get("completion_tokens") or rec.output_tokens),
            latency_ms=took_ms,
            cost_usd=cost,
        )
        self.traces.append(trace)
        self.checks.append(
            {
                "route": decision.route.name,
                "version": decision.route.version,
                "trace_id": trace.id,
                "at": trace.created_at,
                "kind": "guard",
                "agree": agree,
                "confidence": decision.confidence,
            }
        )

    def escalated(self, rec: Any, decision: Any, took_ms: float) -> None:
        self.traces.append(
            self._trace(
                rec,
                decision,
                model_served=rec.model_served,
                response=rec.response,
                output_tokens=rec.output_tokens,
                latency_ms=(rec.latency_ms or 0.0) + took_ms,
                cost_usd=rec.cost_usd,
                escalation=decision.reason,
            )
        )

    def store(self, store: Any) -> None:
        from smallfleet.store.fleet_tables import route_checks

        for i in range(0, len(self.traces), 2000):
            store.write_traces(self.traces[i : i + 2000])
        if self.checks:
            with store.engine.begin() as conn:
                conn.execute(route_checks.insert(), self.checks)


def _replay_figures(r: DemoResult) -> dict[str, Any]:
    """The console's headline, for the report."""
    return {
        "calls": r.replayed,
        "served_small": r.served_small,
        "share_small": r.share_small,
        "agreement": r.agreement,
        "cost_before_usd": r.cost_before_usd,
        "cost_after_usd": r.cost_after_usd,
        "latency_p50_before_ms": r.latency_p50_before_ms,
        "latency_p50_after_ms": r.latency_p50_after_ms,
        "escalations": r.escalations,
    }


def _store_replay_figures(store: Any, run_id: str, figures: dict[str, Any]) -> None:
    import sqlalchemy as sa

    from smallfleet.store.fleet_tables import flywheel_runs

    with store.engine.begin() as conn:
        row = conn.execute(sa.select(flywheel_runs.c.summary).where(flywheel_runs.c.id == run_id)).first()
        if row is not None and row[0] is not None:
            summary = {**row[0], "replay": figures}
            conn.execute(sa.update(flywheel_runs).where(flywheel_runs.c.id == run_id).values(summary=summary))
