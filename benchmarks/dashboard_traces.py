"""The dashboard's trace list with many traces in the store: first page, deep page, search, overview.

    python benchmarks/dashboard_traces.py                      # 100,000 traces, SQLite file in a temp dir
    python benchmarks/dashboard_traces.py --rows 1000000
    python benchmarks/dashboard_traces.py --url postgresql+psycopg://postgres@127.0.0.1/test

Every page is fetched over real HTTP from the dashboard served on 127.0.0.1 (median of
``--repeat`` requests). Baseline, measured in the same run: the same deep page read with
``OFFSET`` (what a naive paginator does) against the keyset query the page uses.
Target: the trace list answers in under a second with 100,000 traces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from smallfleet.dashboard import create_dashboard
from smallfleet.gateway.server import uvicorn_config
from smallfleet.store import TraceRecord, TraceStore
from smallfleet.store.tables import traces

console = Console()


def make(i: int, now: float, span: float, rng: random.Random) -> TraceRecord:
    small = i % 3 == 0
    return TraceRecord(
        id=f"{i:012d}",
        created_at=now - span + span * i / args.rows,
        workload=f"agent-{i % 5}",
        model_requested="gpt-4o-mini",
        model_served="clf" if small else "gpt-4o-mini",
        route="specialist:classify" if small else ("escalated:low_confidence" if i % 11 == 0 else "direct"),
        escalation="low_confidence" if not small and i % 11 == 0 else None,
        request={
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You route support tickets."},
                {"role": "user", "content": f"Ticket {i}: my order has not arrived, please help."},
            ],
        },
        response={"choices": [{"index": 0, "message": {"role": "assistant", "content": "shipping"}}]},
        input_tokens=40 + i % 50,
        output_tokens=3,
        latency_ms=rng.lognormvariate(2 if small else 6, 0.5),
        cost_usd=0.0000001 if small else 0.0000081,
        status="ok" if i % 97 else "error",
    )


@contextlib.contextmanager
def serving(app: object) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 in a thread; yields the base URL.

    The socket is made with ``IPPROTO_TCP`` so that asyncio turns Nagle off on accepted
    connections (with a plain ``socket.socket()`` it does not, and every response then
    waits ~40 ms for the client's delayed ACK).
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(app, "127.0.0.1", port)
    config.loop = "asyncio"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def get(client: httpx.Client, url: str) -> Callable[[], object]:
    def run() -> object:
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
        return r

    return run


def main() -> None:
    tmp = tempfile.TemporaryDirectory()
    url = args.url or f"sqlite:///{Path(tmp.name) / 'traces.db'}"
    store = TraceStore(url)
    with store.engine.begin() as conn:
        n_before = conn.execute(sa.select(sa.func.count()).select_from(traces)).scalar_one()
    if n_before:
        raise SystemExit(f"{url} already holds {n_before} traces; use an empty store.")
    rng = random.Random(1)
    now = time.time()
    span = 30 * 86400.0  # a month of traffic
    with Progress(console=console) as progress:
        task = progress.add_task(f"writing {args.rows:,} traces", total=args.rows)
        for start in range(0, args.rows, 5000):
            batch = [make(i, now, span, rng) for i in range(start, min(start + 5000, args.rows))]
            store.write_traces(batch)
            progress.advance(task, len(batch))

    depth = int(args.rows * 0.9)
    order = (traces.c.created_at.desc(), traces.c.id.desc())
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(traces.c.created_at, traces.c.id).order_by(*order).offset(depth - 1)
        ).first()
    assert row is not None
    cursor = f"{row.created_at!r}:{row.id}"

    def offset_page() -> object:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(traces).order_by(*order).limit(51).offset(depth)).all()

    def keyset_page() -> object:
        return store.search_traces(cursor=(float(row.created_at), row.id), limit=51)

    app = create_dashboard(store)
    results: list[tuple[str, float, str]] = []
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        pages = [
            ("trace list, first page", "/ui/traces"),
            (f"trace list, page at row {depth:,} (keyset)", f"/ui/traces?after={cursor}"),
            ("trace list, workload filter", "/ui/traces?workload=agent-3"),
            ("trace list, route filter", "/ui/traces?route=specialist"),
            ("trace list, text search", "/ui/traces?q=Ticket%201"),
            ("trace detail", f"/ui/traces/{row.id}"),
        ]
        for name, path in pages:
            results.append((name, median_ms(get(client, path), args.repeat), "HTTP"))
        # The overview keeps finished time buckets in memory: its first view reads the whole range.
        for rng_name in ("24h", "30d"):
            t = time.perf_counter()
            get(client, f"/ui?range={rng_name}")()
            results.append((f"overview {rng_name}, first view", (time.perf_counter() - t) * 1000, "HTTP"))
            results.append(
                (
                    f"overview {rng_name}, again",
                    median_ms(get(client, f"/ui?range={rng_name}"), args.repeat),
                    "HTTP",
                )
            )
    results.append((f"SQL: page at row {depth:,} by keyset", median_ms(keyset_page, args.repeat), "SQL"))
    results.append(
        (f"SQL: page at row {depth:,} by OFFSET (baseline)", median_ms(offset_page, args.repeat), "SQL")
    )
    store.close()

    table = Table(title=f"dashboard with {args.rows:,} traces ({store.dialect}), median of {args.repeat}")
    table.add_column("what")
    table.add_column("via")
    table.add_column("ms", justify="right")
    for name, ms, via in results:
        table.add_row(name, via, f"{ms:,.1f}")
    console.print(table)
    by = {name: ms for name, ms, _ in results}
    keyset = by[f"SQL: page at row {depth:,} by keyset"]
    offset = by[f"SQL: page at row {depth:,} by OFFSET (baseline)"]
    console.print(f"deep page: OFFSET / keyset = {offset / keyset:,.1f}x")
    worst = max(by["trace list, first page"], by[f"trace list, page at row {depth:,} (keyset)"])
    console.print(
        f"trace list under a second: {'yes' if worst < 1000 else 'NO'} (slowest page {worst:,.1f} ms)"
    )
    tmp.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--url", help="an empty store (default: a SQLite file in a temp dir)")
    args = parser.parse_args()
    main()
