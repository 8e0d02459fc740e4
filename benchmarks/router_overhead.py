"""What the router costs, and what serving small saves.

Part 1, the decision (in this process, no HTTP): a support-desk intent classifier is
trained (or loaded with ``--specialist DIR``) and promoted as a route; for held-out
requests (wordings the classifier never saw) the router's :meth:`Router.decide` is timed,
split as it reports itself:

- *match*: recognising the task type, by static key (the common case) and, with the
  keys removed, by the flywheel's cluster matcher (embedding the request's signature);
- *validate*: checking the answer (label set; and a tool call against its JSON schema);
- *specialist*: the classifier's inference, reported apart (it is the small model's answer,
  not routing overhead).

The baseline measured in the same run is the large model's latency (part 2), so the
decision time is also shown as a share of one large-model call. Target: match + validate
under 5 ms at the median.

Part 2, end to end through the real gateway (uvicorn on 127.0.0.1, SQLite store, router
on): a :class:`ScriptedUpstream` answers like a large model after ``--delay`` seconds;
the same requests are sent to an alias the router serves (answered small when confident)
and to an alias it does not (always the large model). Client-side latency p50/p99, the
share served small, and the cost recorded in the traces (the large model at ``--price-in``
/ ``--price-out`` USD per 1M tokens, small answers at ``--usd-per-hour`` of this machine).

Run:  python benchmarks/router_overhead.py [--decisions 300] [--requests 40] [--delay 0.8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

LARGE_ALIAS = "gpt-4o"  # routable
DIRECT_ALIAS = "gpt-4o-direct"  # the same upstream, never routed


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def p50_p99(values: list[float]) -> str:
    return f"{pct(values, 50):.3f} / {pct(values, 99):.3f}"


# ---------------------------------------------------------------- the specialist


def train_specialist(out: Path, n_train: int) -> Path:
    from smallfleet.specialists.classifier import Classifier
    from smallfleet.testing.intents import support_desk_examples

    train = support_desk_examples(n_train, split="train", seed=1)
    validation = support_desk_examples(max(60, n_train // 5), split="train", seed=2)
    Classifier(seed=0).fit(train, validation).save(out)
    return out


def triage_route(spec_dir: Path, threshold: float, matcher: dict[str, Any]) -> Any:
    from smallfleet.routing.routes import Route
    from smallfleet.specialists.base import SpecialistMeta

    meta = SpecialistMeta.read(spec_dir)
    return Route(
        name="triage",
        kind="classifier",
        specialist_path=str(spec_dir),
        threshold=threshold,
        mode="on",
        labels=list(meta.labels or []),
        matcher=matcher,
    )


# ---------------------------------------------------------------- part 1: the decision


def cluster_matcher(n: int) -> dict[str, Any]:
    """The triage cluster's matcher dict, from the flywheel's clustering of ``n`` calls."""
    from smallfleet.flywheel.cluster import cluster_records
    from smallfleet.routing.matcher import build_matchers
    from smallfleet.store.records import TraceRecord
    from smallfleet.testing.intents import support_desk_examples

    records = [
        TraceRecord(request=ex.request.to_dict(), response=ex.response.to_dict())
        for ex in support_desk_examples(n, split="train", seed=3)
    ]
    clustering = cluster_records(records)
    built = build_matchers([r.request for r in records], clustering)
    label = max(built, key=lambda k: sum(1 for x in clustering.labels if x == k))
    return {"version": 1, "keys": [], "cluster": built[label]["cluster"]}


def time_decisions(router: Any, requests: list[Any], progress: Any, title: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"match": [], "validate": [], "specialist": [], "decide": []}
    outcomes: dict[str, int] = {}
    router.decide(requests[0])  # loads the specialist
    task = progress.add_task(title, total=len(requests))
    for req in requests:
        t0 = time.perf_counter()
        d = router.decide(req)
        out["decide"].append((time.perf_counter() - t0) * 1000)
        out["match"].append(d.match_ms)
        out["validate"].append(d.validate_ms)
        out["specialist"].append(d.specialist_ms)
        key = d.action if d.action == "small" else (d.reason or "direct").split(":")[0]
        outcomes[key] = outcomes.get(key, 0) + 1
        progress.advance(task)
    out["outcomes"] = outcomes  # type: ignore[assignment]
    return out


def time_tool_validation(n: int) -> list[float]:
    """check_response for a tool call against a 6-property schema (what a tool_caller route validates)."""
    from smallfleet.routing.validate import check_response
    from smallfleet.types import ChatRequest, ChatResponse

    tool = {
        "type": "function",
        "function": {
            "name": "create_ticket",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "priority": {"type": "string", "enum": ["low", "normal", "high"]},
                    "order_id": {"type": "string", "pattern": "^#[0-9]+$"},
                    "amount": {"type": "number", "minimum": 0},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "notify": {"type": "boolean"},
                },
                "required": ["title", "priority"],
            },
        },
    }
    req = ChatRequest.parse(
        {"model": "m", "messages": [{"role": "user", "content": "open a ticket"}], "tools": [tool]}
    )
    args = {"title": "refund", "priority": "high", "order_id": "#123", "amount": 12.5, "tags": ["a"]}
    resp = ChatResponse.of_tool_calls("m", [("create_ticket", args)])
    assert check_response(req, resp) is None
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        check_response(req, resp)
        times.append((time.perf_counter() - t0) * 1000)
    return times


# ---------------------------------------------------------------- part 2: end to end


def end_to_end(
    spec_dir: Path, threshold: float, requests: list[Any], args: argparse.Namespace, progress: Any, work: Path
) -> dict[str, Any]:
    from openai import OpenAI

    from smallfleet.config import load_settings
    from smallfleet.gateway.app import create_app
    from smallfleet.gateway.server import BackgroundServer
    from smallfleet.routing.matcher import static_key
    from smallfleet.routing.routes import RouteStore
    from smallfleet.store.trace_store import TraceStore
    from smallfleet.testing import Reply, ScriptedUpstream

    db = f"sqlite:///{work / 'traces.db'}"
    store = TraceStore(db)
    RouteStore(store.engine).promote(
        triage_route(spec_dir, threshold, {"version": 1, "keys": [static_key(requests[0])]}), actor="bench"
    )
    price = {"input": args.price_in, "output": args.price_out}
    out: dict[str, Any] = {}
    with ScriptedUpstream() as up:
        # a large model: ~120 prompt tokens, a one-word answer, after --delay seconds
        up.set_responder(lambda body: Reply.text("refund", prompt_tokens=120, delay=args.delay))
        model = {
            "backend": "openai",
            "base_url": up.url,
            "max_retries": 0,
            "read_timeout": 60.0,
            "price": price,
        }
        settings = load_settings(
            env={},
            overrides={
                "models": {LARGE_ALIAS: model, DIRECT_ALIAS: model},
                "store": {"url": db},
                "pricing": {"local_usd_per_hour": args.usd_per_hour},
                "routing": {"enabled": True, "aliases": [LARGE_ALIAS], "guard_fraction": 0.0},
            },
        )
        app = create_app(settings, store=store)
        server = BackgroundServer(app).start()
        client = OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)
        try:
            for alias in (LARGE_ALIAS, DIRECT_ALIAS):  # warm: connections, the specialist
                client.chat.completions.create(model=alias, messages=requests[0].to_dict()["messages"])
            for alias, name in ((LARGE_ALIAS, "routed"), (DIRECT_ALIAS, "large only")):
                lat, ids, routes = [], [], []
                task = progress.add_task(f"end to end: {name}", total=len(requests))
                for req in requests:
                    t0 = time.perf_counter()
                    raw = client.chat.completions.with_raw_response.create(
                        model=alias, messages=req.to_dict()["messages"]
                    )
                    raw.parse()
                    lat.append((time.perf_counter() - t0) * 1000)
                    ids.append(raw.headers["x-smallfleet-trace-id"])
                    routes.append(raw.headers["x-smallfleet-route"])
                    progress.advance(task)
                out[name] = {"latency_ms": lat, "ids": ids, "routes": routes}
            app.recorder.flush(30)
            for run in out.values():
                recs = [store.get_trace(i) for i in run["ids"]]
                run["cost"] = [r.cost_usd or 0.0 for r in recs if r is not None]
                run["small_latency"] = [
                    lat
                    for lat, r in zip(run["latency_ms"], run["routes"], strict=True)
                    if r.startswith("specialist:")
                ]
        finally:
            client.close()
            server.stop()
            store.close()
    return out


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=300, help="requests timed through Router.decide")
    parser.add_argument("--requests", type=int, default=40, help="requests per alias end to end")
    parser.add_argument("--delay", type=float, default=0.8, help="the large model's latency, seconds")
    parser.add_argument("--threshold", type=float, default=0.5, help="the route's confidence threshold")
    parser.add_argument("--train", type=int, default=300, help="training examples for the classifier")
    parser.add_argument("--specialist", type=Path, help="use this trained classifier folder instead")
    parser.add_argument("--no-cluster", action="store_true", help="skip the cluster-matcher timing")
    parser.add_argument("--price-in", type=float, default=2.5, help="large model USD per 1M input tokens")
    parser.add_argument("--price-out", type=float, default=10.0, help="large model USD per 1M output tokens")
    parser.add_argument("--usd-per-hour", type=float, default=0.10, help="what this machine costs per hour")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch intra-op threads for part 1 (0: torch's default)"
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from smallfleet.routing.matcher import static_key
    from smallfleet.routing.router import Router
    from smallfleet.testing.intents import support_desk_examples

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    console = Console()
    console.print(
        f"[bold]router overhead[/] — {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    requests = [ex.request for ex in support_desk_examples(args.decisions, split="test", seed=7)]
    key = {"version": 1, "keys": [static_key(requests[0])]}
    # Model work runs in a worker thread, as in the gateway (asyncio.to_thread). One intra-op thread
    # by default: single requests with 2 threads on a busy 2-core machine were 10-50x slower and erratic.
    pool = ThreadPoolExecutor(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec_dir = args.specialist
        if spec_dir is None:
            console.print(f"training a support-desk classifier on {args.train} examples")
            spec_dir = pool.submit(train_specialist, work / "triage", args.train).result()
        with Progress(console=console, transient=True) as progress:
            router = Router([triage_route(spec_dir, args.threshold, key)])
            by_key = pool.submit(time_decisions, router, requests, progress, "decide (key match)").result()
            by_cluster = None
            if not args.no_cluster:
                matcher = pool.submit(cluster_matcher, 200).result()
                router = Router([triage_route(spec_dir, args.threshold, matcher)])
                by_cluster = pool.submit(
                    time_decisions, router, requests, progress, "decide (cluster match)"
                ).result()
            tool_validate = time_tool_validation(args.decisions)
            e2e = end_to_end(spec_dir, args.threshold, requests[: args.requests], args, progress, work)
    pool.shutdown()

    large_ms = statistics.median(e2e["large only"]["latency_ms"])
    table = Table(title=f"router decision, ms (p50 / p99), {len(requests)} held-out requests")
    table.add_column("part")
    table.add_column("p50 / p99 ms")
    table.add_column("p50 as share of a large call")
    rows = [
        ("match by static key", by_key["match"]),
        ("validate (label)", by_key["validate"]),
        ("match + validate (key)", [a + b for a, b in zip(by_key["match"], by_key["validate"], strict=True)]),
    ]
    if by_cluster is not None:
        rows += [
            ("match by cluster (embedding)", by_cluster["match"]),
            (
                "match + validate (cluster)",
                [a + b for a, b in zip(by_cluster["match"], by_cluster["validate"], strict=True)],
            ),
        ]
    rows += [
        ("validate (tool call, 6-field schema)", tool_validate),
        ("specialist inference (reported apart)", [x for x in by_key["specialist"] if x > 0]),
        ("decide() wall, all included", by_key["decide"]),
    ]
    for name, values in rows:
        table.add_row(name, p50_p99(values), f"{pct(values, 50) / large_ms:.2%}")
    console.print(table)
    console.print(f"outcomes (key match): {by_key['outcomes']}")

    t2 = Table(
        title=f"end to end through the gateway, {args.requests} requests each, large model {args.delay}s"
    )
    for col in (
        "alias",
        "served small",
        "p50 / p99 ms",
        "small-served p50 ms",
        "mean cost USD",
        "cost vs large",
    ):
        t2.add_column(col)
    large_cost = statistics.mean(e2e["large only"]["cost"])
    for name, run in e2e.items():
        small = sum(1 for r in run["routes"] if r.startswith("specialist:"))
        cost = statistics.mean(run["cost"])
        t2.add_row(
            name,
            f"{small}/{len(run['routes'])}",
            f"{pct(run['latency_ms'], 50):.1f} / {pct(run['latency_ms'], 99):.1f}",
            f"{pct(run['small_latency'], 50):.1f}" if run["small_latency"] else "-",
            f"{cost:.3g}",
            f"{cost / large_cost:.3f}" if large_cost else "-",
        )
    console.print(t2)
    decision_p50 = pct([a + b for a, b in zip(by_key["match"], by_key["validate"], strict=True)], 50)
    verdict = "[green]met[/]" if decision_p50 < 5 else "[red]missed[/]"
    console.print(f"target: decision (match + validate) p50 < 5 ms — {decision_p50:.3f} ms, {verdict}")
    if args.out:
        figures = {
            "decide_key": {k: v for k, v in by_key.items()},
            "decide_cluster": by_cluster,
            "tool_validate_ms": tool_validate,
            "end_to_end": {k: {kk: vv for kk, vv in v.items() if kk != "ids"} for k, v in e2e.items()},
        }
        args.out.write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
