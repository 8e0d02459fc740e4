"""The gateway end to end: openai SDK → gateway on loopback → scripted upstream; traces in SQLite."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from gwkit import PRICE, Running, model_cfg

from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatResponse, Usage

MSG = [{"role": "user", "content": "Where is my order 1234?"}]


def cost(inp: int, out: int) -> float:
    return (inp * PRICE["input"] + out * PRICE["output"]) / 1e6


@pytest.fixture(scope="module")
def gw(start_gateway: Any, upstream: ScriptedUpstream) -> Running:
    return start_gateway({"models": {"big": model_cfg(upstream.url, model="gpt-upstream")}})


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> None:
    upstream.reset()


def only_trace(gw: Running, trace_id: str) -> Any:
    traces = [t for t in gw.traces() if t.id == trace_id]
    assert len(traces) == 1
    return traces[0]


def test_plain_chat(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("It ships tomorrow.", prompt_tokens=17))
    raw = gw.client().chat.completions.with_raw_response.create(
        model="big", messages=MSG, extra_headers={"x-smallfleet-workload": "support"}
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "It ships tomorrow."
    assert raw.headers["x-smallfleet-route"] == "direct"
    trace_id = raw.headers["x-smallfleet-trace-id"]
    # the upstream got the request with the upstream model name
    assert upstream.requests[-1]["model"] == "gpt-upstream"
    assert upstream.requests[-1]["messages"] == MSG
    t = only_trace(gw, trace_id)
    assert (t.status, t.http_status, t.route, t.workload) == ("ok", 200, "direct", "support")
    assert (t.model_requested, t.model_served) == ("big", "big")
    assert (t.input_tokens, t.output_tokens) == (17, 3)
    assert t.cost_usd == pytest.approx(cost(17, 3))
    assert t.latency_ms is not None and t.latency_ms > 0
    assert t.response["choices"][0]["message"]["content"] == "It ships tomorrow."
    assert t.request["messages"] == MSG
    assert t.stream is False


def test_tools_and_metadata_workload(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.tool_call("track_order", {"order_id": "1234"}, prompt_tokens=40))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "track_order",
                "description": "Find where an order is.",
                "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
            },
        }
    ]
    raw = gw.client().chat.completions.with_raw_response.create(
        model="big", messages=MSG, tools=tools, metadata={"workload": "tracker"}, store=False
    )
    call = raw.parse().choices[0].message.tool_calls[0]
    assert call.function.name == "track_order"
    assert json.loads(call.function.arguments) == {"order_id": "1234"}
    assert upstream.requests[-1]["tools"] == tools
    assert upstream.requests[-1]["store"] is False  # unknown fields are passed on
    t = only_trace(gw, raw.headers["x-smallfleet-trace-id"])
    assert t.tool_names == ["track_order"]
    assert t.workload == "tracker"
    assert (t.input_tokens, t.output_tokens) == (40, 12)
    assert t.cost_usd == pytest.approx(cost(40, 12))


def test_json_schema(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text('{"order_id": "1234"}', prompt_tokens=30))
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "order",
            "schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    }
    resp = gw.client().chat.completions.create(model="big", messages=MSG, response_format=fmt)
    assert json.loads(resp.choices[0].message.content) == {"order_id": "1234"}
    assert upstream.requests[-1]["response_format"] == fmt


@pytest.mark.parametrize("include_usage", [True, False])
def test_streaming(gw: Running, upstream: ScriptedUpstream, include_usage: bool) -> None:
    full = ChatResponse.of_text("upstream", "Your parcel left the depot at noon.", Usage.of(21, 7))
    upstream.push(Reply.stream(full, piece=5, include_usage=True))
    kw: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    with gw.client().chat.completions.with_streaming_response.create(
        model="big", messages=MSG, stream=True, **kw
    ) as raw:
        trace_id = raw.headers["x-smallfleet-trace-id"]
        assert raw.headers["x-smallfleet-route"] == "direct"
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Your parcel left the depot at noon."
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0].usage.completion_tokens == 7
    else:
        assert usage_chunks == []
    # the gateway always asks the upstream for usage, to count tokens
    assert upstream.requests[-1]["stream_options"] == {"include_usage": True}
    t = only_trace(gw, trace_id)
    assert t.stream is True and t.status == "ok"
    assert (t.input_tokens, t.output_tokens) == (21, 7)
    assert t.cost_usd == pytest.approx(cost(21, 7))
    assert t.response["choices"][0]["message"]["content"] == "Your parcel left the depot at noon."
    assert t.ttft_ms is not None and 0 < t.ttft_ms <= t.latency_ms


def test_streaming_without_upstream_usage_is_counted(gw: Running, upstream: ScriptedUpstream) -> None:
    full = ChatResponse.of_text("upstream", "x" * 40)
    upstream.push(Reply.stream(full, include_usage=False))
    with gw.client().chat.completions.with_streaming_response.create(
        model="big", messages=[{"role": "user", "content": "y" * 80}], stream=True
    ) as raw:
        trace_id = raw.headers["x-smallfleet-trace-id"]
        list(raw.parse())
    t = only_trace(gw, trace_id)
    assert (t.input_tokens, t.output_tokens) == (20, 10)  # about four characters a token


def test_models_healthz(gw: Running) -> None:
    models = gw.client().models.list()
    assert [m.id for m in models.data] == ["big"]
    r = httpx.get(gw.server.base + "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = httpx.get(gw.server.base + "/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A strict little parser of the text exposition format: every line a comment or a sample."""
    import re

    sample = re.compile(
        r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$'
    )
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = sample.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels = m.group(1), m.group(3) or ""
        assert any(name == t or name.startswith(t + "_") for t in typed), f"{name} has no TYPE"
        pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
        out[(name, pairs)] = float(m.group(4))
    return out


