"""FastTransport under httpx against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from gwkit import free_port

from smallfleet.gateway.transport import FastTransport
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatResponse

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def up() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(up: ScriptedUpstream) -> None:
    up.reset()


def client(**kw: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=FastTransport(max_connections=8), timeout=httpx.Timeout(kw.get("t", 5.0))
    )


async def test_requests_reuse_connections(up: ScriptedUpstream) -> None:
    async with client() as c:
        answers = await asyncio.gather(*(c.post(up.url + "/chat/completions", json=BODY) for _ in range(40)))
        assert all(
            a.status_code == 200 and a.json()["choices"][0]["message"]["content"] == "ok" for a in answers
        )
        pools = c._transport._pools  # type: ignore[attr-defined]
        idle = sum(len(p.idle) for p in pools.values())
        assert 1 <= idle <= 8  # at most max_connections were opened, and they are kept for reuse
        r = await c.get(up.url + "/models")
        assert r.json()["object"] == "list"
        assert sum(len(p.idle) for p in pools.values()) == idle  # a kept connection served it
    assert len(up.requests) == 40


async def test_streams_sse(up: ScriptedUpstream) -> None:
    up.push(Reply.stream(ChatResponse.of_text("m", "one two three"), piece=2, chunk_delay=0.01))
    async with (
        client() as c,
        c.stream("POST", up.url + "/chat/completions", json={**BODY, "stream": True}) as r,
    ):
        events = [line async for line in r.aiter_lines() if line]
    assert events[-1] == "data: [DONE]" and len(events) > 5


async def test_errors_are_httpx_errors(up: ScriptedUpstream) -> None:
    up.push(Reply.text("late", delay=1.0))
    async with client(t=0.2) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(up.url + "/chat/completions", json=BODY)
        with pytest.raises(httpx.ConnectError):
            await c.post(f"http://127.0.0.1:{free_port()}/v1/chat/completions", json=BODY)
    up.push(Reply.stream(ChatResponse.of_text("m", "one two three"), piece=2, cut_after=2))
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            async with c.stream("POST", up.url + "/chat/completions", json={**BODY, "stream": True}) as r:
                async for _ in r.aiter_lines():
                    pass
        ok = await c.post(up.url + "/chat/completions", json=BODY)  # the pool recovers
        assert ok.status_code == 200


async def test_error_status_and_bodies(up: ScriptedUpstream) -> None:
    up.push(Reply.error(503, "overloaded", headers={"retry-after": "2"}))
    async with client() as c:
        r = await c.post(up.url + "/chat/completions", json=BODY)
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["message"] == "overloaded"
