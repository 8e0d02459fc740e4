"""A public dataset through smallfleet's whole loop, with the product's own commands and defaults.

    python benchmarks/workloads/run.py {banking77,nlupp,sgd} [--data DIR]
        [--limit-train N] [--limit-test N] [--workdir W] [--seed 0]

1. the dataset's training split is converted into the agent's calls to its large model
   (``W/train.jsonl``) and brought in with ``smallfleet traces import`` into a fresh SQLite
   store in the work folder;
2. ``smallfleet flywheel run --target-accuracy 0.95 --promote on`` (every other option at its
   default), timed, its process tree's resident memory sampled;
3. ``smallfleet gateway`` is started with routing on; its large model (``gpt-4o``) is a
   loopback server that answers each request with the dataset's gold annotation;
4. the held-out split is replayed through the gateway over HTTP, one request at a time,
   and each answer a specialist served (``x-smallfleet-route: specialist:…``) is compared
   with the gold: labels exactly, JSON objects as whole objects, tool calls by exact name
   and arguments after JSON parsing.

The large model's latency and cost are modelled as in ``smallfleet demo`` (gpt-4o list
prices; lognormal time to first token plus 14-28 ms per output token): "large alone" is
that latency and cost for every held-out call; with smallfleet, a call served small costs
what the gateway recorded (compute time at ``pricing.local_usd_per_hour`` = 0.10, the
demo's) and takes the measured round trip, an escalated one the large model's latency plus
the gateway's measured round trip.

The last line of output is one JSON object with the figures (also in ``W/result.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.workloads import DATASETS
from benchmarks.workloads.common import (
    Pair,
    agrees,
    answer_of,
    default_data_dir,
    large_cost_usd,
    large_latency_ms,
    write_jsonl,
)
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

SMALL_USD_PER_HOUR = 0.10  # the demo's price of this machine's time
TARGET = 0.95
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


# ---------------------------------------------------------------- loading


def load_pairs(
    dataset: str,
    data: Path,
    limit_train: int | None,
    limit_test: int | None,
    seed: int,
    tasks: tuple[str, ...] | None = None,
) -> tuple[str, list[Pair], list[Pair]]:
    """(workload name, train pairs, test pairs) of ``dataset`` (NLU++: only ``tasks`` when given)."""
    import importlib

    module = importlib.import_module(f"benchmarks.workloads.{dataset}")
    extra = {"tasks": tasks} if tasks else {}
    train, test = module.load(data, limit_train=limit_train, limit_test=limit_test, seed=seed, **extra)
    return module.WORKLOAD, train, test


# ---------------------------------------------------------------- the product's commands


def _child_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
    env.update(
        SMALLFLEET_CONFIG=str(config),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        COLUMNS="160",
        NO_COLOR="1",
    )
    return env


def smallfleet(*args: str) -> list[str]:
    return [sys.executable, "-m", "smallfleet.cli", *args]


def write_config(work: Path, upstream_url: str, seed: int) -> Path:
    """The work folder's smallfleet.yaml: a fresh store, the loopback large model, routing on."""
    import yaml

    cfg = {
        "models": {"gpt-4o": {"backend": "openai", "base_url": upstream_url, "max_retries": 0}},
        "store": {"url": f"sqlite:///{work / 'smallfleet.db'}"},
        "gateway": {"dead_letter_path": str(work / "dead-letters.jsonl")},
        "pricing": {"local_usd_per_hour": SMALL_USD_PER_HOUR},
        "routing": {"enabled": True, "seed": seed},
        "flywheel": {"specialists_dir": str(work / "specialists")},
    }
    path = work / "smallfleet.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def fresh_workdir(work: Path) -> None:
    """Remove what an earlier run of this script left in ``work`` (and nothing else)."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("smallfleet.db", "smallfleet.db-wal", "smallfleet.db-shm", "report.html", "report.json"):
        (work / name).unlink(missing_ok=True)
    shutil.rmtree(work / "specialists", ignore_errors=True)


def run_logged(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> int:
    with log.open("w") as out:
        return subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode


class RssSampler:
    """Peak resident memory of a process and its descendants together, sampled every ``every`` s."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every = pid, every
        self.peak_mb = 0.0
        self.now_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.now_mb = tree_rss_mb(self.pid)
                self.peak_mb = max(self.peak_mb, self.now_mb)
            self._stop.wait(self.every)


def tree_rss_mb(pid: int) -> float:
    try:
        import psutil
    except ImportError:  # /proc: the process and its children (one level is what the flywheel spawns)
        return _proc_rss_kb(pid) / 1024 + sum(_proc_rss_kb(c) for c in _proc_children(pid)) / 1024
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def _proc_rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _proc_children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


