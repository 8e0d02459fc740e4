"""No loss: a gateway subprocess under load gets SIGTERM; every request that got a 200 has its trace."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gwkit import free_port

from smallfleet.store.trace_store import TraceStore
from smallfleet.testing import ScriptedUpstream

TOTAL, CONCURRENCY, SIGTERM_AFTER = 2000, 64, 600


async def load(base: str, proc: subprocess.Popen[bytes]) -> tuple[list[str], int]:
    """Send TOTAL requests, CONCURRENCY at a time; SIGTERM the gateway after SIGTERM_AFTER answers."""
    ok: list[str] = []
    failed = 0
    done = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(TOTAL):
        queue.put_nowait(i)
    body = {"model": "big", "messages": [{"role": "user", "content": "hello"}]}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal failed, done
            while not queue.empty():
                queue.get_nowait()
                try:
                    r = await client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    failed += 1
                else:
                    if r.status_code == 200:
                        ok.append(r.headers["x-smallfleet-trace-id"])
                    else:
                        failed += 1
                done += 1
                if done == SIGTERM_AFTER:
                    proc.send_signal(signal.SIGTERM)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return ok, failed


@pytest.mark.slow
def test_sigterm_mid_load_loses_no_trace(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    port = free_port()
    with ScriptedUpstream() as up:
        cfg = tmp_path / "smallfleet.yaml"
        cfg.write_text(
            f"models:\n  big: {{backend: openai, base_url: '{up.url}', max_retries: 0}}\n"
            f"store: {{url: 'sqlite:///{db}'}}\n"
            "gateway: {flush_interval_ms: 200}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
        log_path = tmp_path / "gateway.log"
        log_file = log_path.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "smallfleet.cli", "--config", str(cfg), "gateway", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(base + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "gateway did not come up"
                time.sleep(0.1)
            ok, failed = asyncio.run(load(base, proc))
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            log_file.close()
    log = log_path.read_text()
    assert proc.returncode == 0, log
    assert len(ok) >= SIGTERM_AFTER and failed > 0, (len(ok), failed)  # the SIGTERM did land mid-load
    store = TraceStore(f"sqlite:///{db}")
    try:
        stored = {t.id: t for t in store.iter_traces()}
    finally:
        store.close()
    missing = [tid for tid in ok if tid not in stored]
    assert not missing, f"{len(missing)} of {len(ok)} answered requests have no trace"
    assert all(stored[tid].status == "ok" for tid in ok)
    assert "traces written" in log
