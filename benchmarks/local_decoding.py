"""What LocalCausalLM's decoding loop and constrained decoding cost, against ``model.generate``.

A tiny random model is built (``smallfleet.testing.tiny``) and loaded the normal
way. The same prompt is decoded greedily, one request at a time:

- baseline: Hugging Face ``model.generate`` (KV cache, greedy, no constraint),
- ``text``: LocalCausalLM, unconstrained (our loop, log-probs and detokenising included),
- ``json``: LocalCausalLM with a ``json_schema`` response format (xgrammar mask every token),
- ``tools``: LocalCausalLM with two tools and ``tool_choice="required"``.

Figures are tokens per second and the ratio to the baseline measured in the same
run (prefill included, so ``tools``, whose prompt carries the tool list, pays a
longer prefill); plus the grammar compile time (first request for a schema vs cached).

Run:  python benchmarks/local_decoding.py [--hidden 256] [--layers 4] [--tokens 64] [--repeats 5]
      [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "tier": {"type": "string", "enum": ["gold", "silver", "bronze"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "tier", "tags"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
    for name in ("get_weather", "get_forecast")
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from smallfleet.models.local_hf import LocalCausalLM
    from smallfleet.testing.tiny import build_tiny_causal_lm
    from smallfleet.types import ChatRequest

    torch.set_num_threads(args.threads)
    path = build_tiny_causal_lm(
        Path(tempfile.mkdtemp()) / "m", hidden_size=args.hidden, num_layers=args.layers, num_heads=4
    )
    lm = LocalCausalLM(path, max_new_tokens=args.tokens)
    messages = [{"role": "user", "content": "Tell me about Paris and its weather this week."}]

    def request(**kw: Any) -> ChatRequest:
        return ChatRequest.parse({"model": "m", "messages": messages, "max_tokens": args.tokens, **kw})

    # baseline: transformers' own generate on the same weights and prompt
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = torch.tensor([lm.prompt_ids(request())])

    def hf_run() -> int:
        with torch.inference_mode():
            out = hf.generate(
                ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False, pad_token_id=0
            )
        return int(out.shape[1] - ids.shape[1])

    def ours(req: ChatRequest) -> Any:
        return lambda: lm.generate(req).completion_tokens

    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}
    cases = {
        "hf generate": hf_run,
        "text": ours(request()),
        "json": ours(request(response_format=rf)),
        "tools": ours(request(tools=TOOLS, tool_choice="required")),
    }

    # grammar compile: first use of a schema, then the cached one
    lm.load()
    t0 = time.perf_counter()
    lm.generate(request(response_format=rf, max_tokens=1))
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    lm.generate(request(response_format=rf, max_tokens=1))
    warm = time.perf_counter() - t0

    rates: dict[str, float] = {}
    for name, fn in cases.items():
        fn()  # warm up
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            n = fn()
            runs.append(n / (time.perf_counter() - t0))
        rates[name] = statistics.median(runs)

    params = sum(p.numel() for p in hf.parameters())
    size = f"hidden {args.hidden}, {args.layers} layers, {params / 1e6:.2f}M params"
    print(f"tiny qwen2: {size}, {args.threads} thread(s)")
    print(f"{args.tokens} new tokens per request, median of {args.repeats}, greedy")
    print(f"{'path':<12} {'tokens/s':>9} {'vs hf generate':>15}")
    base = rates["hf generate"]
    for name, rate in rates.items():
        print(f"{name:<12} {rate:>9.0f} {rate / base:>14.2f}x")
    print(f"json_schema request, 1 token: first (compiles) {cold * 1000:.0f} ms, cached {warm * 1000:.0f} ms")


if __name__ == "__main__":
    main()