@dataclass
class FlywheelOutcome:
    returncode: int
    seconds: float
    peak_rss_mb: float
    report: dict[str, Any] = field(default_factory=dict)


def run_flywheel(work: Path, env: dict[str, str]) -> FlywheelOutcome:
    cmd = smallfleet(
        "flywheel",
        "run",
        "--target-accuracy",
        str(TARGET),
        "--promote",
        "on",
        "--report",
        str(work / "report.html"),
    )
    log = work / "flywheel.log"
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT)
        with RssSampler(proc.pid) as rss, console.status("") as status:
            while proc.poll() is None:
                status.update(
                    f"flywheel run: {time.perf_counter() - t0:.0f} s, {rss.now_mb:,.0f} MB now, "
                    f"{rss.peak_mb:,.0f} MB peak (log: {log})"
                )
                time.sleep(0.5)
    seconds = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    start = text.find("flywheel run ")
    sys.stdout.write(text[start:] if start >= 0 else text[-4000:])
    sys.stdout.flush()
    report_path = work / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return FlywheelOutcome(proc.returncode, seconds, rss.peak_mb, report)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gateway(work: Path, env: dict[str, str]) -> Any:
    """``smallfleet gateway`` on a free loopback port; yields its base URL; SIGTERM at the end."""
    import httpx

    port = free_port()
    log = (work / "gateway.log").open("w")
    cmd = smallfleet("gateway", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning")
    proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        with console.status("starting the gateway"):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the gateway exited ({proc.returncode}); see {work / 'gateway.log'}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not start; see {work / 'gateway.log'}")
                time.sleep(0.3)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


# ---------------------------------------------------------------- the large model: the gold answers


def request_key(request: dict[str, Any]) -> str:
    """What identifies a held-out request whatever the gateway normalised on the way."""
    parts = [f"{m.get('role')}:{m.get('content') or ''}" for m in request.get("messages") or []]
    tools = sorted(str((t.get("function") or {}).get("name")) for t in request.get("tools") or [])
    return json.dumps([parts, tools])


class GoldUpstream:
    """A loopback OpenAI-compatible server answering every held-out request from its gold annotation."""

    def __init__(self, pairs: list[Pair]) -> None:
        from smallfleet.testing.upstream import ScriptedUpstream

        self.answers = {request_key(p.request): p.response for p in pairs}
        self.unknown = 0
        self.server = ScriptedUpstream(self._answer)

    def _answer(self, request: dict[str, Any]) -> Any:
        from smallfleet.testing.upstream import Reply

        response = self.answers.get(request_key(request))
        if response is None:
            self.unknown += 1
            return Reply.error(404, "no gold answer for this request")
        return Reply(body=response)


# ---------------------------------------------------------------- replay


@dataclass
class Outcome:
    pair: Pair
    status: int
    route: str
    latency_ms: float
    trace_id: str | None
    answer: Any = None
    agree: bool | None = None
    confidence: float | None = None

    @property
    def small(self) -> bool:
        return self.route.startswith("specialist:")

    @property
    def route_name(self) -> str | None:
        return self.route.split(":", 1)[1] if self.small else None


def replay(base: str, pairs: list[Pair], workload: str) -> list[Outcome]:
    import httpx

    out: list[Outcome] = []
    columns = (
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[small]}"),
    )
    with httpx.Client(base_url=base, timeout=300) as client, Progress(*columns, console=console) as bar:
        task = bar.add_task("replay", total=len(pairs), small="")
        small = 0
        for p in pairs:
            t0 = time.perf_counter()
            r = client.post(
                "/v1/chat/completions", json=p.request, headers={"x-smallfleet-workload": workload}
            )
            took = (time.perf_counter() - t0) * 1000
            o = Outcome(
                p,
                r.status_code,
                r.headers.get("x-smallfleet-route", "?"),
                took,
                r.headers.get("x-smallfleet-trace-id"),
            )
            conf = r.headers.get("x-smallfleet-confidence")
            o.confidence = float(conf) if conf else None
            if r.status_code == 200:
                o.answer = answer_of(r.json(), p.gold.kind)
                o.agree = agrees(p.gold, o.answer)
            small += o.small
            out.append(o)
            bar.update(task, advance=1, small=f"{small} served small")
    return out


# ---------------------------------------------------------------- figures


