"""What the gateway adds: the same loopback upstream called directly and through the gateway.

Three processes, so no two share a GIL:

- a minimal raw-asyncio upstream (a fixed chat completion for every POST, HTTP/1.1 keep-alive),
- the gateway, once per ``--variants`` name (``smallfleet gateway``: tracing on, SQLite store,
  redaction on): by default as it runs (``gc.freeze`` at start-up, the trace writer handing the
  interpreter back between traces; ``--offload``: redaction in a child process too) and the
  untuned baseline beside it (neither: the gateway before issue 20; ``--no-baseline`` skips it),
- this script: a raw-asyncio HTTP/1.1 keep-alive client (so the client is not the bottleneck).

At concurrency 1 and 64 it sends the same requests to the upstream directly, then
through each gateway, and prints the added latency (p50/p99, ms) and the requests
per second through the gateway. Then it stops the gateways with SIGTERM and checks
that every request that got a 200 has its trace in the store (zero lost). The
last line is the figures as JSON.

At concurrency 64 in a closed loop every request waits for the 63 others
(latency = concurrency / throughput), so the added latency there is queueing;
the last run is open-loop (a fixed schedule at a fraction of the measured
maximum, over 64 connections) and shows what the gateway adds below saturation.

``--apis chat,responses,messages`` measures the APIs instead: one gateway (as it ships), the same
upstream and the same load, the same request sent as a chat completion, as a Responses API request
(``/v1/responses``) and as an Anthropic Messages request (``/v1/messages``), both translated onto the
chat path at the edge. It prints each API's added latency and gateway CPU per request, and its ratio
to chat completions' (the target: within 20%, a ratio of at most 1.20).

Run:  python benchmarks/gateway_overhead.py [--requests 4000] [--requests-c1 1000] [--paced-fraction 0.3]
      [--rounds 1] [--variants untuned,gateway] [--no-baseline] [--offload]
      python benchmarks/gateway_overhead.py --apis chat,responses,messages [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Classify the ticket: billing, technical or sales."},
        {"role": "user", "content": "My invoice for March was charged twice, please refund one."},
    ],
    "temperature": 0,
}

#: The same request in each API the gateway serves (``--apis``): the same model, system prompt, user
#: message, temperature and output limit, so each becomes the same chat request on the chat path.
_SYSTEM, _USER = BODY["messages"][0]["content"], BODY["messages"][1]["content"]  # type: ignore[index]
API_REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {**BODY, "max_tokens": 16}),
    "responses": (
        "/v1/responses",
        {
            "model": "gpt-4o-mini",
            "instructions": _SYSTEM,
            "input": _USER,
            "temperature": 0,
            "max_output_tokens": 16,
        },
    ),
    "messages": (
        "/v1/messages",
        {
            "model": "gpt-4o-mini",
            "system": _SYSTEM,
            "messages": [{"role": "user", "content": _USER}],
            "temperature": 0,
            "max_tokens": 16,
        },
    ),
}

ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "billing"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 38, "completion_tokens": 1, "total_tokens": 39},
}


# ---------------------------------------------------------------- the raw upstream (child process)


def _upstream(port_out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    body = json.dumps(ANSWER).encode()
    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                n = _content_length(self.buf[:end])
                if len(self.buf) < end + 4 + n:
                    return
                self.buf = self.buf[end + 4 + n :]
                self.t.write(response)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", 0, backlog=4096)
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# ---------------------------------------------------------------- the raw client


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end]
        n = _content_length(head)
        if len(self.buf) < end + 4 + n:
            return
        body = self.buf[end + 4 : end + 4 + n]
        self.buf = self.buf[end + 4 + n :]
        status = int(head[9:12])
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, head, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def request(self, raw: bytes) -> tuple[int, bytes, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.t.write(raw)
        return await self.waiter


def _trace_id(head: bytes) -> str | None:
    for line in head.split(b"\r\n"):
        if line[:22].lower() == b"x-smallfleet-trace-id:":
            return line[22:].strip().decode()
    return None


def _raw_request(path: str = "/v1/chat/completions", body: dict[str, Any] = BODY) -> bytes:
    """The bytes of one POST of ``body`` to ``path`` (HTTP/1.1, keep-alive)."""
    data = json.dumps(body).encode()
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer x\r\ncontent-length: " + str(len(data)).encode() + b"\r\n\r\n" + data
    )


async def _run(
    port: int, total: int, concurrency: int, rate: float | None = None, raw: bytes | None = None
) -> tuple[list[float], float, list[str], int]:
    """(latencies in s, wall seconds, trace ids of the 200s, failures).

    ``rate`` set: requests are started on a fixed schedule (open loop, ``rate`` per
    second over the connections), and latency counts from the scheduled time. ``raw``: the
    request's bytes (default: :data:`BODY` as a chat completion).
    """
    loop = asyncio.get_running_loop()
    raw = raw if raw is not None else _raw_request()
    conns = [(await loop.create_connection(_Conn, "127.0.0.1", port))[1] for _ in range(concurrency)]
    latencies: list[float] = []
    ids: list[str] = []
    failures = 0
    left = total

    async def worker(conn: _Conn) -> None:
        nonlocal left, failures
        while left > 0:
            i = total - left
            left -= 1
            t0 = time.perf_counter()
            if rate is not None:
                due = start + i / rate
                if due > t0:
                    await asyncio.sleep(due - t0)
                t0 = due
            status, head, _ = await conn.request(raw)
            latencies.append(time.perf_counter() - t0)
            if status == 200:
                tid = _trace_id(head)
                if tid:
                    ids.append(tid)
            else:
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    wall = time.perf_counter() - start
    for c in conns:
        c.t.close()
    return latencies, wall, ids, failures


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the gateway exited:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    sys.exit("the gateway did not start")


#: A gateway process: ``smallfleet gateway`` itself (argv[3:]), its ``serve`` as argv[1] says, with
#: its garbage-collection pauses written to argv[2] as JSON at exit. Modes (``--variants``):
#: ``gateway`` (``serve()`` as shipped: ``gc.freeze``, the trace writer's ``sleep(0)`` between traces),
#: ``untuned`` (neither: the gateway before issue 20), ``freeze`` (``gc.freeze`` alone), ``offload``
#: (``serve(offload=True)``) and ``switch1ms`` (as shipped plus ``sys.setswitchinterval(0.001)``,
#: measured and dropped).
_LAUNCH = """
import atexit, functools, gc, json, sys, time
import smallfleet.gateway.server as server
from smallfleet.gateway.recorder import Recorder
mode, stats_path, sys.argv = sys.argv[1], sys.argv[2], ["smallfleet", *sys.argv[3:]]
server.serve = functools.partial(server.serve, tune=mode != "untuned", offload=mode == "offload")
Recorder.yield_between_traces = mode not in ("untuned", "freeze")
if mode == "switch1ms":
    sys.setswitchinterval(0.001)
