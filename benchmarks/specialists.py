"""Encoder specialists on 2 CPU cores: training time, latency, batched throughput, peak memory.

    python benchmarks/specialists.py                       # every encoder kind that is importable
    python benchmarks/specialists.py --kinds classifier --train 2000 --threads 2
    python benchmarks/specialists.py --kinds extractor,extractor:packed   # one pass per field vs per request
    python benchmarks/specialists.py --kinds extractor:joint,extractor:packed  # packed, queries apart or not

For each kind (classifier, extractor, tool_caller), in its own process (so peak
memory is the kind's own): train on ``--train`` generated examples (different
phrasings in train and test), then on unseen-wording test requests measure
accuracy (with ``evaluate``), single-request latency p50/p99 and batched
throughput, and peak RSS.

Baselines measured in the same run:

* accuracy: a majority-answer predictor (always the most common training answer);
* latency: the same single requests as HTTP round trips to a scripted
  OpenAI-compatible upstream on loopback that answers instantly
  (``ScriptedUpstream`` + ``OpenAICompatible``) — the floor of the large-model
  path, before any generation time.

Wall times on a shared machine measure the contention as much as the code: each
kind also reports CPU seconds (``time.process_time``) and the load average, and
with ``--threads 1`` the CPU figures are what an idle core would take.

Targets: training < 120 s for 2,000 examples; p50 < 15 ms; ≥ 300 requests/s batched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import statistics
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

import smallfleet

console = Console()

TARGET_TRAIN_S = 120.0
TARGET_P50_MS = 15.0
TARGET_RPS = 300.0

# ---------------------------------------------------------------- datasets


def _intents(n: int, split: str, seed: int) -> list[Any]:
    from smallfleet.testing.intents import support_desk_examples

    return support_desk_examples(n, split, seed=seed)  # type: ignore[arg-type]


_NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Linus Pauling", "Marie Curie", "Niels Bohr"]
_CITIES = ["Paris", "Oslo", "Lisbon", "Nairobi", "Osaka", "Lima", "Quebec", "Austin"]
_CONTACT = (
    [
        "Hi, I'm {name} from {city}, I need {qty} licences.",
        "{name} here ({city}). Please send {qty} units.",
        "Order for {qty} seats, contact {name}, based in {city}.",
    ],
    [
        "This is {name}; we're in {city} and want {qty} of them.",
        "Could {name} in {city} get a quote for {qty} copies?",
        "{qty} licences please - {name}, {city} office.",
    ],
)


def _contacts(n: int, split: str, seed: int) -> list[Any]:
    from smallfleet.specialists.base import Example
    from smallfleet.types import ChatRequest, ChatResponse

    rng = random.Random(f"{seed}-{split}")
    out = []
    for _ in range(n):
        name, city, qty = rng.choice(_NAMES), rng.choice(_CITIES), rng.randint(1, 500)
        text = rng.choice(_CONTACT[split == "test"]).format(name=name, city=city, qty=qty)
        req = ChatRequest(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "Extract the customer's name, city and quantity as JSON."},
                {"role": "user", "content": text},
            ],
        )
        answer = json.dumps({"name": name, "city": city, "quantity": qty})
        out.append(Example(req, ChatResponse.of_text("teacher", answer)))
    return out


_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_table",
            "description": "Book a restaurant table.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City of the restaurant"},
                    "people": {"type": "integer", "description": "Number of guests"},
                },
                "required": ["city", "people"],
            },
        },
    },
]
_CALLS = (
    [
        ("get_weather", "What's the weather in {city}?"),
        ("get_weather", "Is it raining in {city} right now?"),
        ("book_table", "Book a table for {people} in {city}"),
        ("book_table", "Reserve dinner for {people} people in {city}"),
    ],
    [
        ("get_weather", "How warm is it in {city} today?"),
        ("get_weather", "forecast for {city} please"),
        ("book_table", "We are {people}, find us a table in {city}"),
        ("book_table", "I need a restaurant booking in {city} for {people} guests"),
    ],
)


def _tool_calls(n: int, split: str, seed: int) -> list[Any]:
    from smallfleet.specialists.base import Example
    from smallfleet.types import ChatRequest, ChatResponse

    rng = random.Random(f"{seed}-{split}")
    out = []
    for i in range(n):
        name, template = _CALLS[split == "test"][i % 4]
        city, people = rng.choice(_CITIES), rng.randint(2, 12)
        req = ChatRequest(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": template.format(city=city, people=people)}],
            tools=_TOOLS,
        )
        args: dict[str, Any] = {"city": city} if name == "get_weather" else {"city": city, "people": people}
        out.append(Example(req, ChatResponse.of_tool_calls("teacher", [(name, args)])))
    return out


DATASETS = {"classifier": _intents, "extractor": _contacts, "tool_caller": _tool_calls}

# ---------------------------------------------------------------- measuring


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_kind(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: train, evaluate, time, and report peak RSS."""
    import torch

    torch.set_num_threads(args["threads"])
    from smallfleet.evals.evaluate import evaluate
    from smallfleet.specialists.base import specialist_class

    name = kind
    kind, _, variant = kind.partition(":")
    try:
        cls = specialist_class(kind)
    except (ImportError, AttributeError) as e:
        return {"kind": name, "skipped": f"not importable yet ({e})"}
    make = DATASETS[kind]
    train = make(args["train"], "train", 0)
    validation = make(200, "train", 1)
    test = make(args["test"], "test", 2)
    kw: dict[str, Any] = (
        {"num_layers": args["num_layers"]} if kind == "classifier" and args["num_layers"] else {}
    )
    if variant in ("packed", "joint"):  # every field / argument of a request in one encoder pass
        kw["pack"] = None
    if variant == "joint":  # ... with every layer reading queries and text together (before 2026-11-26)
        kw.update(separate_layers=0, query_slots=False)
    kw["dtype"] = args["dtype"]
    spec = cls(**kw)
    rss_before = _peak_rss_mb()
    t, c = time.perf_counter(), time.process_time()
    spec.fit(train, validation)
    train_s, train_cpu = time.perf_counter() - t, time.process_time() - c

    report = asyncio.run(evaluate(spec, test, latency_sample=0))
    majority = Counter(json.dumps(ex.response.message.to_dict(), sort_keys=True) for ex in train)
    top = majority.most_common(1)[0][0]
    majority_acc = sum(json.dumps(ex.response.message.to_dict(), sort_keys=True) == top for ex in test) / len(
        test
    )

    requests = [ex.request for ex in test]
    timed = _time_predictions(spec, requests, args)
    by_dtype = _compare_dtypes(spec, requests, args) if args["dtypes"] else {}
    return {
        "kind": name,
        "n_train": len(train),
        "train_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu, 1),
        "accuracy": round(report.accuracy, 3),
        "majority_accuracy": round(majority_acc, 3),
        "coverage_at_95": (report.coverage or {}).get("0.95"),
        **timed,
        "by_dtype": by_dtype,
        "load_average": round(os.getloadavg()[0], 1),
        "peak_rss_mb": round(_peak_rss_mb(), 0),
        "rss_before_training_mb": round(rss_before, 0),
    }


