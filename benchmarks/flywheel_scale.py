"""How the flywheel's stages grow with the number of traces.

Generates the demo workload at several sizes (default 2,000 and 10,000 calls), writes
each into a fresh SQLite store and runs the flywheel once, printing each stage's time
and the process's peak memory. The baseline, measured in the same run, is the cost of
embedding the same number of texts with the bundled encoder (the floor for curation
and clustering, which must embed every request once; timed on up to 5,000 texts and
scaled to the size), so the stage times are also shown as multiples of it. Each size
runs in its own process, so peak memory is per size; training runs in worker processes
(one per CPU, at most four), whose largest peak is shown beside it, and the peak of all
processes together (proportional set size, shared pages counted once, sampled every 0.5 s)
is what the memory target is checked against.

    python benchmarks/flywheel_scale.py [--sizes 2000 10000 100000] [--max-train 1500] [--workers N]

The flywheel runs with the demo's training budgets (``DEMO_SPECIALIST_PARAMS``: span
models on the newest 400 examples of a task type, packed; classifiers on up to
``--max-train``), so training grows with the number of task types, not of traces.

Targets (issue): 10k traces end to end under 5 minutes; 100k under 30 minutes; memory under 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE_SAMPLE = 5000


def _tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and its descendants (shared pages counted once)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total


class TreeMemory:
    """Samples the memory of this process and its workers together, every ``interval`` s."""

    def __init__(self, interval: float = 0.5) -> None:
        import os
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, _tree_pss_mb(self._pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def one_size(calls: int, max_train: int, workdir: Path, workers: int | None = None) -> dict[str, object]:
    from smallfleet.demo.run import DEMO_SPECIALIST_PARAMS
    from smallfleet.demo.workload import generate_workload, to_trace_records
    from smallfleet.encoders import embed
    from smallfleet.flywheel.pipeline import FlywheelOptions, run_flywheel
    from smallfleet.store.trace_store import TraceStore

    workload = generate_workload(calls, seed=0)
    records = to_trace_records(workload)
    store = TraceStore(f"sqlite:///{workdir / 'fw.db'}")
    for i in range(0, len(records), 5000):
        store.write_traces(records[i : i + 5000])
    texts = [c.user_text for c in workload]
    embed(texts[:64])  # load the encoder outside the timing
    sample = texts[:BASELINE_SAMPLE]  # embedding is linear in the texts: timed on a sample, scaled
    t0 = time.perf_counter()
    embed(sample)
    baseline = (time.perf_counter() - t0) * len(texts) / len(sample)
    opts = FlywheelOptions(
        min_examples=max(30, calls // 100),
        specialists_dir=str(workdir / "specialists"),
        promote_mode="shadow",
        max_train=max_train,
        specialist_params=DEMO_SPECIALIST_PARAMS,
        progress=False,
        workers=workers,
    )
    memory = TreeMemory()
    t0 = time.perf_counter()
    run = run_flywheel(store, opts)
    total = time.perf_counter() - t0
    tree_peak = memory.stop()
    return {
        "calls": calls,
        "embed_baseline_s": round(baseline, 2),
        "total_s": round(total, 2),
        "stages": run.stages,
        "workers": run.workers,
        "worker_peak_rss_mb": run.worker_peak_rss_mb,
        "all_processes_peak_pss_mb": round(tree_peak, 1),
        "promoted": len(run.promoted),
        "clusters": len(run.clusters),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--max-train", type=int, default=1500)
    ap.add_argument(
        "--workers", type=int, help="processes training task types at once (default: the flywheel's)"
    )
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(one_size(args.one, args.max_train, Path(d), args.workers)))
        return
    rows = []
    for n in args.sizes:
        extra = ["--workers", str(args.workers)] if args.workers else []
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--max-train", str(args.max_train), *extra],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"\n{n:,} traces: {r['total_s']:.0f} s end to end, "
            f"{r['clusters']} task types, {r['promoted']} promoted"
        )
        print(f"  baseline: embedding {n:,} texts took {r['embed_baseline_s']:.1f} s")
        for stage, v in r["stages"].items():
            ratio = v["seconds"] / r["embed_baseline_s"] if r["embed_baseline_s"] else float("nan")
            print(
                f"  {stage:<36} {v['seconds']:8.1f} s  ({ratio:5.2f}x baseline)  "
                f"peak RSS {v['peak_rss_mb']:7.0f} MB"
            )
        if r.get("worker_peak_rss_mb"):
            print(
                f"  training in {r['workers']} worker processes: largest worker peak RSS "
                f"{r['worker_peak_rss_mb']:.0f} MB"
            )
        print(
            f"  peak memory of all processes together (PSS, sampled every 0.5 s): "
            f"{r['all_processes_peak_pss_mb']:.0f} MB"
        )
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\ngrowth {a['calls']:,} → {b['calls']:,} traces ({b['calls'] / a['calls']:.0f}x):")
        for stage in b["stages"]:
            ga = a["stages"].get(stage, {}).get("seconds") or float("nan")
            print(f"  {stage:<36} {b['stages'][stage]['seconds'] / ga:5.1f}x")


if __name__ == "__main__":
    main()
