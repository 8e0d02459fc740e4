"""smallfleet's gateway and the LiteLLM proxy side by side, in front of the same loopback upstream.

Four processes: the raw-asyncio upstream of ``gateway_overhead.py`` (a fixed chat
completion for every POST), ``smallfleet gateway`` (as users run it: tracing on,
redaction on, SQLite store), the LiteLLM proxy (one uvicorn worker, no database,
no callbacks: it records nothing), and this script's raw-asyncio HTTP/1.1 keep-alive
client. At concurrency 1 and 64 (closed loop, like ``hey -c``) the same request goes
to the upstream directly, then through each gateway; reported: added p50 / p99 (ms,
over the direct call measured in the same run), requests per second, and the ratios
LiteLLM / smallfleet. Every smallfleet trace answered with a 200 is looked up in its
store at the end. The last line is the figures as JSON.

LiteLLM is installed with pip into a virtual environment of its own
(``~/.cache/smallfleet-bench/litellm-venv``, or ``--venv``), never the project's; it
runs with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` and telemetry off, so it makes no
network call.

    python benchmarks/gateway_vs_litellm.py   # --requests 3000 --requests-c1 1000 --litellm 'litellm[proxy]'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from gateway_overhead import _cpu, _free_port, _pct, _run, _upstream

DEFAULT_VENV = Path.home() / ".cache" / "smallfleet-bench" / "litellm-venv"

#: Environment of the LiteLLM proxy: the bundled model cost map, no telemetry, loopback unproxied.
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def install_litellm(venv: Path, spec: str) -> str:
    """The LiteLLM proxy in ``venv`` (created and installed with pip when missing); its version."""
    python = venv / "bin" / "python"
    if not (venv / "bin" / "litellm").exists():
        print(f"installing {spec} into {venv} (once) ...", file=sys.stderr, flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", spec], check=True)
    out = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, path: str) -> None:
    import socket

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"a gateway exited:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"a gateway did not start:\n{log.read_text()[-3000:]}")


def start_smallfleet(tmp: Path, up_port: int) -> tuple[subprocess.Popen[bytes], int, Path]:
    db = tmp / "traces.db"
    cfg = tmp / "smallfleet.yaml"
    cfg.write_text(
        "models:\n"
        f"  gpt-4o-mini: {{backend: openai, base_url: 'http://127.0.0.1:{up_port}/v1', max_retries: 0}}\n"
        f"store: {{url: 'sqlite:///{db}'}}\n"
        f"gateway: {{dead_letter_path: '{tmp / 'dead.jsonl'}'}}\n"
    )
    port = _free_port()
    log = tmp / "smallfleet.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
    cmd = [sys.executable, "-m", "smallfleet.cli", "--config", str(cfg), "gateway", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    _wait_ready(port, proc, log, "/healthz")
    return proc, port, db


def start_litellm(tmp: Path, venv: Path, up_port: int) -> tuple[subprocess.Popen[bytes], int]:
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{up_port}/v1\n"
        "      api_key: x\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
        "general_settings:\n"  # no key on either gateway (smallfleet's keys are off too)
        "  dangerously_permit_weak_or_unset_master_key: true\n"
    )
    port = _free_port()
    log = tmp / "litellm.log"
    env = {**os.environ, **LITELLM_ENV}
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    cmd = [
        str(venv / "bin" / "litellm"),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    _wait_ready(port, proc, log, "/health/liveliness")
    return proc, port


def measure(port: int, n: int, conc: int, pid: int | None) -> dict[str, Any]:
    asyncio.run(_run(port, min(200, n), conc))  # warm up
    cpu0 = _cpu(pid) if pid else 0.0
    lat, wall, ids, failed = asyncio.run(_run(port, n, conc))
    return {
        "p50": _pct(lat, 0.5),
        "p99": _pct(lat, 0.99),
        "rps": n / wall,
        "failed": failed,
        "cpu_us": (_cpu(pid) - cpu0) / n * 1e6 if pid else 0.0,
        "ids": ids,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="requests per run at concurrency 64")
    ap.add_argument("--requests-c1", type=int, default=1000, help="requests per run at concurrency 1")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="LiteLLM's own virtual environment")
    ap.add_argument(
        "--litellm", default="litellm[proxy]", help="what pip installs there (e.g. a pinned version)"
    )
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    version = install_litellm(args.venv, args.litellm)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    up = ctx.Process(target=_upstream, args=(child,), daemon=True)
    up.start()
    up_port = parent.recv()
    tmp = Path(tempfile.mkdtemp(prefix="sf-vs-litellm-"))
    procs: list[subprocess.Popen[bytes]] = []
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        sf, sf_port, db = start_smallfleet(tmp, up_port)
        procs.append(sf)
        ll, ll_port = start_litellm(tmp, args.venv, up_port)
        procs.append(ll)
        targets = [("direct", up_port, None), ("smallfleet", sf_port, sf.pid), ("litellm", ll_port, ll.pid)]
        for label, conc, n in (
            ("c=1", 1, args.requests_c1),
            (f"c={args.concurrency}", args.concurrency, args.requests),
        ):
            for name, port, pid in targets:
                print(f"  {label}: {n} requests {name} ...", file=sys.stderr, flush=True)
                rows.setdefault(label, {})[name] = measure(port, n, conc, pid)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=120) for p in procs]
        parent.close()
        up.kill()

    from smallfleet.store.trace_store import TraceStore

    store = TraceStore(f"sqlite:///{db}", create=False)
    stored = {t.id for t in store.iter_traces()}
    store.close()
    answered = [i for r in rows.values() for i in r["smallfleet"]["ids"]]
    lost = sum(i not in stored for i in answered)

    load = os.getloadavg()[0]
    cpu = cpu_model()
    print(
        f"smallfleet vs LiteLLM {version}: {os.cpu_count()} CPUs, {cpu}, load average {load:.1f} at the end"
    )
    print("(upstream, gateways and client are separate processes on this machine)")
    head = f"{'run':<6} {'path':<11} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}"
    print(f"{head} {'req/s':>8} {'CPU us/req':>11}")
    summary: dict[str, Any] = {"litellm_version": version, "cpu": cpu, "load_average": round(load, 2)}
    for label, res in rows.items():
        d = res["direct"]
        for name in ("direct", "smallfleet", "litellm"):
            r = res[name]
            add = "" if name == "direct" else f"{r['p50'] - d['p50']:>10.2f} {r['p99'] - d['p99']:>10.2f}"
            add = add or f"{'':>10} {'':>10}"
            cpu = f"{r['cpu_us']:>11.0f}" if name != "direct" else ""
            print(f"{label:<6} {name:<11} {r['p50']:>8.2f} {r['p99']:>8.2f} {add} {r['rps']:>8.0f} {cpu}")
        sf_r, ll_r = res["smallfleet"], res["litellm"]
        figures: dict[str, Any] = {}
        for name, r in (("smallfleet", sf_r), ("litellm", ll_r)):
            figures[name] = {
                "added_p50_ms": round(r["p50"] - d["p50"], 3),
                "added_p99_ms": round(r["p99"] - d["p99"], 3),
                "rps": round(r["rps"], 1),
                "cpu_us_per_request": round(r["cpu_us"]),
                "failed": r["failed"],
            }
        ratio = {
            "added_p50": _ratio(figures["litellm"]["added_p50_ms"], figures["smallfleet"]["added_p50_ms"]),
            "added_p99": _ratio(figures["litellm"]["added_p99_ms"], figures["smallfleet"]["added_p99_ms"]),
            "rps": _ratio(sf_r["rps"], ll_r["rps"]),
        }
        figures["litellm_over_smallfleet"] = ratio
        summary[label] = figures
        print(
            f"{label:<6} LiteLLM / smallfleet: added p50 {ratio['added_p50']:.1f}x, added p99 "
            f"{ratio['added_p99']:.1f}x; smallfleet / LiteLLM req/s {ratio['rps']:.1f}x (targets: each >= 5x)"
        )
    print(f"exit codes (smallfleet, litellm): {codes}")
    kept = len(answered) - lost
    print(f"smallfleet traces: {len(answered)} answered with 200, {kept} in the store, {lost} lost")
    summary["smallfleet_traces_lost"] = lost
    print(json.dumps(summary))
    if lost:
        sys.exit(1)


def cpu_model() -> str:
    """The CPU's model name and whether it has AVX2 / AVX512-BF16 (from /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return f"{name} ({', '.join(f for f in ('avx2', 'avx512_bf16', 'amx_tile') if f in flags) or 'no avx2'})"


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b > 0 else float("inf")


if __name__ == "__main__":
    main()