def _time_predictions(spec: Any, requests: list[Any], args: dict[str, Any]) -> dict[str, float]:
    """Single-request p50/p99 and batched throughput (wall and CPU) of ``spec`` on ``requests``."""
    from smallfleet.encoders import unseen

    spec.predict(requests[:8])  # warm-up
    singles, singles_cpu = [], []
    # every request as if never seen: no message embedding reused from evaluate() or a repeat
    with unseen(r.last_user_text() for r in requests):
        for req in requests[: args["singles"]]:
            t, c = time.perf_counter(), time.process_time()
            spec.predict([req])
            singles.append((time.perf_counter() - t) * 1000)
            singles_cpu.append((time.process_time() - c) * 1000)
        batch = (requests * (1 + args["batched"] // len(requests)))[: args["batched"]]
        t, c = time.perf_counter(), time.process_time()
        for i in range(0, len(batch), 64):
            spec.predict(batch[i : i + 64])
    rps = len(batch) / (time.perf_counter() - t)
    rps_cpu = len(batch) / (time.process_time() - c)
    return {
        "p50_ms": round(statistics.median(singles), 2),
        "p99_ms": round(_percentile(singles, 0.99), 2),
        "batched_rps": round(rps, 1),
        "requests_per_cpu_s": round(rps_cpu, 1),
        "p50_cpu_ms": round(statistics.median(singles_cpu), 2),
    }


def _compare_dtypes(spec: Any, requests: list[Any], args: dict[str, Any]) -> dict[str, Any]:
    """The trained ``spec`` saved once (float32 weights) and loaded in each of ``--dtypes``:
    speed, and how often its answers are the same as in the first dtype (the reference)."""
    import tempfile
    from pathlib import Path

    from smallfleet.specialists.base import load_specialist

    out: dict[str, Any] = {}
    reference: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = spec.save(Path(tmp) / "spec")
        meta_file = folder / "specialist.json"
        for dtype in args["dtypes"].split(","):
            meta = json.loads(meta_file.read_text())
            meta["params"]["dtype"] = dtype
            meta_file.write_text(json.dumps(meta))
            loaded = load_specialist(folder)
            preds = loaded.predict(requests)
            answers = [json.dumps(p.response.message.to_dict(), sort_keys=True) for p in preds]
            reference = reference or answers
            same = sum(a == b for a, b in zip(answers, reference, strict=True)) / len(answers)
            out[dtype] = {"agreement": round(same, 4), **_time_predictions(loaded, requests, args)}
    return out


def measure_upstream(n: int) -> dict[str, float]:
    """Single requests through OpenAICompatible to an instant scripted upstream on loopback."""
    from smallfleet.models.openai_http import OpenAICompatible
    from smallfleet.testing.upstream import Reply, ScriptedUpstream

    requests = [ex.request for ex in _intents(n, "test", 2)]

    async def run(url: str) -> list[float]:
        model = OpenAICompatible(base_url=url, model="gpt-4o-mini", max_retries=0)
        out = []
        try:
            await model.complete(requests[0])
            for req in requests:
                t = time.perf_counter()
                await model.complete(req)
                out.append((time.perf_counter() - t) * 1000)
        finally:
            await model.aclose()
        return out

    with ScriptedUpstream(lambda body: Reply.text("refund")) as up:
        lat = asyncio.run(run(up.url))
    return {"p50_ms": statistics.median(lat), "p99_ms": _percentile(lat, 0.99)}


def main() -> None:
    smallfleet.configure_process()  # as the `smallfleet` command does: oneDNN's kernel cache capped
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--kinds",
        default="classifier,extractor,extractor:packed,tool_caller,tool_caller:packed",
        help="kinds to measure; KIND:packed answers every field of a request in one pass (pack=None), "
        "KIND:joint too but with every encoder layer reading queries and text together",
    )
    ap.add_argument("--train", type=int, default=2000, help="training examples per kind")
    ap.add_argument("--test", type=int, default=300, help="test examples (unseen phrasings)")
    ap.add_argument("--singles", type=int, default=200, help="single requests timed for p50/p99")
    ap.add_argument("--batched", type=int, default=1024, help="requests for the batched throughput")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--num-layers", type=int, default=0, help="classifier: keep only the first N encoder layers"
    )
    ap.add_argument(
        "--dtypes",
        default="",
        help="also load each trained specialist in these dtypes (e.g. float32,int8,auto): speed, "
        "and answers agreeing with the first one",
    )
    ap.add_argument("--dtype", default="auto", help="what the specialists are built with (default auto)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = vars(ap.parse_args())

    ctx = multiprocessing.get_context("spawn")
    results = []
    for kind in args["kinds"].split(","):
        console.print(f"[bold]{kind}[/]: training on {args['train']} examples …")
        with ctx.Pool(1) as pool:
            res = pool.apply(measure_kind, (kind, args))
        if "skipped" in res:
            console.print(f"  skipped: {res['skipped']}")
        else:
            console.print(f"  {json.dumps(res)}")
        results.append(res)
    base = measure_upstream(min(args["singles"], 200))

    table = Table(title=f"encoder specialists, {args['threads']} threads")
    for col in (
        "kind",
        "train s",
        "accuracy (majority)",
        "cov@95%",
        "p50 / p99 ms",
        "batched req/s",
        "peak MB",
    ):
        table.add_column(col, justify="right")
    for r in results:
        if "skipped" in r:
            continue
        cov = "–" if r["coverage_at_95"] is None else f"{r['coverage_at_95']:.0%}"
        table.add_row(
            r["kind"],
            f"{r['train_s']:.1f}",
            f"{r['accuracy']:.3f} ({r['majority_accuracy']:.3f})",
            cov,
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
            f"{r['batched_rps']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
        )
    console.print(table)
    for r in results:
        for dtype, d in r.get("by_dtype", {}).items():
            console.print(
                f"  {r['kind']} loaded as {dtype}: agreement {d['agreement']:.2%}, p50 {d['p50_ms']:.1f} ms, "
                f"batched {d['batched_rps']:.0f} req/s ({d['requests_per_cpu_s']:.0f} per CPU s)"
            )
    console.print(
        f"baseline, loopback round trip to an instant upstream: p50 {base['p50_ms']:.2f} ms, "
        f"p99 {base['p99_ms']:.2f} ms"
    )
    for r in results:
        if "skipped" in r:
            continue
        console.print(
            f"{r['kind']}: train {r['train_s'] / TARGET_TRAIN_S:.2f}× the 120 s target; "
            f"p50 {r['p50_ms'] / TARGET_P50_MS:.2f}× the 15 ms target "
            f"({r['p50_ms'] / base['p50_ms']:.1f}× the loopback round trip); "
            f"throughput {r['batched_rps'] / TARGET_RPS:.2f}× the 300 req/s target; "
            f"accuracy {r['accuracy'] - r['majority_accuracy']:+.3f} over majority"
        )
    if args["json"]:
        print(json.dumps({"results": results, "upstream_baseline": base}, indent=2))


if __name__ == "__main__":
    main()
