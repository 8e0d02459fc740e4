"""Budgets held at admission, settled at completion, atomic across gateways; keys re-read without restart."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from gwkit import free_port, model_cfg

from smallfleet.config import GatewayKey, load_settings
from smallfleet.errors import BudgetExceeded
from smallfleet.gateway.app import create_app
from smallfleet.gateway.auth import KeyRing, estimate_usd, hash_key
from smallfleet.gateway.server import BackgroundServer
from smallfleet.store.budgets import Ledger, MemoryLedger, SpendLedger
from smallfleet.store.pricing import PriceTable
from smallfleet.store.records import TraceRecord
from smallfleet.store.trace_store import TraceStore
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatRequest, ChatResponse, Usage

GOOD, OTHER = "sf-good-key", "sf-other-key"
DAY = int(time.time() // 86400)


# ---------------------------------------------------------------- the ledgers


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Ledger]]:
    """Makes ledgers on one shared book: each store-backed one on its own engine, as another process would."""
    if request.param == "memory":
        book = MemoryLedger()
        yield lambda: book
        return
    url = (
        f"sqlite:///{tmp_path / 'traces.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_schema")
    )
    stores: list[TraceStore] = []

    def make() -> Ledger:
        stores.append(TraceStore(url))
        return SpendLedger(stores[-1].engine)

    yield make
    for s in stores:
        s.close()


def test_reserve_admits_while_spent_plus_reserved_is_under_the_budget(ledgers: Callable[[], Ledger]) -> None:
    ledger = ledgers()
    assert ledger.usage("k", DAY) == (0.0, 0.0)
    assert ledger.reserve("k", DAY, 0.25, 1.0)
    assert ledger.reserve("k", DAY, 0.5, 1.0)
    assert ledger.reserve("k", DAY, 0.5, 1.0)  # 0.75 held < 1.0: admitted, and may end over by one estimate
    assert not ledger.reserve("k", DAY, 0.01, 1.0)  # 1.25 held
    assert ledger.usage("k", DAY) == (0.0, 1.25)
    ledger.settle("k", DAY, 0.5, 0.125)
    ledger.settle("k", DAY, 0.5, 0.0)  # failed: nothing charged
    assert ledger.usage("k", DAY) == (0.125, 0.25)
    assert ledger.reserve("k", DAY, 0.25, 1.0)
    ledger.settle("k", DAY, 0.25, 0.25)
    ledger.settle("k", DAY, 0.25, 0.25)
    assert ledger.usage("k", DAY) == (0.625, 0.0)
    assert ledger.usage("k", DAY - 1) == (0.0, 0.0) and ledger.usage("other", DAY) == (0.0, 0.0)
    assert not ledger.reserve("k", DAY, 0.0, 0.0)  # a zero budget admits nothing


def test_bad_amounts_never_poison_the_row(ledgers: Callable[[], Ledger]) -> None:
    ledger = ledgers()
    assert ledger.reserve("k", DAY, float("nan"), 1.0)
    ledger.settle("k", DAY, 5.0, float("inf"))  # more released than held, a cost that is not a number
    assert ledger.usage("k", DAY) == (0.0, 0.0)
    assert ledger.reserve("k", DAY, 0.5, 1.0)


def test_the_last_slot_goes_to_one_racer_only(ledgers: Callable[[], Ledger]) -> None:
    """Two books' worth of connections (two processes on a store), 16 threads each, racing for 8 slots."""
    books = [ledgers(), ledgers()]
    admitted: list[bool] = []
    start = threading.Barrier(32)

    def racer(ledger: Ledger) -> None:
        start.wait()
        for _ in range(4):
            admitted.append(ledger.reserve("k", DAY, 0.125, 1.0))

    threads = [threading.Thread(target=racer, args=(books[i % 2],)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(admitted) == 128
    assert sum(admitted) == 8  # 0.125 * 8 reaches 1.0 exactly: never a ninth
    assert books[0].usage("k", DAY) == (0.0, 1.0)


def test_a_new_day_row_starts_from_the_days_traces(tmp_path: Path) -> None:
    store = TraceStore(f"sqlite:///{tmp_path / 'traces.db'}")
    try:
        now = DAY * 86400.0 + 10
        store.write_traces(
            [
                TraceRecord(key_id="agent", cost_usd=0.25, created_at=now),
                TraceRecord(key_id="agent", cost_usd=0.5, created_at=now + 1),
                TraceRecord(key_id="agent", cost_usd=None, created_at=now + 2, status="error"),
                TraceRecord(key_id="agent", cost_usd=4.0, created_at=now - 86400),  # yesterday
                TraceRecord(key_id="other", cost_usd=8.0, created_at=now),
            ]
        )
        ledger = SpendLedger(store.engine)
        assert ledger.reserve("agent", DAY, 0.0, 10.0)
        assert ledger.usage("agent", DAY) == (0.75, 0.0)
        # the row exists now: later traces (the ledger's own requests) are not counted twice
        store.write_traces([TraceRecord(key_id="agent", cost_usd=1.0, created_at=now + 3)])
        again = SpendLedger(store.engine)  # as a restarted gateway
        assert again.reserve("agent", DAY, 0.0, 10.0)
        assert again.spent("agent", DAY) == 0.75
    finally:
        store.close()


# ---------------------------------------------------------------- the key ring


def budget_key(budget: float | None = 1.0) -> GatewayKey:
    return GatewayKey(name="agent", sha256=hash_key(GOOD), daily_budget_usd=budget)


def test_reserve_refuses_with_what_was_spent_and_settles_once() -> None:
    ring = KeyRing([budget_key()])
    assert ring.reserve(None, 5.0) is None  # keys off
    assert ring.reserve(budget_key(None), 5.0) is None  # no budget
    first = ring.reserve(budget_key(), 0.75)
    assert first is not None
    second = ring.reserve(budget_key(), 0.75)
    with pytest.raises(BudgetExceeded, match=r"requests in flight hold \$1\.5000"):
        ring.reserve(budget_key(), 0.75)
    ring.settle(first, 0.5)
    ring.settle(first, 0.5)  # a second settlement of one reservation is ignored
    ring.settle(second, None)  # failed before anything was served
    ring.settle(None, 1.0)
    assert ring.reserve(budget_key(), 0.75) is not None
    with pytest.raises(BudgetExceeded) as e:
        ring.reserve(budget_key(), 0.75)
    assert e.value.status_code == 429 and e.value.code == "budget_exceeded"
    assert "Key 'agent' has spent $0.5000" in e.value.message
    assert e.value.message.endswith("of its $1.00 daily budget; it resets at 00:00 UTC.")


class SlowLedger(MemoryLedger):
    """A ledger whose reservations take a while, like a busy database."""

    blocking = True

    def reserve(self, key: str, day: int, estimate_usd: float, budget_usd: float) -> bool:
        time.sleep(0.2)
        return super().reserve(key, day, estimate_usd, budget_usd)


async def test_a_request_cancelled_while_reserving_gives_its_reservation_back() -> None:
    ledger = SlowLedger()
    ring = KeyRing([budget_key()], ledger=ledger)
    task = asyncio.ensure_future(ring.areserve(budget_key(), 0.5))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ledger.usage("agent", int(time.time() // 86400)) == (0.0, 0.0)  # not landed yet
    await asyncio.sleep(0.3)  # it lands, and is released at once
    await ring.drain()
    assert ledger.usage("agent", int(time.time() // 86400)) == (0.0, 0.0)
    held = await ring.areserve(budget_key(), 0.5)
    assert held is not None and ledger.usage("agent", held.day) == (0.0, 0.5)
    ring.settle_soon(held, 0.25)
    ring.settle_soon(held, 0.25)  # once only
    await ring.drain()
    assert ledger.usage("agent", held.day) == (0.25, 0.0)


def test_estimate_is_prompt_plus_output_limit_at_the_dearest_price() -> None:
    settings = load_settings(
        env={},
        overrides={
            "models": {
                "big": model_cfg("http://127.0.0.1:1/v1", fallbacks=["dear"]),
                "dear": model_cfg("http://127.0.0.1:1/v1", price={"input": 10.0, "output": 20.0}),
                "free": {"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "no-such-model"},
            }
        },
    )
    prices = PriceTable(settings.pricing, dict(settings.models))
    request = ChatRequest.parse(
        {"model": "big", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100}
    )
    in_tokens = 10 + 4  # 40 characters, and the message's own tokens
    assert estimate_usd(request, ["big"], prices, 4096) == pytest.approx((in_tokens + 2 * 100) / 1e6)
    assert estimate_usd(request, ["big", "dear"], prices, 4096) == pytest.approx(
        (10 * in_tokens + 20 * 100) / 1e6
    )
    unbounded = ChatRequest.parse({"model": "big", "messages": [{"role": "user", "content": "x" * 40}]})
    assert estimate_usd(unbounded, ["big"], prices, 50) == pytest.approx((in_tokens + 2 * 50) / 1e6)
    assert estimate_usd(request, ["free"], prices, 4096) == 0.0
    assert estimate_usd(request, ["big"], None, 4096) == 0.0


def test_a_sequential_client_streaming_is_charged_what_each_call_cost(
    start_gateway: Callable[..., Any], upstream: ScriptedUpstream
) -> None:
    """Each answer is settled before the next request is admitted, streamed or not; failures cost nothing."""
    key = {"name": "agent", "sha256": hash_key(GOOD), "daily_budget_usd": 0.000019}
    gw = start_gateway({"models": {"big": model_cfg(upstream.url)}, "gateway": {"keys": [key]}})
    client = gw.client(api_key=GOOD)
    msg = [{"role": "user", "content": "hello there"}]
    upstream.push(Reply.error(400, "no"))
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="big", messages=msg)
    for _ in range(5):  # (2 + 2 * 1) / 1e6 = 4e-6 each: five fit under 1.9e-5
        stream = client.chat.completions.create(
            model="big", messages=msg, stream=True, stream_options={"include_usage": True}
        )
        assert [c for c in stream]
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="big", messages=msg, stream=True)
    assert e.value.code == "budget_exceeded" and "has spent $0.0000 of its" in e.value.message
    traces = gw.traces()
    spent, held = SpendLedger(gw.store.engine).usage("agent", int(time.time() // 86400))
    assert held == 0.0 and spent == pytest.approx(sum(t.cost_usd or 0.0 for t in traces)) == pytest.approx(
        2e-5
    )


def test_a_ledger_that_cannot_be_read_is_a_503_not_a_500(
    start_gateway: Callable[..., Any], upstream: ScriptedUpstream
) -> None:
    import sqlalchemy as sa

    key = {"name": "agent", "sha256": hash_key(GOOD), "daily_budget_usd": 1.0}
    gw = start_gateway({"models": {"big": model_cfg(upstream.url)}, "gateway": {"keys": [key]}})
    with gw.store.engine.begin() as conn:  # the ledger's table gone: every reservation fails
        conn.execute(sa.text("DROP TABLE budget_spend"))
    r = httpx.post(
        gw.url + "/chat/completions",
        json={"model": "big", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {GOOD}"},
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
    [t] = [t for t in gw.traces() if t.id == r.headers["x-smallfleet-trace-id"]]
    assert t.http_status == 503


# ---------------------------------------------------------------- two gateways on one PostgreSQL

BUDGET = 0.0002
MAX_TOKENS = 10
ACTUAL = (1 + 2 * MAX_TOKENS) / 1e6  # what the upstream below makes each call cost: under its estimate
BODY = {"model": "big", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": MAX_TOKENS}


def _answer(request: dict[str, Any]) -> Reply:
    usage = Usage.of(1, int(request.get("max_tokens") or 1))
    return Reply.of(ChatResponse.of_text("upstream", "ok", usage), delay=random.uniform(0.02, 0.15))


def _start(cfg: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "smallfleet.cli", "--config", str(cfg), "gateway", "--port", str(port)],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait_up(proc: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "gateway did not come up"
        time.sleep(0.1)


async def _spend(bases: list[str]) -> list[tuple[int, str | None]]:
    """64 clients at once, spread over the gateways, until the 200s they got add up to the budget."""
    answers: list[tuple[int, str | None]] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers = {"authorization": f"Bearer {GOOD}"}
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:

        async def worker(i: int) -> None:
            while sum(s == 200 for s, _ in answers) * ACTUAL < BUDGET and time.monotonic() < deadline:
                r = await client.post(bases[i % 2] + "/v1/chat/completions", json=BODY)
                code = r.json()["error"]["code"] if r.status_code != 200 else None
                answers.append((r.status_code, code))
                i += 1
                if r.status_code != 200:
                    await asyncio.sleep(random.uniform(0.005, 0.03))

        await asyncio.gather(*(worker(i) for i in range(64)))
    return answers


@pytest.mark.postgres
@pytest.mark.slow
def test_two_gateways_on_one_postgres_never_overspend(pg_schema: str, tmp_path: Path) -> None:
    with ScriptedUpstream(_answer) as up:
        cfg = tmp_path / "smallfleet.yaml"
        key = {"name": "agent", "sha256": hash_key(GOOD), "daily_budget_usd": BUDGET}
        config = {
            "models": {"big": model_cfg(up.url)},
            "store": {"url": pg_schema},
            "gateway": {"keys": [key], "flush_interval_ms": 50},
        }
        cfg.write_text(yaml.safe_dump(config))
        day = int(time.time() // 86400)
        logs = [tmp_path / "gw0.log", tmp_path / "gw1.log"]
        procs = [_start(cfg, log) for log in logs]
        try:
            for (proc, base), log in zip(procs, logs, strict=True):
                _wait_up(proc, base, log)
            answers = asyncio.run(_spend([base for _, base in procs]))
            for proc, _ in procs:  # drain: every settlement and trace written
                proc.send_signal(signal.SIGTERM)
            for proc, _ in procs:
                proc.wait(timeout=60)
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
    assert [p.returncode for p, _ in procs] == [0, 0], [log.read_text()[-3000:] for log in logs]
    if int(time.time() // 86400) != day:
        pytest.skip("the UTC day changed during the test")

    ok = sum(s == 200 for s, _ in answers)
    refused = [code for s, code in answers if s != 200]
    assert ok >= 1 and refused, (ok, len(refused))
    assert set(refused) == {"budget_exceeded"}
    assert len(answers) * ACTUAL > 3 * BUDGET  # without reservations, this load would have spent far more

    settings = load_settings(cfg, env={})
    prices = PriceTable(settings.pricing, dict(settings.models))
    estimate = estimate_usd(ChatRequest.parse(BODY), ["big"], prices, settings.gateway.budget_max_tokens)
    assert estimate >= ACTUAL
    store = TraceStore(pg_schema)
    try:
        traces = [t for t in store.iter_traces() if t.key_id == "agent"]
        spent, held = SpendLedger(store.engine).usage("agent", day)
    finally:
        store.close()
    recorded = sum(t.cost_usd or 0.0 for t in traces)
    assert len(traces) == len(answers) and sum(t.status == "ok" for t in traces) == ok
    assert held == pytest.approx(0.0, abs=1e-12)  # every reservation settled
    assert spent == pytest.approx(recorded, abs=1e-12) == pytest.approx(ok * ACTUAL, abs=1e-12)
    assert spent <= BUDGET + estimate, (spent, BUDGET, estimate)  # the promise: one estimate over at most


# ---------------------------------------------------------------- keys re-read without restart


def _write_keys(cfg: Path, base: dict[str, Any], *keys: tuple[str, str]) -> None:
    data = {
        **base,
        "gateway": {**base["gateway"], "keys": [{"name": n, "sha256": hash_key(k)} for n, k in keys]},
    }
    cfg.write_text(yaml.safe_dump(data))


def _status(url: str, key: str) -> int:
    body = {"model": "big", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        url + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ).status_code


def test_a_revoked_key_stops_working_without_restart(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    cfg = tmp_path / "smallfleet.yaml"
    base = {
        "models": {"big": model_cfg(upstream.url)},
        "store": {"url": f"sqlite:///{tmp_path / 'traces.db'}"},
        "gateway": {"reload_seconds": 0.2, "flush_interval_ms": 20},
    }
    _write_keys(cfg, base, ("good", GOOD))
    app = create_app(load_settings(cfg, env={}))
    with BackgroundServer(app) as server:
        assert _status(server.url, GOOD) == 200
        assert _status(server.url, OTHER) == 401
        _write_keys(cfg, base, ("other", OTHER))  # GOOD revoked, OTHER added
        revoked_at = time.monotonic()
        while _status(server.url, GOOD) != 401:
            assert time.monotonic() - revoked_at < 0.2 + 1.0, "the revoked key still works"
            time.sleep(0.02)
        assert _status(server.url, OTHER) == 200


def test_keys_reload_keeps_the_old_keys_when_the_file_breaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "smallfleet.yaml"
    base: dict[str, Any] = {"gateway": {"reload_seconds": 0.05}}
    _write_keys(cfg, base, ("good", GOOD))
    ring = KeyRing.from_settings(load_settings(cfg, env={}))
    assert ring.authenticate(f"Bearer {GOOD}") is not None
    cfg.write_text("gateway: {keys: [{name: broken}]}\n")  # no sha256: invalid
    time.sleep(0.06)
    with caplog.at_level(logging.WARNING, logger="smallfleet.gateway"):
        assert ring.authenticate(f"Bearer {GOOD}") is not None
    assert "gateway.keys not re-read" in caplog.text
    cfg.unlink()  # a missing file too
    time.sleep(0.06)
    assert ring.authenticate(f"Bearer {GOOD}") is not None

    # keys from the environment win over the file, on reload as at start
    monkeypatch.setenv("SMALLFLEET_GATEWAY__KEYS", f"[{{name: env, sha256: {hash_key(OTHER)}}}]")
    _write_keys(cfg, base, ("good", GOOD))
    time.sleep(0.06)
    key = ring.authenticate(f"Bearer {OTHER}")
    assert key is not None and key.name == "env"


def test_keys_without_a_config_file_stay() -> None:
    ring = KeyRing([budget_key()], source=None, reload_seconds=0.001)
    time.sleep(0.01)
    assert ring.enabled and ring.named("agent")