def test_metrics_count_what_happened(start_gateway: Any, upstream: ScriptedUpstream) -> None:
    gw = start_gateway({"models": {"big": model_cfg(upstream.url)}})
    client = gw.client()
    for _ in range(3):
        client.chat.completions.create(
            model="big", messages=MSG, extra_headers={"x-smallfleet-workload": "w1"}
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MSG)
    r = httpx.get(gw.server.base + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = parse_prometheus(r.text)
    ok = frozenset({("workload", "w1"), ("model", "big"), ("route", "direct"), ("status", "ok")})
    bad = frozenset(
        {("workload", "default"), ("model", "unknown"), ("route", "rejected"), ("status", "error")}
    )
    assert m[("smallfleet_requests_total", ok)] == 3
    assert m[("smallfleet_errors_total", ok)] == 0
    assert m[("smallfleet_requests_total", bad)] == 1
    assert m[("smallfleet_errors_total", bad)] == 1
    prompt_tokens = 3 * len(MSG[0]["content"].split())  # the default reply counts words
    assert m[("smallfleet_input_tokens_total", ok)] == prompt_tokens
    assert m[("smallfleet_output_tokens_total", ok)] == 3
    assert m[("gen_ai_client_operation_duration_seconds_count", ok)] == 3
    assert m[("gen_ai_client_operation_duration_seconds_bucket", ok | {("le", "+Inf")})] == 3
    tok_in = ok | {("gen_ai_token_type", "input")}
    assert m[("gen_ai_client_token_usage_sum", tok_in)] == prompt_tokens
    assert m[("smallfleet_cost_usd_total", ok)] == pytest.approx(cost(prompt_tokens, 3))
    assert m[("smallfleet_traces_dropped_total", frozenset())] == 0
    gw.app.recorder.flush()
    r = httpx.get(gw.server.base + "/metrics")
    assert parse_prometheus(r.text)[("smallfleet_traces_written_total", frozenset())] == 4
