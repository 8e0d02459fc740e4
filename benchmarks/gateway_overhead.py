"""What the gateway adds: the same loopback upstream called directly and through the gateway.

Three processes, so no two share a GIL:

- a minimal raw-asyncio upstream (a fixed chat completion for every POST, HTTP/1.1 keep-alive),
- the gateway (``smallfleet gateway``, tracing on, SQLite store, redaction on),
- this script: a raw-asyncio HTTP/1.1 keep-alive client (so the client is not the bottleneck).

At concurrency 1 and 64 it sends the same requests to the upstream directly, then
through the gateway, and prints the added latency (p50/p99, ms) and the requests
per second through the gateway. Then it stops the gateway with SIGTERM and checks
that every request that got a 200 has its trace in the store (zero lost).

At concurrency 64 in a closed loop every request waits for the 63 others
(latency = concurrency / throughput), so the added latency there is queueing;
the last run is open-loop (a fixed schedule at a fraction of the measured
maximum, over 64 connections) and shows what the gateway adds below saturation.

Run:  python benchmarks/gateway_overhead.py [--requests 4000] [--requests-c1 1000] [--paced-fraction 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
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


async def _run(
    port: int, total: int, concurrency: int, rate: float | None = None
) -> tuple[list[float], float, list[str], int]:
    """(latencies in s, wall seconds, trace ids of the 200s, failures).

    ``rate`` set: requests are started on a fixed schedule (open loop, ``rate`` per
    second over the connections), and latency counts from the scheduled time.
    """
    loop = asyncio.get_running_loop()
    body = json.dumps(BODY).encode()
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer x\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
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
                s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    sys.exit("the gateway did not start")


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
    db = tmp / "traces.db"
    cfg = tmp / "smallfleet.yaml"
    cfg.write_text(
        "models:\n"
        f"  gpt-4o-mini: {{backend: openai, base_url: 'http://127.0.0.1:{up_port}/v1', max_retries: 0}}\n"
        f"store: {{url: 'sqlite:///{db}'}}\n"
    )
    gw_port = _free_port()
    log = tmp / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
    with log.open("wb") as out:
        gw = subprocess.Popen(
            [*_python(), "-m", "smallfleet.cli", "--config", str(cfg), "gateway", "--port", str(gw_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    all_ids: list[str] = []
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    try:
        _wait_up(gw_port, gw, log)
        phases: list[tuple[str, int, int, float | None]] = [
            ("c=1", 1, args.requests_c1, None),
            (f"c={args.concurrency}", args.concurrency, args.requests, None),
        ]
        while phases:
            label, conc, n, rate = phases.pop(0)
            result: dict[str, dict[str, Any]] = {}
            for name, port in (("direct", up_port), ("gateway", gw_port)):
                print(f"  {label}: {n} requests {name} ...", file=sys.stderr, flush=True)
                _, _, ids, _ = asyncio.run(_run(port, min(300, n), conc))  # warm up
                all_ids += ids
                cpu0 = _cpu(gw.pid)
                lat, wall, ids, failed = asyncio.run(_run(port, n, conc, rate))
                all_ids += ids
                result[name] = {
                    "p50": _pct(lat, 0.5),
                    "p99": _pct(lat, 0.99),
                    "rps": n / wall,
                    "failed": failed,
                    "gw_cpu_us": (_cpu(gw.pid) - cpu0) / n * 1e6,
                }
            rows.append((label, result["direct"], result["gateway"]))
            if rate is None and conc > 1 and args.paced_fraction > 0:
                paced = round(result["gateway"]["rps"] * args.paced_fraction)
                phases.append((f"c={conc}@{paced}/s", conc, args.requests, float(paced)))
    finally:
        gw.send_signal(signal.SIGTERM)
        code = gw.wait(timeout=120)
        parent.close()
        up.kill()

    from smallfleet.store.trace_store import TraceStore

    store = TraceStore(f"sqlite:///{db}", create=False)
    stored = {t.id for t in store.iter_traces()}
    store.close()
    lost = [i for i in all_ids if i not in stored]

    print(f"gateway overhead ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end;")
    print(" upstream, gateway and client are separate processes on this machine)")
    w = max(len(r[0]) for r in rows)
    print(f"{'run':<{w}} {'path':<8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'gw CPU us/req':>14}")
    for label, d, g in rows:
        print(f"{label:<{w}} {'direct':<8} {d['p50']:>8.2f} {d['p99']:>8.2f} {d['rps']:>8.0f}")
        print(
            f"{label:<{w}} {'gateway':<8} {g['p50']:>8.2f} {g['p99']:>8.2f} {g['rps']:>8.0f} "
            f"{g['gw_cpu_us']:>14.0f}"
        )
        print(
            f"{label:<{w}} {'added':<8} {g['p50'] - d['p50']:>8.2f} {g['p99'] - d['p99']:>8.2f} "
            f"{g['rps'] / d['rps']:>7.2f}x"
        )
    failed = sum(g["failed"] for _, _, g in rows)
    kept = len(all_ids) - len(lost)
    print(f"gateway exit code {code}; requests that failed: {failed}")
    print(f"traces: {len(all_ids)} answered with 200, {kept} in the store, {len(lost)} lost")
    closed = rows[1][2] if len(rows) > 1 else rows[0][2]
    added = {label: (g["p50"] - d["p50"], g["p99"] - d["p99"]) for label, d, g in rows}
    print(f"max through the gateway: {closed['rps']:.0f} req/s (target >= 1500)")
    for label, (p50, p99) in added.items():
        print(f"added latency {label}: p50 {p50:.2f} ms (target < 1), p99 {p99:.2f} ms (target < 5)")
    print(f"traces lost: {len(lost)} (target 0)")
    if lost:
        sys.exit(1)


def _python() -> list[str]:
    """The interpreter for the gateway; SF_BENCH_PROFILE=FILE runs it under cProfile."""
    prof = os.environ.get("SF_BENCH_PROFILE")
    return [sys.executable, "-m", "cProfile", "-o", prof] if prof else [sys.executable]


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


if __name__ == "__main__":
    main()
