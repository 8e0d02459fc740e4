"""What redaction costs the trace writer: microseconds of CPU per trace, on realistic chat traces.

The corpus is generated (seeded): chat requests with a system prompt and a user message of a few
hundred to a few thousand characters of prose with numbers, dates and amounts in it, a third with
a tool call and its result, a fifth with one secret or piece of personal data seeded in, and the
upstream's answer. Each trace goes through ``Redactor().redact_record``, as the gateway's writer
thread does it.

``--baseline FILE`` measures another version of ``smallfleet/store/redact.py`` in the same run
(interleaved rounds, so the machine's load hits both alike) and checks that both give the same
stored traces, e.g. the version before a change:

    git show HEAD:src/smallfleet/store/redact.py > /tmp/redact_before.py
    python benchmarks/gateway_redaction.py --baseline /tmp/redact_before.py   # --traces 300 --rounds 7
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from smallfleet.store import Redactor, TraceRecord

_TEXT = """the invoice order customer account refund shipping delivery please thanks support issue
payment charged twice March April product version update error server request response
model token key password reset login billing technical sales team week days hours
configuration install docker kubernetes python function return value list dict"""
WORDS = _TEXT.split()
SEEDED = [
    "bob.smith@example.com",
    "+44 20 7946 0958",
    "415-555-0199",
    "4111 1111 1111 1111",
    "203.0.113.42",
    "GB82WEST12345698765432",
    "api_key=ZXhhbXBsZXNlY3JldA",
    "123-45-6789",
]


def prose(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        r = rng.random()
        if r < 0.06:
            words.append(str(rng.randint(1, 9999)))
        elif r < 0.08:
            words.append(f"{rng.randint(1, 28)}/{rng.randint(1, 12)}/2024")
        elif r < 0.09:
            words.append(f"${rng.randint(1, 999)}.{rng.randint(10, 99)}")
        elif r < 0.10:
            words.append("v1.2.3")
        else:
            words.append(rng.choice(WORDS))
        if rng.random() < 0.08:
            words[-1] += "."
    return " ".join(words)


def trace(rng: random.Random) -> TraceRecord:
    user = prose(rng, rng.choice([300, 800, 1500, 3000]))
    if rng.random() < 0.2:
        words = user.split(" ")
        words.insert(rng.randrange(len(words)), rng.choice(SEEDED))
        user = " ".join(words)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": prose(rng, rng.choice([150, 400]))},
        {"role": "user", "content": user},
    ]
    request: dict[str, Any] = {"model": "gpt-4o-mini", "messages": messages, "temperature": 0}
    if rng.random() < 0.3:
        args = {"order_id": str(rng.randint(10**5, 10**6)), "note": prose(rng, 80)}
        call = {"name": "lookup_order", "arguments": json.dumps(args)}
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
            }
        )
        result = {"status": "shipped", "eta_days": 3, "detail": prose(rng, 200)}
        messages.append({"role": "tool", "tool_call_id": "call_1", "content": json.dumps(result)})
        params = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}
        request["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": "lookup_order",
                    "description": "Look an order up.",
                    "parameters": params,
                },
            }
        ]
    answer = {"role": "assistant", "content": prose(rng, rng.choice([100, 400, 1200]))}
    response = {
        "id": f"chatcmpl-{rng.randint(10**8, 10**9)}",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 380, "completion_tokens": 100, "total_tokens": 480},
    }
    return TraceRecord(
        request=request,
        response=response,
        workload="support",
        model_requested="gpt-4o-mini",
        metadata={"team": "support"},
    )


def cpu_us_per_trace(redactor: Any, records: list[TraceRecord]) -> float:
    t0 = time.process_time()
    for r in records:
        redactor.redact_record(r)
    return (time.process_time() - t0) / len(records) * 1e6


def load_redactor(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("redact_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["redact_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Redactor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7, help="passes over the corpus; the median is reported")
    ap.add_argument("--baseline", type=Path, help="another redact.py, measured in the same run")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    records = [trace(rng) for _ in range(args.traces)]
    chars = statistics.mean(len(json.dumps(r.request)) + len(json.dumps(r.response)) for r in records)
    redactors = {"current": Redactor()}
    if args.baseline:
        redactors = {"baseline": load_redactor(args.baseline), **redactors}
        a, b = redactors.values()
        differ = sum(a.redact_record(copy.deepcopy(r)) != b.redact_record(copy.deepcopy(r)) for r in records)
        print(f"stored traces that differ between baseline and current: {differ} of {len(records)}")
    for red in redactors.values():  # warm: compiled patterns, caches
        cpu_us_per_trace(red, records[:20])
    times: dict[str, list[float]] = {name: [] for name in redactors}
    for _ in range(args.rounds):  # interleaved
        for name, red in redactors.items():
            times[name].append(cpu_us_per_trace(red, records))
    print(
        f"redaction: {len(records)} traces of {chars:.0f} characters of JSON on average, "
        f"{args.rounds} rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    for name, values in times.items():
        print(
            f"{name:>8}: median {statistics.median(values):.0f} us of CPU per trace (min {min(values):.0f})"
        )
    if args.baseline:
        before, after = (statistics.median(v) for v in times.values())
        print(f"current / baseline: {after / before:.2f} ({before / after:.1f}x faster)")


if __name__ == "__main__":
    main()
