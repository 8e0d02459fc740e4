"""Trace store at scale: bulk writes, stats, keyset pages and redaction, each next to a baseline.

    python benchmarks/trace_store.py --rows 1000000            # SQLite file in a temp dir
    python benchmarks/trace_store.py --rows 200000 --url postgresql+psycopg://postgres@127.0.0.1/test

Baselines, measured in the same run:
- writes: ``write_traces`` in batches of 500 vs one transaction per trace (on 2,000 rows);
- stats: ``TraceStore.stats`` vs a single SQL statement that ranks every latency with window
  functions (the portable "percentiles in SQL" alternative);
- deep pages: keyset (``before_id``) vs ``OFFSET`` at the same depth;
- redaction: a typical trace redacted vs ``copy.deepcopy`` of it (the floor of any walk).
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.progress import track

from smallfleet.store import Redactor, TraceRecord, TraceStore
from smallfleet.store.tables import traces

console = Console()
T0 = 1_700_000_000.0


def make(i: int, rng: random.Random) -> TraceRecord:
    wl = f"agent-{i % 7}"
    return TraceRecord(
        id=f"{i:012d}",
        created_at=T0 + i * 0.05,
        workload=wl,
        model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini",
        route="direct" if i % 3 else "specialist:classify",
        request={
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You route support tickets."},
                {"role": "user", "content": f"Ticket {i}: my order has not arrived, please help."},
            ],
        },
        response={"choices": [{"message": {"role": "assistant", "content": "shipping"}}]},
        input_tokens=40 + i % 50,
        output_tokens=3,
        latency_ms=rng.lognormvariate(5, 0.6),
        cost_usd=0.0000081,
        status="ok" if i % 97 else "error",
    )


def timed(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def window_percentiles(store: TraceStore) -> list[tuple]:  # type: ignore[type-arg]
    sql = sa.text(
        """
        SELECT workload, MIN(CASE WHEN rn >= 0.5 * n THEN latency_ms END),
               MIN(CASE WHEN rn >= 0.95 * n THEN latency_ms END), MAX(n)
        FROM (SELECT workload, latency_ms,
                     ROW_NUMBER() OVER (PARTITION BY workload ORDER BY latency_ms) AS rn,
                     COUNT(*) OVER (PARTITION BY workload) AS n
              FROM traces WHERE latency_ms IS NOT NULL) AS ranked
        GROUP BY workload
        """
    )
    with store.engine.connect() as conn:
        return list(conn.execute(sql))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--url", default=None, help="Store URL (default: a SQLite file in a temp dir).")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sf-bench-")
    url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
    store = TraceStore(url)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(traces))
    rng = random.Random(0)
    console.print(f"[bold]trace store benchmark[/] {store} rows={args.rows:,}")

    # Writes: batched vs one transaction per trace, on the same 2,000 rows' shape.
    probe = [make(args.rows + i, rng) for i in range(2000)]
    t = time.perf_counter()
    for r in probe[:1000]:
        store.write_traces([r])
    single = 1000 / (time.perf_counter() - t)
    t = time.perf_counter()
    for k in range(1000, 2000, 500):
        store.write_traces(probe[k : k + 500])
    batched = 1000 / (time.perf_counter() - t)

    t = time.perf_counter()
    batch: list[TraceRecord] = []
    for i in track(range(args.rows), description="filling", console=console):
        batch.append(make(i, rng))
        if len(batch) == 5000:
            store.write_traces(batch)
            batch = []
    if batch:
        store.write_traces(batch)
    fill_rate = args.rows / (time.perf_counter() - t)

    stats_s = timed(lambda: store.stats(by="workload"), repeat=2)
    window_s = timed(lambda: window_percentiles(store), repeat=2)
    ours = {g["group"]: g for g in store.stats(by="workload")}
    for wl, _p50, _p95, n in window_percentiles(store):
        assert ours[wl]["calls"] >= n

    depth = max(0, args.rows - 100)
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(traces.c.id)
            .order_by(traces.c.created_at.desc(), traces.c.id.desc())
            .offset(depth)
            .limit(1)
        ).first()
    deep_id = row[0] if row else None
    keyset_s = timed(lambda: store.search_traces(limit=50, before_id=deep_id), repeat=5)

    def offset_page() -> None:
        q = sa.select(traces).order_by(traces.c.created_at.desc(), traces.c.id.desc()).offset(depth).limit(50)
        with store.engine.connect() as conn:
            list(conn.execute(q))

    offset_s = timed(offset_page, repeat=3)

    red = Redactor()
    sample = make(1, rng)
    sample.request["messages"][1]["content"] += " Reach me at jo@example.com or +44 20 7946 0958."  # type: ignore[index]
    n = 2000
    red_times, copy_times = [], []
    for _ in range(n):
        t = time.perf_counter()
        red.redact_record(sample)
        red_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        copy.deepcopy(sample)
        copy_times.append(time.perf_counter() - t)
    red_us, copy_us = statistics.median(red_times) * 1e6, statistics.median(copy_times) * 1e6
    store.close()

    console.print(
        f"writes, batched (500/txn):   {batched:,.0f} traces/s  vs one txn per trace {single:,.0f}/s "
        f"→ {batched / single:.1f}x"
    )
    console.print(f"bulk fill ({args.rows:,} rows, 5,000/txn): {fill_rate:,.0f} traces/s")
    console.print(
        f"stats by workload:            {stats_s * 1000:,.0f} ms  vs window-function SQL "
        f"{window_s * 1000:,.0f} ms → {window_s / stats_s:.2f}x"
    )
    console.print(
        f"page of 50 at depth {depth:,}: keyset {keyset_s * 1000:,.1f} ms  vs OFFSET "
        f"{offset_s * 1000:,.1f} ms → {offset_s / keyset_s:.0f}x"
    )
    console.print(
        f"redact one trace:             {red_us:,.0f} µs  vs deepcopy {copy_us:,.0f} µs "
        f"→ {red_us / copy_us:.1f}x"
    )


if __name__ == "__main__":
    main()