pauses, started = {0: [], 1: [], 2: []}, [0.0]
def timed(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        pauses[info["generation"]].append(time.perf_counter() - started[0])
gc.callbacks.append(timed)
atexit.register(lambda: open(stats_path, "w").write(json.dumps(pauses)))
from smallfleet.cli import main
main()
"""

#: ``--variants`` names: the gateway's mode in :data:`_LAUNCH`.
VARIANTS = ("untuned", "freeze", "gateway", "offload", "switch1ms")


def _start_gateway(
    tmp: Path, name: str, up_port: int, mode: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """(process, port, trace database) of a gateway serving in front of the upstream."""
    db = tmp / f"traces-{name}.db"
    cfg = tmp / f"smallfleet-{name}.yaml"
    cfg.write_text(
        "models:\n"
        f"  gpt-4o-mini: {{backend: openai, base_url: 'http://127.0.0.1:{up_port}/v1', max_retries: 0}}\n"
        f"store: {{url: 'sqlite:///{db}'}}\n"
        f"gateway: {{dead_letter_path: '{tmp / f'dead-{name}.jsonl'}'}}\n"
    )
    port = _free_port()
    log = tmp / f"gateway-{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *_python(name),
                "-c",
                _LAUNCH,
                mode,
                str(tmp / f"gc-{name}.json"),
                "--config",
                str(cfg),
                "gateway",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    _wait_up(port, proc, log)
    return proc, port, db


def _wait_idle(ports: list[int], timeout: float = 60.0) -> None:
    """Until every gateway's trace queue is empty (its writer would otherwise compete for the CPU)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            if b'"trace_queue_depth":0' in answer:
                break
            time.sleep(0.05)


#: (name, port, the gateway's process or None for the upstream itself, the request's bytes).
_Target = tuple[str, int, "subprocess.Popen[bytes] | None", bytes]


def _measure(
    targets: list[_Target],
    label: str,
    conc: int,
    n: int,
    rate: float | None,
    rounds: int,
    ids: dict[str, list[str]],
) -> dict[str, dict[str, Any]]:
    """One phase for every target, ``rounds`` times (each round in another order): per target the
    p50/p99 of all rounds' latencies (ms), the median req/s and gateway CPU µs a request, failures.
    Trace ids of the 200s are added to ``ids[name]`` (for a name in ``ids``)."""
    ports = sorted({port for _, port, proc, _ in targets if proc is not None})
    samples: dict[str, list[tuple[list[float], float, int, float]]] = {t[0]: [] for t in targets}
    for r in range(rounds):
        # Each round in another order: on a shared machine the load drifts within a run.
        for name, port, proc, raw in targets[r % len(targets) :] + targets[: r % len(targets)]:
            print(f"  {label} #{r + 1}: {n} requests {name} ...", file=sys.stderr, flush=True)
            _wait_idle(ports)  # no gateway still writing traces
            _, _, got, _ = asyncio.run(_run(port, min(300, n), conc, raw=raw))  # warm up
            cpu0 = _cpu(proc.pid) if proc else 0.0
            lat, wall, got2, failed = asyncio.run(_run(port, n, conc, rate, raw=raw))
            if name in ids:
                ids[name] += got + got2
            cpu = (_cpu(proc.pid) - cpu0) / n * 1e6 if proc else 0.0
            samples[name].append((lat, n / wall, failed, cpu))
    result: dict[str, dict[str, Any]] = {}
    for name, runs in samples.items():
        lat = [x for run in runs for x in run[0]]
        result[name] = {
            "p50": _pct(lat, 0.5),
            "p99": _pct(lat, 0.99),
            "rps": statistics.median(run[1] for run in runs),
            "failed": sum(run[2] for run in runs),
            "gw_cpu_us": statistics.median(run[3] for run in runs),
        }
    return result


def _compare_apis(args: argparse.Namespace, up_port: int, tmp: Path) -> int:
    """``--apis``: one gateway, the same request in each API, same upstream and load; traces lost."""
    apis = [a.strip() for a in args.apis.split(",") if a.strip()]
    unknown = sorted(set(apis) - set(API_REQUESTS))
    if unknown or "chat" not in apis:
        sys.exit(f"--apis: {unknown or 'chat missing'}; choose from {', '.join(API_REQUESTS)}, chat included")
    proc, port, db = _start_gateway(tmp, "apis", up_port, "gateway")
    raws = {a: _raw_request(*API_REQUESTS[a]) for a in apis}
    targets: list[_Target] = [("direct", up_port, None, raws["chat"])]
    targets += [(a, port, proc, raws[a]) for a in apis]
    ids: dict[str, list[str]] = {a: [] for a in apis}
    rows: list[tuple[str, dict[str, dict[str, Any]]]] = []
    phases: list[tuple[str, int, int, float | None]] = [
        ("c=1", 1, args.requests_c1, None),
        (f"c={args.concurrency}", args.concurrency, args.requests, None),
    ]
    try:
        while phases:
            label, conc, n, rate = phases.pop(0)
            result = _measure(targets, label, conc, n, rate, args.rounds, ids)
            rows.append((label, result))
            if rate is None and conc > 1 and args.paced_fraction > 0:
                paced = round(result["chat"]["rps"] * args.paced_fraction)
                phases.append((f"c={conc}@{paced}/s", conc, args.requests, float(paced)))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)

    from smallfleet.store.trace_store import TraceStore

    store = TraceStore(f"sqlite:///{db}", create=False)
    stored = {t.id for t in store.iter_traces()}
    store.close()
    lost = {a: sum(i not in stored for i in ids[a]) for a in apis}

    print(
        f"gateway overhead by API ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end;"
    )
    print(" one gateway as `smallfleet gateway` runs, the same upstream, load and request in each API)")
    w = max(len(r[0]) for r in rows)
    print(
        f"{'run':<{w}} {'path':<10} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} ", end=""
    )
    print(f"{'req/s':>8} {'gw CPU us/req':>14}")
    summary: dict[str, Any] = {}
    for label, res in rows:
        d = res["direct"]
        print(f"{label:<{w}} {'direct':<10} {d['p50']:>8.2f} {d['p99']:>8.2f} {'':>21} {d['rps']:>8.0f}")
        for a in apis:
            r = res[a]
            added = (r["p50"] - d["p50"], r["p99"] - d["p99"])
            print(
                f"{label:<{w}} {a:<10} {r['p50']:>8.2f} {r['p99']:>8.2f} {added[0]:>10.2f} {added[1]:>10.2f} "
                f"{r['rps']:>8.0f} {r['gw_cpu_us']:>14.0f}"
            )
            summary.setdefault(a, {})[label] = {
                "added_p50_ms": round(added[0], 3),
                "added_p99_ms": round(added[1], 3),
                "rps": round(r["rps"], 1),
                "gw_cpu_us": round(r["gw_cpu_us"]),
            }
    for label, _ in rows:
        base = summary["chat"][label]
        for a in apis:
            if a == "chat":
                continue
            mine = summary[a][label]
            # None where chat's figure is not above 0 (an open-loop p99 can be below the direct one)
            ratio = {
                k: round(mine[k] / base[k], 3) if base[k] > 0 else None
                for k in ("added_p50_ms", "added_p99_ms", "gw_cpu_us", "rps")
            }
            summary[a][label]["vs_chat"] = ratio
            shown = {k: "n/a" if v is None else f"x{v:.2f}" for k, v in ratio.items()}
            print(
                f"{a} vs chat {label}: added p50 {shown['added_p50_ms']}, added p99 {shown['added_p99_ms']}, "
                f"gateway CPU/req {shown['gw_cpu_us']}, req/s {shown['rps']} "
                "(target: added latency within 20% of chat's, x1.20)"
            )
    failed = sum(res[a]["failed"] for _, res in rows for a in apis)
    print(f"exit code {code}; requests that failed: {failed}")
    for a in apis:
        print(
            f"traces ({a}): {len(ids[a])} answered with 200, "
            f"{len(ids[a]) - lost[a]} in the store, {lost[a]} lost"
        )
    summary["lost"] = lost
    summary["failed"] = failed
    summary["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(summary))
    return sum(lost.values()) + failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=4000, help="requests per run at concurrency 64")
    ap.add_argument("--requests-c1", type=int, default=1000, help="requests per run at concurrency 1")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument(
        "--paced-fraction",
        type=float,
        default=0.3,
        help="then an open-loop run at this fraction of the gateway's max req/s (0: skip)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each phase this many times, each round in another order; report the median "
        "req/s and CPU, the percentiles of all rounds' latencies (>1 on a shared machine)",
    )
    ap.add_argument(
        "--variants",
        default="untuned,gateway",
        help="gateways measured side by side, in this order (comma-separated): untuned (before "
        "issue 20), freeze (gc.freeze alone), gateway (serve(), as `smallfleet gateway` runs), "
        "offload (serve(offload=True)), switch1ms (gateway plus a 1 ms switch interval, dropped)",
    )
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the untuned gateway (the same as --variants gateway)",
    )
    ap.add_argument(
        "--apis",
        default="",
        help="compare APIs instead of gateways (comma-separated, chat included): chat, responses, "
        "messages; one gateway, the same upstream, load and request in each API",
    )
    ap.add_argument(
        "--offload",
        action="store_true",
        help="the tuned gateway redacts in a child process (serve(offload=True))",
    )
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    up = ctx.Process(target=_upstream, args=(child,), daemon=True)
    up.start()
    up_port = parent.recv()

    tmp = Path(tempfile.mkdtemp(prefix="sf-gw-bench-"))
    if args.apis:
        try:
            bad = _compare_apis(args, up_port, tmp)
        finally:
            parent.close()
            up.kill()
        if bad:
            sys.exit(1)
        return
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.no_baseline:
        names = [n for n in names if n != "untuned"]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or "gateway" not in names:
        why = unknown or "gateway missing"
        ap.error(f"--variants: {why}; choose from {', '.join(VARIANTS)}, gateway included")
    gateways: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    ids: dict[str, list[str]] = {n: [] for n in names}
    rows: list[tuple[str, dict[str, dict[str, Any]]]] = []
    codes: dict[str, int] = {}
    try:
        for n in names:
            mode = "offload" if n == "gateway" and args.offload else n
            gateways[n] = _start_gateway(tmp, n, up_port, mode)
        phases: list[tuple[str, int, int, float | None]] = [
            ("c=1", 1, args.requests_c1, None),
            (f"c={args.concurrency}", args.concurrency, args.requests, None),
        ]
        chat = _raw_request()
        targets: list[_Target] = [("direct", up_port, None, chat)]
        targets += [(g, gateways[g][1], gateways[g][0], chat) for g in names]
        while phases:
            label, conc, n, rate = phases.pop(0)
            result = _measure(targets, label, conc, n, rate, args.rounds, ids)
            rows.append((label, result))
            if rate is None and conc > 1 and args.paced_fraction > 0:
                paced = round(result["gateway"]["rps"] * args.paced_fraction)
                phases.append((f"c={conc}@{paced}/s", conc, args.requests, float(paced)))
    finally:
        for proc, _, _ in gateways.values():
            proc.send_signal(signal.SIGTERM)
        for n, (proc, _, _) in gateways.items():
            codes[n] = proc.wait(timeout=120)
        parent.close()
        up.kill()

    from smallfleet.store.trace_store import TraceStore

    lost: dict[str, int] = {}
    for n in names:
        store = TraceStore(f"sqlite:///{gateways[n][2]}", create=False)
        stored = {t.id for t in store.iter_traces()}
        store.close()
        lost[n] = sum(i not in stored for i in ids[n])

    print(f"gateway overhead ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end;")
    print(" upstream, gateways and client are separate processes on this machine;")
    print(" untuned: the gateway before issue 20; gateway: serve(), as `smallfleet gateway` runs)")
    w = max(len(r[0]) for r in rows)
    print(f"{'run':<{w}} {'path':<16} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'gw CPU us/req':>14}")
    summary: dict[str, Any] = {}
    for label, res in rows:
        d = res["direct"]
        print(f"{label:<{w}} {'direct':<16} {d['p50']:>8.2f} {d['p99']:>8.2f} {d['rps']:>8.0f}")
        for g in names:
            r = res[g]
            print(
                f"{label:<{w}} {g:<16} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['rps']:>8.0f} "
                f"{r['gw_cpu_us']:>14.0f}"
            )
        for g in names:
            r = res[g]
            added = (r["p50"] - d["p50"], r["p99"] - d["p99"])
            summary.setdefault(g, {})[label] = {
                "added_p50_ms": round(added[0], 3),
                "added_p99_ms": round(added[1], 3),
                "rps": round(r["rps"], 1),
                "gw_cpu_us": round(r["gw_cpu_us"]),
            }
            print(f"{label:<{w}} {'added ' + g:<16} {added[0]:>8.2f} {added[1]:>8.2f}")
    failed = sum(res[g]["failed"] for _, res in rows for g in names)
    print(f"exit codes {codes}; requests that failed: {failed}")
    for g in names:
        kept = len(ids[g]) - lost[g]
        print(f"traces ({g}): {len(ids[g])} answered with 200, {kept} in the store, {lost[g]} lost")
    closed = rows[1][1]["gateway"] if len(rows) > 1 else rows[0][1]["gateway"]
    print(f"max through the gateway: {closed['rps']:.0f} req/s (target >= 1500)")
    for label, res in rows:
        d, g = res["direct"], res["gateway"]
        line = f"added latency {label}: p50 {g['p50'] - d['p50']:.2f} ms (target < 1), "
        line += f"p99 {g['p99'] - d['p99']:.2f} ms (target < 5)"
        if "untuned" in res:
            u = res["untuned"]
            line += f"; untuned p50 {u['p50'] - d['p50']:.2f} ms, p99 {u['p99'] - d['p99']:.2f} ms"
        print(line)
    if len(names) > 1:  # the variants against the first, same run: the only comparison a busy machine allows
        base = names[0]
        for label, res in rows:
            b = res[base]
            parts = []
            for g in names[1:]:
                cpu = res[g]["gw_cpu_us"] / max(b["gw_cpu_us"], 1e-9)
                parts.append(f"{g} req/s x{res[g]['rps'] / b['rps']:.2f}, CPU/req x{cpu:.2f}")
            print(f"vs {base} {label}: {'; '.join(parts)}")
    print(f"traces lost: {sum(lost.values())} (target 0)")
    for g in names:
        gc_file = tmp / f"gc-{g}.json"
        if not gc_file.exists():
            continue
        pauses = json.loads(gc_file.read_text())
        parts = []
        for gen, values in sorted(pauses.items()):
            v = sorted(values)
            if v:
                parts.append(f"gen{gen} {len(v)}x, max {v[-1] * 1000:.1f} ms, total {sum(v) * 1000:.0f} ms")
        summary[g]["gc"] = {gen: [len(v), round(max(v, default=0) * 1000, 2)] for gen, v in pauses.items()}
        print(f"garbage collections ({g}): {'; '.join(parts)}")
    summary["lost"] = lost
    summary["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(summary))
    if any(lost.values()):
        sys.exit(1)


def _python(name: str) -> list[str]:
    """The interpreter for a gateway; SF_BENCH_PROFILE=FILE runs it under cProfile (FILE.NAME)."""
    prof = os.environ.get("SF_BENCH_PROFILE")
    return [sys.executable, "-m", "cProfile", "-o", f"{prof}.{name}"] if prof else [sys.executable]


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


if __name__ == "__main__":
    main()
