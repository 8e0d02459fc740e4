"""Upstream faults, fallbacks, bad input, disconnects, keys and budgets: clear 4xx/5xx, one trace each."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from gwkit import Running, free_port, model_cfg

from smallfleet.gateway.app import RouteDecision
from smallfleet.gateway.auth import hash_key
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatRequest, ChatResponse

MSG = [{"role": "user", "content": "hello there"}]
BODY = {"model": "big", "messages": MSG}


@pytest.fixture(scope="module")
def gw(start_gateway: Any, upstream: ScriptedUpstream) -> Running:
    return start_gateway(
        {
            "models": {
                "big": model_cfg(upstream.url, fallbacks=["backup"]),
                "backup": model_cfg(upstream.url, model="backup-model"),
                "solo": model_cfg(upstream.url, read_timeout=1.0),  # short, for the timeout case
                "dead": model_cfg(f"http://127.0.0.1:{free_port()}/v1"),
            },
            "gateway": {"max_body_bytes": 2048},
        }
    )


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> None:
    upstream.reset()


def post(gw: Running, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    return httpx.post(gw.url + "/chat/completions", content=content, timeout=15, headers=headers, **kw)


def trace_of(gw: Running, r: httpx.Response) -> Any:
    tid = r.headers["x-smallfleet-trace-id"]
    found = [t for t in gw.traces() if t.id == tid]
    assert len(found) == 1, "every request leaves exactly one trace"
    return found[0]


def check_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    assert "Traceback" not in r.text
    assert r.headers["x-smallfleet-trace-id"] and r.headers["x-smallfleet-route"]
    return err


# ---------------------------------------------------------------- upstream faults


@pytest.mark.parametrize(
    ("alias", "reply", "status", "code"),
    [
        ("dead", None, 502, "upstream_error"),  # connection refused
        ("solo", Reply.text("late", delay=2.5), 504, "upstream_timeout"),
        ("solo", Reply.error(503, "overloaded"), 502, "upstream_error"),
        ("solo", Reply.error(429, "slow down", headers={"retry-after": "3"}), 429, "rate_limit_exceeded"),
        ("solo", Reply(body="{not json"), 502, "upstream_error"),
    ],
    ids=["refused", "timeout", "5xx", "429", "malformed-json"],
)
def test_upstream_faults(
    gw: Running, upstream: ScriptedUpstream, alias: str, reply: Reply | None, status: int, code: str
) -> None:
    if reply is not None:
        upstream.push(reply)
    r = post(gw, {**BODY, "model": alias})
    check_error(r, status, code)
    if status == 429:
        assert r.headers["retry-after"] == "3"
    t = trace_of(gw, r)
    assert (t.status, t.http_status, t.route, t.model_served) == ("error", status, "direct", alias)
    assert t.error and t.cost_usd is None


def test_fallback_to_second_alias(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.error(500, "down"))
    raw = gw.client().chat.completions.with_raw_response.create(model="big", messages=MSG)
    assert raw.parse().choices[0].message.content == "ok"
    assert raw.headers["x-smallfleet-route"] == "fallback:backup"
    assert [q["model"] for q in upstream.requests] == ["big", "backup-model"]
    t = trace_of(gw, raw)
    assert (t.route, t.model_requested, t.model_served, t.status) == (
        "fallback:backup",
        "big",
        "backup",
        "ok",
    )


def test_stream_falls_back_before_first_chunk(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.error(502, "bad gateway"))
    with gw.client().chat.completions.with_streaming_response.create(
        model="big", messages=MSG, stream=True
    ) as raw:
        assert raw.headers["x-smallfleet-route"] == "fallback:backup"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "ok"
    assert trace_of(gw, raw).route == "fallback:backup"


def test_stream_cut_midway(gw: Running, upstream: ScriptedUpstream) -> None:
    full = ChatResponse.of_text("upstream", "one two three four five six seven")
    upstream.push(Reply.stream(full, piece=3, cut_after=3))
    got: list[str] = []
    with pytest.raises(openai.APIError, match="ended early"):
        with gw.client().chat.completions.with_streaming_response.create(
            model="solo", messages=MSG, stream=True
        ) as raw:
            for c in raw.parse():
                got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "one tw"  # the chunks before the cut arrived
    t = trace_of(gw, raw)
    assert (t.status, t.http_status, t.route) == ("error", 502, "direct")
    assert "ended early" in t.error
    assert t.response["choices"][0]["message"]["content"] == "one tw"


def test_client_disconnect_mid_stream(gw: Running, upstream: ScriptedUpstream) -> None:
    full = ChatResponse.of_text("upstream", "a long answer " * 20)
    upstream.push(Reply.stream(full, piece=5, chunk_delay=0.05))
    with httpx.stream(
        "POST", gw.url + "/chat/completions", json={**BODY, "model": "solo", "stream": True}
    ) as r:
        tid = r.headers["x-smallfleet-trace-id"]
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # leave after the first event
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [t for t in gw.traces() if t.id == tid]
        if found:
            break
        time.sleep(0.05)
    assert found, "the disconnected stream left no trace"
    assert (found[0].status, found[0].http_status) == ("client_disconnected", 499)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_type", None),
        ({"model": "big", "messages": "hi"}, 400, "invalid_type", "messages"),
        ({"model": "big", "messages": [{"role": "user", "content": 5}]}, 400, "invalid_type", None),
        ({"model": "big"}, 400, "missing_required_parameter", "messages"),
        ({**BODY, "temperature": "hot"}, 400, "invalid_type", "temperature"),
        ({**BODY, "n": 2}, 400, "invalid_value", "n"),
        ({**BODY, "model": "bgi"}, 404, "model_not_found", "model"),
        ({**BODY, "messages": [{"role": "user", "content": "x" * 4000}]}, 413, "request_too_large", None),
    ],
    ids=[
        "malformed",
        "array",
        "messages-type",
        "content-type",
        "missing",
        "temp-type",
        "n2",
        "unknown",
        "big",
    ],
)
def test_bad_input(
    gw: Running, upstream: ScriptedUpstream, body: Any, status: int, code: str, param: str | None
) -> None:
    r = post(gw, body)
    err = check_error(r, status, code)
    if param is not None:
        assert err["param"].startswith(param)
    if code == "model_not_found":
        assert "Did you mean 'big'" in err["message"]
    assert r.headers["x-smallfleet-route"] == "rejected"
    t = trace_of(gw, r)
    assert (t.status, t.http_status, t.route) == ("error", status, "rejected")
    assert upstream.requests == []  # nothing was forwarded


def test_oversized_body_without_content_length(gw: Running) -> None:
    def chunks() -> Any:
        for _ in range(10):
            yield b" " * 500  # chunked transfer encoding: the gateway counts as it reads

    headers = {"content-type": "application/json"}
    r = httpx.post(gw.url + "/chat/completions", content=chunks(), timeout=10, headers=headers)
    check_error(r, 413, "request_too_large")
    assert trace_of(gw, r).http_status == 413


def test_wrong_method_and_sdk_errors(gw: Running) -> None:
    r = httpx.get(gw.url + "/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as e:
        gw.client().chat.completions.create(model="big", messages=[])
    assert e.value.status_code == 400


# ---------------------------------------------------------------- routing seam and the catch-all


class ExplodingRouter:
    async def route(self, request: ChatRequest, workload: str) -> RouteDecision | None:
        raise RuntimeError("secret internal detail")


class SmallFirstRouter:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.observed: list[tuple[str, str | None, str]] = []

    def observe(self, request: ChatRequest, decision: Any, response: dict[str, Any], trace_id: str) -> None:
        self.observed.append((request.model, getattr(decision, "escalation", None), trace_id))

    async def route(self, request: ChatRequest, workload: str) -> RouteDecision | None:
        if workload == "routed":
            return RouteDecision(model=self.model, route="specialist:small", confidence=0.9)
        return RouteDecision(escalation="low_confidence")


def test_unexpected_error_is_a_clean_500(gw: Running) -> None:
    gw.app.router = ExplodingRouter()
    try:
        r = post(gw, BODY)
    finally:
        gw.app.router = None
    err = check_error(r, 500, "internal_error")
    assert "secret internal detail" not in r.text and "RuntimeError" in err["message"]
    t = trace_of(gw, r)
    assert (t.status, t.http_status) == ("error", 500)


def test_router_seam(gw: Running, upstream: ScriptedUpstream) -> None:
    router = SmallFirstRouter(gw.app.registry.get("backup"))
    gw.app.router = router
    try:
        routed = post(gw, BODY, headers={"x-smallfleet-workload": "routed"})
        upstream.push(Reply.error(500, "small one fails"))
        escalated = post(gw, BODY, headers={"x-smallfleet-workload": "routed"})
        plain = post(gw, BODY)
    finally:
        gw.app.router = None
    assert routed.headers["x-smallfleet-route"] == "specialist:small"
    assert escalated.status_code == 200 and escalated.headers["x-smallfleet-route"] == "escalated:error"
    t = trace_of(gw, routed)
    assert (t.route, t.model_served, t.confidence) == ("specialist:small", "backup", 0.9)
    assert t.cost_usd == 0.0  # small models are priced by compute time (pricing.local_usd_per_hour: 0)
    assert plain.headers["x-smallfleet-route"] == "escalated:low_confidence"
    assert trace_of(gw, plain).escalation == "low_confidence"
    # observe() saw every successful answer, with its decision and trace id
    ids = [r.headers["x-smallfleet-trace-id"] for r in (routed, escalated, plain)]
    assert [o[2] for o in router.observed] == ids
    assert router.observed[2][1] == "low_confidence"


# ---------------------------------------------------------------- keys and budgets

GOOD, ADMIN = "sf-good-key", "sf-admin-key"


def keyed_settings(upstream: ScriptedUpstream) -> dict[str, Any]:
    return {
        "models": {"big": model_cfg(upstream.url)},
        "gateway": {
            "keys": [
                {"name": "agent", "sha256": hash_key(GOOD), "daily_budget_usd": 0.000019},
                {"name": "ops", "sha256": hash_key(ADMIN), "admin": True},
            ]
        },
    }


def test_keys_and_budget(start_gateway: Any, upstream: ScriptedUpstream) -> None:
    gw = start_gateway(keyed_settings(upstream))
    check_error(post(gw, BODY), 401, "invalid_api_key")
    check_error(post(gw, BODY, headers={"authorization": "Bearer wrong"}), 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        gw.client(api_key="nope").models.list()
    client = gw.client(api_key=GOOD)
    # each call costs (2 + 2 * 1) / 1e6 = 4e-6 USD; the budget is 1.9e-5: five calls, then 429
    for _ in range(5):
        client.chat.completions.create(model="big", messages=MSG)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="big", messages=MSG)
    assert e.value.code == "budget_exceeded"
    assert e.value.body["type"] == "insufficient_quota"
    gw.client(api_key=ADMIN).chat.completions.create(model="big", messages=MSG)  # no budget on ops
    # /metrics needs an admin key
    assert (
        httpx.get(gw.server.base + "/metrics", headers={"authorization": f"Bearer {GOOD}"}).status_code == 401
    )
    assert (
        httpx.get(gw.server.base + "/metrics", headers={"authorization": f"Bearer {ADMIN}"}).status_code
        == 200
    )
    traces = gw.traces()
    assert [t.key_id for t in traces if t.status == "ok"] == ["agent"] * 5 + ["ops"]
    assert sum(t.http_status == 429 for t in traces) == 1
    assert sum(t.http_status == 401 for t in traces) == 2

    # a restarted gateway on the same store remembers today's spend
    again = start_gateway(keyed_settings(upstream), store_url=gw.store.url)
    r = post(again, BODY, headers={"authorization": f"Bearer {GOOD}"})
    check_error(r, 429, "budget_exceeded")
