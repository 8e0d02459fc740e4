"""How much OpenAICompatible costs on top of a bare httpx call.

A ScriptedUpstream runs in a child process (so it does not share our GIL); the
same number of requests, at the same concurrency, go through:

- baseline: a bare ``httpx.AsyncClient.post`` + ``json.loads`` (the floor),
- ``complete_raw``: the dict fast path the gateway can use,
- ``complete``: the ChatModel method (pydantic request in, pydantic response out).

Throughput is bounded by the upstream and the machine; the client's CPU time per
request (``time.process_time``) is the figure that shows what our layer costs.

Run:  python benchmarks/openai_client.py [--requests 3000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import time
from collections.abc import Awaitable, Callable
from typing import Any


def _serve(conn: Any) -> None:
    from smallfleet.testing import ScriptedUpstream

    up = ScriptedUpstream().start()
    conn.send(up.url)
    conn.recv()  # block until told to stop
    up.stop()


async def _drive(fn: Callable[[], Awaitable[Any]], total: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, client CPU microseconds per request)."""
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await fn()

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - t0), (time.process_time() - c0) / total * 1e6


async def _bench(url: str, total: int, concurrency: int) -> dict[str, tuple[float, float]]:
    import httpx

    from smallfleet.models.openai_http import OpenAICompatible
    from smallfleet.types import ChatRequest

    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Classify the ticket: billing, technical or sales."},
            {"role": "user", "content": "My invoice for March was charged twice, please refund one."},
        ],
        "temperature": 0,
    }
    request = ChatRequest.parse(body)
    raw = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
    content = json.dumps(body).encode()

    async def baseline() -> None:
        resp = await raw.post(
            f"{url}/chat/completions", content=content, headers={"content-type": "application/json"}
        )
        json.loads(resp.content)

    model = OpenAICompatible(base_url=url, model="gpt-4o-mini")

    async def fast() -> None:
        await model.complete_raw(body)

    async def typed() -> None:
        await model.complete(request)

    results: dict[str, tuple[float, float]] = {}
    for name, fn in (("baseline httpx", baseline), ("complete_raw", fast), ("complete", typed)):
        await _drive(fn, min(200, total), concurrency)  # warm up the pools
        results[name] = await _drive(fn, total, concurrency)
    await raw.aclose()
    await model.aclose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    url = parent.recv()
    try:
        results = asyncio.run(_bench(url, args.requests, args.concurrency))
    finally:
        parent.send("stop")
        proc.join(timeout=10)
    base_rps, base_cpu = results["baseline httpx"]
    print(f"{args.requests} requests, concurrency {args.concurrency}, upstream in a child process")
    print("client CPU per request is the steadier figure on a shared machine")
    print(f"{'path':<16} {'req/s':>8} {'x':>6} {'client CPU us/req':>18} {'x':>6}")
    for name, (rps, cpu) in results.items():
        print(f"{name:<16} {rps:>8.0f} {rps / base_rps:>6.2f} {cpu:>18.0f} {cpu / base_cpu:>6.2f}")


if __name__ == "__main__":
    main()