def wrong_kind(o: Outcome, labels: list[str] | None) -> str | None:
    """Why a small-served answer is wrong (None: it is right)."""
    if o.pair.meta.get("seen") is False:
        return "unseen_service"  # dev services never seen in training must all stay large
    if o.agree:
        return None
    gold, served_call = o.pair.gold.kind, isinstance(o.answer, list)
    if gold == "text":
        return "call_for_reply" if served_call else "wrong_reply"
    if gold == "tool_call":
        return "wrong_call" if served_call else "reply_for_call"
    if gold == "label":
        return "unseen_label" if labels is not None and o.pair.gold.value not in labels else "wrong_label"
    return "wrong_object"


def task_of(p: Pair) -> str:
    seen = p.meta.get("seen")
    return p.task if seen is None else f"{p.task}/{'seen' if seen else 'unseen'}"


def _share(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def figures(
    outcomes: list[Outcome], routes: dict[str, dict[str, Any]], costs: dict[str, float]
) -> dict[str, Any]:
    served = [o for o in outcomes if o.small]
    agreed = sum(bool(o.agree) for o in served)
    wrong: Counter[str] = Counter()
    for o in served:
        kind = wrong_kind(o, (routes.get(o.route_name or "") or {}).get("labels"))
        if kind:
            wrong[kind] += 1
    by_task: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[task_of(o.pair)].append(o)
    for name, group in sorted(groups.items()):
        small = [o for o in group if o.small]
        ok = sum(bool(o.agree) for o in small)
        by_task[name] = {
            "calls": len(group),
            "served_small": len(small),
            "served_share": _share(len(small), len(group)),
            "delivered_agreement": _share(ok, len(small)),
            "served_as_call": sum(isinstance(o.answer, list) for o in small),
        }
    per_route: dict[str, list[Outcome]] = defaultdict(list)
    for o in served:
        per_route[o.route_name or "?"].append(o)
    for name, r in routes.items():
        got = per_route.get(name, [])
        r["served"] = len(got)
        r["delivered"] = _share(sum(bool(o.agree) for o in got), len(got))
    cost_before = sum(large_cost_usd(o.pair) for o in outcomes)
    cost_after = 0.0
    lat_before, lat_after = [], []
    for o in outcomes:
        large_ms = large_latency_ms(o.pair)
        lat_before.append(large_ms)
        if o.small:
            lat_after.append(o.latency_ms)
            fallback = o.latency_ms / 3_600_000 * SMALL_USD_PER_HOUR
            cost_after += costs.get(o.trace_id or "", fallback)
        else:
            lat_after.append(o.latency_ms + large_ms)
            cost_after += costs.get(o.trace_id or "", large_cost_usd(o.pair))
    return {
        "calls": len(outcomes),
        "served_small": len(served),
        "served_share": _share(len(served), len(outcomes)) or 0.0,
        "delivered_agreement": _share(agreed, len(served)),
        "wrong_serves": {"total": sum(wrong.values()), **dict(wrong.most_common())},
        "escalations": dict(Counter(o.route for o in outcomes if not o.small).most_common()),
        "errors": sum(o.status != 200 for o in outcomes),
        "by_task": by_task,
        "routes": list(routes.values()),
        "cost_large_alone_usd": round(cost_before, 6),
        "cost_with_smallfleet_usd": round(cost_after, 6),
        "latency_p50_large_alone_ms": round(statistics.median(lat_before), 1) if lat_before else None,
        "latency_p50_with_smallfleet_ms": round(statistics.median(lat_after), 1) if lat_after else None,
        "latency_p50_small_ms": round(statistics.median([o.latency_ms for o in served]), 1)
        if served
        else None,
    }


def read_routes(db_url: str) -> dict[str, dict[str, Any]]:
    """Every active route with what it promised at promotion: the kept accuracy of its held-out
    (validation and test) answers, and the lower bound the promotion certified (``promised_lower``)."""
    from smallfleet.routing.routes import RouteStore
    from smallfleet.store import TraceStore

    store = TraceStore(db_url)
    try:
        out = {}
        for r in RouteStore(store.engine).active():
            m = r.metrics or {}
            out[r.name] = {
                "name": r.name,
                "kind": r.kind,
                "mode": r.mode,
                "threshold": round(r.threshold, 4),
                "labels": r.labels,
                "promised": m.get("kept_accuracy"),
                "promised_lower": m.get("kept_accuracy_lower"),
                "promised_confidence": m.get("confidence"),
                "promised_coverage": m.get("coverage"),
                "promise_n_test": m.get("n"),
                "n_train": m.get("n_train"),
                "cluster": m.get("cluster"),
            }
        return out
    finally:
        store.close()


def route_events(db_url: str) -> list[dict[str, Any]]:
    from smallfleet.routing.routes import RouteStore
    from smallfleet.store import TraceStore

    store = TraceStore(db_url)
    try:
        return [
            {"route": e.route, "action": e.action, "actor": e.actor, **e.detail}
            for e in RouteStore(store.engine).events()
            if e.action != "promote"
        ]
    finally:
        store.close()


def recorded_costs(db_url: str, ids: list[str | None]) -> dict[str, float]:
    """What the gateway recorded each replayed call as costing."""
    from smallfleet.store import TraceStore

    store = TraceStore(db_url)
    try:
        out = {}
        for tid in ids:
            rec = store.get_trace(tid) if tid else None
            if rec is not None and rec.cost_usd is not None:
                out[tid] = rec.cost_usd  # type: ignore[index]
        return out
    finally:
        store.close()


def flywheel_summary(report: dict[str, Any]) -> dict[str, Any]:
    clusters = report.get("clusters") or []
    cur = report.get("curation") or {}
    return {
        "clusters": len(clusters),
        "by_status": dict(Counter(c.get("status") for c in clusters)),
        "by_shape": dict(Counter(c.get("shape") for c in clusters)),
        "clustered_calls": sum(int(c.get("size") or 0) for c in clusters),
        "noise": report.get("noise"),
        "curation": {"total": cur.get("total"), "kept": cur.get("kept"), "dropped": cur.get("dropped")},
        "stages": {k: v.get("seconds") for k, v in (report.get("stages") or {}).items()},
        "process_peak_rss_mb": max(
            (v.get("peak_rss_mb") or 0 for v in (report.get("stages") or {}).values()), default=None
        ),
        "worker_peak_rss_mb": report.get("worker_peak_rss_mb"),
        "workers": report.get("workers"),
        "not_promoted": [
            {
                "cluster": c.get("name"),
                "size": c.get("size"),
                "shape": c.get("shape"),
                "status": c.get("status"),
                "reasons": [x.get("reason") for x in c.get("candidates") or [] if x.get("reason")],
            }
            for c in clusters
            if c.get("status") != "promoted"
        ][:20],
    }


# ---------------------------------------------------------------- printing


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def print_tables(res: dict[str, Any]) -> None:
    t = Table(title=f"{res['dataset']}: held-out calls through the gateway, by task type")
    for col in ("task type", "calls", "served small", "share", "agreement", "served as tool call"):
        t.add_column(col, justify="right" if col != "task type" else "left")
    for name, s in res["by_task"].items():
        t.add_row(
            name,
            str(s["calls"]),
            str(s["served_small"]),
            _pct(s["served_share"]),
            _pct(s["delivered_agreement"]),
            str(s["served_as_call"]),
        )
    t.add_row(
        "[bold]all[/]",
        str(res["calls"]),
        str(res["served_small"]),
        _pct(res["served_share"]),
        _pct(res["delivered_agreement"]),
        "",
    )
    console.print(t)
    r = Table(title="routes: promised at promotion vs delivered on the held-out split")
    for col in (
        "route",
        "kind",
        "mode",
        "labels",
        "threshold",
        "promised (n)",
        "bound",
        "served",
        "delivered",
    ):
        r.add_column(col)
    for x in res["routes"]:
        n = x.get("promise_n_test")
        r.add_row(
            x["name"][:48],
            x["kind"],
            x["mode"],
            "–" if x["labels"] is None else str(len(x["labels"])),
            f"{x['threshold']:.3f}",
            f"{_pct(x['promised'])} ({n})",
            _pct(x.get("promised_lower")),
            str(x["served"]),
            _pct(x["delivered"]),
        )
    console.print(r if res["routes"] else "[yellow]no route was promoted[/]")
    w = ", ".join(f"{k} {v}" for k, v in res["wrong_serves"].items() if k != "total") or "none"
    console.print(f"wrong serves: {res['wrong_serves']['total']} ({w})")
    console.print("escalations: " + (", ".join(f"{k} {v}" for k, v in res["escalations"].items()) or "none"))
    console.print(
        f"cost: ${res['cost_with_smallfleet_usd']:.4f} with smallfleet vs ${res['cost_large_alone_usd']:.4f} "
        f"large alone; median latency {res['latency_p50_with_smallfleet_ms']} ms vs "
        f"{res['latency_p50_large_alone_ms']} ms (served small: {res['latency_p50_small_ms']} ms)"
    )
    fw = res["flywheel"]
    console.print(
        f"flywheel: {res['flywheel_seconds']:.0f} s, peak RSS {res['peak_rss_mb']:,.0f} MB (process tree); "
        f"{fw['clusters']} clusters {fw['by_status']}, shapes {fw['by_shape']}; curation kept "
        f"{fw['curation']['kept']} of {fw['curation']['total']}, dropped {fw['curation']['dropped']}; "
        f"stages (s) {fw['stages']}"
    )


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument(
        "--data", type=Path, help="the dataset's folder (default: ../shared/data/NAME beside the repository)"
    )
    ap.add_argument(
        "--limit-train",
        type=int,
        help="at most this many training calls (SGD: in whole dialogues; NLU++: messages)",
    )
    ap.add_argument("--limit-test", type=int, help="at most this many held-out calls (same units)")
    ap.add_argument(
        "--workdir",
        type=Path,
        help="where the store, specialists and logs go (default: a new temporary folder)",
    )
    ap.add_argument("--seed", type=int, default=0, help="order of the traffic and the gateway's draws")
    ap.add_argument(
        "--tasks",
        help="NLU++ only: the agent steps to record, comma-separated (slots,intents; default: both)",
    )
    args = ap.parse_args(argv)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else None
    if tasks and args.dataset != "nlupp":
        ap.error("--tasks is for nlupp only")
    if tasks and not set(tasks) <= {"slots", "intents"}:
        ap.error(f"--tasks: unknown step(s) {sorted(set(tasks) - {'slots', 'intents'})}; slots, intents")
    data = args.data or default_data_dir(args.dataset)
    if data is None or not Path(data).is_dir():
        ap.error(
            f"no data folder for {args.dataset}: pass --data DIR (a clone of the dataset's public repository)"
        )
    work = (args.workdir or Path(tempfile.mkdtemp(prefix=f"smallfleet-{args.dataset}-"))).resolve()
    fresh_workdir(work)
    t_start = time.perf_counter()

    with console.status(f"converting {args.dataset} from {data}"):
        workload, train, test = load_pairs(
            args.dataset, Path(data), args.limit_train, args.limit_test, args.seed, tasks
        )
        train_file = write_jsonl(train, work / "train.jsonl", workload)
        write_jsonl(test, work / "test.jsonl", workload)
    console.print(
        f"[bold]1/4[/] {args.dataset}: {len(train):,} training calls, {len(test):,} held-out calls ({work})"
    )

    gold = GoldUpstream(test)
    gold.server.start()
    try:
        config = write_config(work, gold.server.url, args.seed)
        env = _child_env(config)
        db_url = f"sqlite:///{work / 'smallfleet.db'}"
        with console.status("smallfleet traces import"):
            rc = run_logged(smallfleet("traces", "import", str(train_file)), env, work / "import.log", work)
        console.print((work / "import.log").read_text().strip()[-600:], markup=False)
        if rc != 0:
            raise SystemExit(f"smallfleet traces import failed ({rc}); see {work / 'import.log'}")

        console.print(f"[bold]2/4[/] smallfleet flywheel run --target-accuracy {TARGET} --promote on")
        fw = run_flywheel(work, env)
        if fw.returncode != 0:
            console.print(f"[red]the flywheel exited with {fw.returncode}[/]; see {work / 'flywheel.log'}")
        routes = read_routes(db_url)

        console.print(
            f"[bold]3/4[/] replaying {len(test):,} held-out calls through smallfleet gateway (routing on)"
        )
        with gateway(work, env) as base:
            outcomes = replay(base, test, workload)
        console.print("[bold]4/4[/] figures")
        after = read_routes(db_url)
        for name, r in routes.items():
            r["mode_after"] = (after.get(name) or {}).get("mode")
        costs = recorded_costs(db_url, [o.trace_id for o in outcomes])
        events = route_events(db_url)
    finally:
        gold.server.stop()

    res: dict[str, Any] = {"dataset": args.dataset}
    res.update(figures(outcomes, routes, costs))
    res.update(
        flywheel_seconds=round(fw.seconds, 1),
        peak_rss_mb=round(fw.peak_rss_mb, 1),
        flywheel_returncode=fw.returncode,
        flywheel=flywheel_summary(fw.report),
        route_events=events,
        train_calls=len(train),
        test_calls=len(test),
        upstream_unanswered=gold.unknown,
        limits={"train": args.limit_train, "test": args.limit_test},
        tasks=list(tasks) if tasks else None,
        seed=args.seed,
        workdir=str(work),
        machine=machine(),
        seconds=round(time.perf_counter() - t_start, 1),
    )
    print_tables(res)
    for r in res["routes"]:  # label sets are long: their size is enough in the summary
        r["labels"] = None if r["labels"] is None else len(r["labels"])
    (work / "result.json").write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps(res, default=str), flush=True)
    return res


if __name__ == "__main__":
    main()
