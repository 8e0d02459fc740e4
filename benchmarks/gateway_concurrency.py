"""Concurrent clients served small through the real gateway: batched against one by one.

For each specialist kind (a support-desk classifier; a packed extractor of name, city and
quantity, the setting the flywheel's fixed schemas use), a specialist is trained on
generated examples and promoted as a route keyed on its task type; then the real gateway
(uvicorn on 127.0.0.1, SQLite store, router on, guard off) is started twice, with
``routing.max_batch`` 1 (each request answered alone: the baseline, measured in the same
run) and 32 (concurrent requests to the specialist answered as one batch). ``--clients``
threads each send their share of ``--requests`` requests (worded unlike the training data)
back to back over keep-alive connections. Reported: requests per second, client-side
latency p50 / p99, the share served small, and the batches the specialist ran.

Clients and gateway share the machine's cores, as they would on a one-box deployment.

    python benchmarks/gateway_concurrency.py                 # --clients 32 --requests 1500
    python benchmarks/gateway_concurrency.py --kinds extractor --clients 8,32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

ALIAS = "gpt-4o-mini"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))] if s else float("nan")


def train(kind: str, n: int, out: Path) -> tuple[Any, list[Any]]:
    """The trained specialist's route and the test requests (unseen wordings)."""
    from smallfleet.routing.matcher import static_key
    from smallfleet.routing.routes import Route
    from specialists import DATASETS

    examples = DATASETS[kind](n, "train", 1)
    test = [ex.request for ex in DATASETS[kind](300, "test", 2)]
    if kind == "classifier":
        from smallfleet.specialists.classifier import Classifier

        spec: Any = Classifier(seed=0).fit(examples, DATASETS[kind](max(60, n // 5), "train", 3))
    else:
        from smallfleet.specialists.extractor import Extractor

        spec = Extractor(pack=None, seed=0).fit(examples)
    spec.save(out)
    keys = sorted({static_key(r) for r in test})
    route = Route(
        name=f"bench-{kind}",
        kind=kind,
        specialist_path=str(out),
        threshold=0.0,
        mode="on",
        labels=list(getattr(spec, "labels", None) or []) or None,
        matcher={"version": 1, "keys": keys},
    )
    return route, test


def serve(
    route: Any, requests: list[Any], max_batch: int, clients: int, n: int, work: Path
) -> dict[str, Any]:
    import httpx

    from smallfleet.config import load_settings
    from smallfleet.gateway.app import create_app
    from smallfleet.gateway.server import BackgroundServer
    from smallfleet.routing.routes import RouteStore
    from smallfleet.store.trace_store import TraceStore
    from smallfleet.testing import Reply, ScriptedUpstream

    db = f"sqlite:///{work / f'traces-{route.kind}-{max_batch}-{clients}.db'}"
    store = TraceStore(db)
    RouteStore(store.engine).promote(route, actor="bench")
    bodies = [{"model": ALIAS, **{k: v for k, v in r.to_dict().items() if k != "model"}} for r in requests]
    with ScriptedUpstream() as up:
        up.set_responder(lambda body: Reply.text("large model"))
        model = {"backend": "openai", "base_url": up.url, "max_retries": 0, "read_timeout": 60.0}
        settings = load_settings(
            env={},
            overrides={
                "models": {ALIAS: model},
                "store": {"url": db},
                "routing": {"enabled": True, "guard_fraction": 0.0, "max_batch": max_batch},
            },
        )
        app = create_app(settings, store=store)
        server = BackgroundServer(app).start()
        url = server.url + "/chat/completions"
        lat: list[float] = []
        routes: list[str] = []
        lock = threading.Lock()
        try:
            with httpx.Client(timeout=60) as c:  # warm: the specialist loads, the encoder runs once
                for body in bodies[:3]:
                    c.post(url, json=body).raise_for_status()
            batcher_before = _batcher_counts(app, route)
            start = threading.Barrier(clients + 1)

            def client(k: int) -> None:
                mine = [bodies[i % len(bodies)] for i in range(k, n, clients)]
                out_lat, out_routes = [], []
                with httpx.Client(timeout=60) as c:
                    start.wait()
                    for body in mine:
                        t0 = time.perf_counter()
                        r = c.post(url, json=body)
                        out_lat.append((time.perf_counter() - t0) * 1000)
                        r.raise_for_status()
                        out_routes.append(r.headers.get("x-smallfleet-route", ""))
                with lock:
                    lat.extend(out_lat)
                    routes.extend(out_routes)

            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            start.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            batches, served = (
                a - b for a, b in zip(_batcher_counts(app, route), batcher_before, strict=True)
            )
            app.recorder.flush(30)
        finally:
            server.stop()
            store.close()
    return {
        "max_batch": max_batch,
        "clients": clients,
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "served_small": sum(r.startswith("specialist:") for r in routes) / max(1, len(routes)),
        "batches": batches,
        "mean_batch": served / batches if batches else 1.0,
        "load_average": os.getloadavg()[0],
    }


def _batcher_counts(app: Any, route: Any) -> tuple[int, int]:
    batcher = app.router.router._batchers.get(route.specialist_path)
    return (batcher.batches, batcher.requests) if batcher is not None else (0, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="classifier,extractor")
    ap.add_argument("--train", type=int, default=1000, help="training examples per kind")
    ap.add_argument("--clients", default="32", help="concurrent clients, comma-separated for several runs")
    ap.add_argument("--requests", type=int, default=1500, help="requests per run")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]gateway concurrency[/] — {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console, transient=True) as progress:
        work = Path(tmp)
        kinds = args.kinds.split(",")
        clients = [int(c) for c in args.clients.split(",")]
        task = progress.add_task("runs", total=len(kinds) * (1 + 2 * len(clients)))
        for kind in kinds:
            progress.update(task, description=f"training {kind}")
            route, test = train(kind, args.train, work / kind)
            progress.advance(task)
            for c in clients:
                for mb in (1, 32):
                    progress.update(task, description=f"{kind}: {c} clients, max_batch {mb}")
                    results.append({"kind": kind, **serve(route, test, mb, c, args.requests, work)})
                    progress.advance(task)
    table = Table(title=f"served small through the gateway, {args.requests} requests a run")
    for col in ("kind", "clients", "max_batch", "req/s", "p50 / p99 ms", "served small", "mean batch"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r["kind"],
            str(r["clients"]),
            str(r["max_batch"]),
            f"{r['rps']:.0f}",
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
            f"{r['served_small']:.0%}",
            f"{r['mean_batch']:.1f}",
        )
    console.print(table)
    for r in results:
        if r["max_batch"] == 1:
            b = next(
                x
                for x in results
                if (x["kind"], x["clients"], x["max_batch"]) == (r["kind"], r["clients"], 32)
            )
            console.print(
                f"{r['kind']}, {r['clients']} clients: batched {b['rps'] / r['rps']:.2f}x the requests/s "
                f"of one by one, p50 {b['p50_ms'] / r['p50_ms']:.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
