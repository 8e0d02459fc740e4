"""OpenTelemetry export: the real gateway on loopback → a real OTLP/HTTP receiver on loopback.

The receiver is a plain HTTP server that takes ``POST /v1/traces`` and decodes the
protobuf body with the OTLP collector's own message type; the upstream is the
scripted loopback server. Nothing of ours is replaced.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from gwkit import PRICE, Running, free_port, model_cfg

from smallfleet.config import load_settings
from smallfleet.errors import ConfigError, ExtraNotInstalled
from smallfleet.gateway.app import RouteDecision, create_app
from smallfleet.gateway.server import BackgroundServer
from smallfleet.gateway.telemetry import otlp_traces_url
from smallfleet.store.trace_store import TraceStore
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatRequest, ChatResponse, Usage

EMAIL = "jane.doe@example.com"
API_KEY = "sk-proj-" + "Q7fT2mX9pL4vR8sK1nB6cW3yH5jD0gZ" + "aE"
SECRET_PROMPT = f"Reset the account of {EMAIL}; my key is {API_KEY}."
MSG = [{"role": "user", "content": "Where is my order 1234?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "track_order",
            "description": "Find where an order is.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    }
]


# ---------------------------------------------------------------- the OTLP/HTTP receiver


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return None if kind is None else getattr(v, kind)


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: every span it is sent, decoded."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.spans: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.requests = 0
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or "protobuf" not in (self.headers.get("content-type") or ""):
                    self.send_response(404)
                    self.end_headers()
                    return
                msg = ExportTraceServiceRequest()
                msg.ParseFromString(body)
                receiver._take(msg, body, dict(self.headers))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.headers: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _take(self, msg: Any, body: bytes, headers: dict[str, str]) -> None:
        spans = []
        for rs in msg.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        {
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "parent": s.parent_span_id.hex(),
                            "kind": s.kind,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "status": (s.status.code, s.status.message),
                            "attrs": {kv.key: _value(kv.value) for kv in s.attributes},
                            "resource": resource,
                            "scope": ss.scope.name,
                        }
                    )
        with self._cond:
            self.requests += 1
            self.bodies.append(body)
            self.headers.append({k.lower(): v for k, v in headers.items()})
            self.spans.extend(spans)
            self._cond.notify_all()

    def span(self, trace_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The one span of the smallfleet trace ``trace_id``, once it arrives."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [s for s in self.spans if s["attrs"].get("smallfleet.trace_id") == trace_id]
                if found:
                    assert len(found) == 1, found
                    return found[0]
                left = deadline - time.monotonic()
                assert left > 0, f"no span for trace {trace_id} (got {len(self.spans)} spans)"
                self._cond.wait(left)

    def raw(self) -> bytes:
        with self._cond:
            return b"".join(self.bodies)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def telemetry(receiver: Receiver, **kw: Any) -> dict[str, Any]:
    return {"otlp_endpoint": receiver.url, "batch_delay_ms": 20, "service_name": "gw-under-test", **kw}


def models(upstream: ScriptedUpstream) -> dict[str, Any]:
    return {"big": model_cfg(upstream.url, model="gpt-upstream"), "small": model_cfg(upstream.url)}


@pytest.fixture(scope="module")
def gw(start_gateway: Any, upstream: ScriptedUpstream, receiver: Receiver) -> Running:
    return start_gateway(
        {"models": models(upstream), "telemetry": telemetry(receiver, headers={"x-team": "gw"})}
    )


@pytest.fixture(scope="module")
def gw_content(start_gateway: Any, upstream: ScriptedUpstream, receiver: Receiver) -> Running:
    return start_gateway({"models": models(upstream), "telemetry": telemetry(receiver, export_content=True)})


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> None:
    upstream.reset()


def cost(inp: int, out: int) -> float:
    return (inp * PRICE["input"] + out * PRICE["output"]) / 1e6


def chat(gw: Running, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/chat/completions", json=body, headers=headers, timeout=15)


# ---------------------------------------------------------------- spans


def test_plain_chat_span(gw: Running, upstream: ScriptedUpstream, receiver: Receiver) -> None:
    upstream.push(Reply.text("It ships tomorrow.", model="gpt-upstream-0613", prompt_tokens=17))
    t0 = time.time_ns()
    r = chat(
        gw,
        {"model": "big", "messages": MSG, "temperature": 0.2, "max_tokens": 64},
        **{"x-smallfleet-workload": "support"},
    )
    assert r.status_code == 200, r.text
    trace_id = r.headers["x-smallfleet-trace-id"]
    span = receiver.span(trace_id)
    a = span["attrs"]
    assert span["name"] == "chat big"
    assert span["kind"] == 3  # SPAN_KIND_CLIENT
    assert span["trace_id"] == trace_id and span["parent"] == ""  # the smallfleet trace id is the trace id
    assert span["status"][0] == 0  # unset: ok
    assert span["resource"]["service.name"] == "gw-under-test"
    assert span["scope"] == "smallfleet.gateway"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "big"
    assert a["gen_ai.response.model"] == "gpt-upstream-0613"
    assert a["gen_ai.response.id"] == r.json()["id"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (17, 3)
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.request.max_tokens"] == 64
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", upstream.port)
    assert a["smallfleet.route"] == "direct"
    assert a["smallfleet.workload"] == "support"
    assert a["smallfleet.model_served"] == "big"
    assert a["smallfleet.cost_usd"] == pytest.approx(cost(17, 3))
    assert (a["smallfleet.status"], a["smallfleet.http_status"]) == ("ok", 200)
    assert "error.type" not in a and "smallfleet.escalation_reason" not in a
    assert not [k for k in a if k.endswith(".messages") or k.startswith("gen_ai.system_instr")]
    # timing from the trace: starts when the request came in, lasts its latency
    trace = next(t for t in gw.traces() if t.id == trace_id)
    assert span["start"] == int(trace.created_at * 1e9)
    assert span["end"] - span["start"] == pytest.approx(trace.latency_ms * 1e6, abs=1000)
    assert t0 - 1e9 < span["start"] <= span["end"] <= time.time_ns()
    assert receiver.headers[-1].get("x-team") == "gw"  # telemetry.headers go with each export


def test_tool_call_span(gw: Running, upstream: ScriptedUpstream, receiver: Receiver) -> None:
    upstream.push(Reply.tool_call("track_order", {"order_id": "1234"}, prompt_tokens=40))
    r = chat(gw, {"model": "big", "messages": MSG, "tools": TOOLS})
    assert r.status_code == 200, r.text
    a = receiver.span(r.headers["x-smallfleet-trace-id"])["attrs"]
    assert a["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (40, 12)
    assert a["smallfleet.tool_names"] == ["track_order"]
    assert "gen_ai.tool.definitions" not in a  # content: off by default


def test_streamed_span(gw: Running, upstream: ScriptedUpstream, receiver: Receiver) -> None:
    full = ChatResponse.of_text("upstream", "Your parcel left the depot at noon.", Usage.of(21, 7))
    upstream.push(Reply.stream(full, piece=5))
    with httpx.stream(
        "POST", f"{gw.url}/chat/completions", json={"model": "big", "messages": MSG, "stream": True}
    ) as r:
        trace_id = r.headers["x-smallfleet-trace-id"]
        r.read()
    a = receiver.span(trace_id)["attrs"]
    assert a["smallfleet.stream"] is True
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (21, 7)
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["smallfleet.ttft_ms"] > 0


def test_failed_call_span(gw: Running, upstream: ScriptedUpstream, receiver: Receiver) -> None:
    upstream.push(Reply.error(500, "the upstream is down"))
    r = chat(gw, {"model": "small", "messages": MSG})
    assert r.status_code == 502
    span = receiver.span(r.headers["x-smallfleet-trace-id"])
    a = span["attrs"]
    assert span["status"][0] == 2  # STATUS_CODE_ERROR
    assert "the upstream is down" in span["status"][1]
    assert a["error.type"] == "502"
    assert (a["smallfleet.status"], a["smallfleet.http_status"]) == ("error", 502)
    assert a["gen_ai.request.model"] == "small"
    assert "gen_ai.response.finish_reasons" not in a


def test_rejected_request_span(gw: Running, receiver: Receiver) -> None:
    r = chat(gw, {"model": "big", "messages": "not a list"})
    assert r.status_code == 400
    span = receiver.span(r.headers["x-smallfleet-trace-id"])
    assert span["attrs"]["smallfleet.route"] == "rejected"
    assert span["attrs"]["error.type"] == "400"


class _Router:
    """A router at the gateway's routing seam: serves workload ``routed`` with ``model``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    async def route(self, request: ChatRequest, workload: str) -> RouteDecision | None:
        if workload == "routed":
            return RouteDecision(model=self.model, route="specialist:order-status", confidence=0.93)
        return RouteDecision(escalation="low_confidence", confidence=0.41)


def test_route_confidence_and_escalation(gw: Running, receiver: Receiver) -> None:
    gw.app.router = _Router(gw.app.registry.get("small"))
    try:
        served = chat(gw, {"model": "big", "messages": MSG}, **{"x-smallfleet-workload": "routed"})
        escalated = chat(gw, {"model": "big", "messages": MSG})
    finally:
        gw.app.router = None
    a = receiver.span(served.headers["x-smallfleet-trace-id"])["attrs"]
    assert a["smallfleet.route"] == "specialist:order-status"
    assert a["smallfleet.confidence"] == pytest.approx(0.93)
    assert a["gen_ai.provider.name"] == "smallfleet" and "server.address" not in a
    b = receiver.span(escalated.headers["x-smallfleet-trace-id"])["attrs"]
    assert b["smallfleet.escalation_reason"] == "low_confidence"
    assert b["smallfleet.confidence"] == pytest.approx(0.41)


# ---------------------------------------------------------------- content and redaction


def test_content_absent_by_default(gw: Running, upstream: ScriptedUpstream, receiver: Receiver) -> None:
    upstream.push(Reply.text(f"Done, I wrote to {EMAIL}."))
    r = chat(gw, {"model": "big", "messages": [{"role": "user", "content": SECRET_PROMPT}]})
    a = receiver.span(r.headers["x-smallfleet-trace-id"])["attrs"]
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    assert "Reset the account" not in json.dumps(a)
    raw = receiver.raw()
    assert EMAIL.encode() not in raw and API_KEY.encode() not in raw


def test_content_redacted_when_enabled(
    gw_content: Running, upstream: ScriptedUpstream, receiver: Receiver
) -> None:
    upstream.push(Reply.tool_call("track_order", {"order_id": "1234", "notify": EMAIL}))
    body = {
        "model": "big",
        "messages": [
            {"role": "system", "content": "You track orders."},
            {"role": "user", "content": SECRET_PROMPT},
        ],
        "tools": TOOLS,
    }
    r = chat(gw_content, body)
    assert r.status_code == 200, r.text
    a = receiver.span(r.headers["x-smallfleet-trace-id"])["attrs"]
    inp = json.loads(a["gen_ai.input.messages"])
    assert [m["role"] for m in inp] == ["system", "user"]
    assert inp[0]["parts"] == [{"type": "text", "content": "You track orders."}]
    user = inp[1]["parts"][0]["content"]
    assert "<EMAIL_1>" in user and "<SECRET_1>" in user and EMAIL not in user and API_KEY not in user
    out = json.loads(a["gen_ai.output.messages"])
    assert out[0]["role"] == "assistant" and out[0]["finish_reason"] == "tool_calls"
    call = out[0]["parts"][0]
    assert (call["type"], call["name"]) == ("tool_call", "track_order")
    assert call["arguments"] == {"order_id": "1234", "notify": "<EMAIL_1>"}  # same value, same placeholder
    assert json.loads(a["gen_ai.tool.definitions"]) == TOOLS
    raw = receiver.raw()
    assert EMAIL.encode() not in raw and API_KEY.encode() not in raw


def test_other_apis_leave_a_span(gw: Running, receiver: Receiver) -> None:
    """/v1/responses and /v1/messages take the chat path, so their calls are exported the same way."""
    bodies = {
        "responses": {"model": "big", "input": "Where is my order 1234?"},
        "messages": {"model": "big", "max_tokens": 50, "messages": MSG},
    }
    for path, body in bodies.items():
        r = httpx.post(f"{gw.url}/{path}", json=body, headers={"x-api-key": "x"}, timeout=15)
        assert r.status_code == 200, (path, r.text)
        span = receiver.span(r.headers["x-smallfleet-trace-id"])
        a = span["attrs"]
        assert span["name"] == "chat big", path
        assert (a["gen_ai.operation.name"], a["gen_ai.request.model"]) == ("chat", "big")
        assert a["gen_ai.response.finish_reasons"] == ["stop"], path
        assert a["gen_ai.usage.input_tokens"] > 0 and a["smallfleet.route"] == "direct"


# ---------------------------------------------------------------- lifecycle


def _start(upstream: ScriptedUpstream, tmp_path: Any, **overrides: Any) -> Running:
    url = f"sqlite:///{tmp_path / 'traces.db'}"
    settings = load_settings(
        env={},
        overrides={"models": models(upstream), "store": {"url": url}, "gateway": {"flush_interval_ms": 20}}
        | overrides,
    )
    store = TraceStore(url)
    app = create_app(settings, store=store)
    return Running(app, BackgroundServer(app).start(), store)


def test_flushed_on_close(upstream: ScriptedUpstream, receiver: Receiver, tmp_path: Any) -> None:
    """Spans still batched when the gateway stops are sent before it returns."""
    gw = _start(upstream, tmp_path, telemetry=telemetry(receiver, batch_delay_ms=600_000))
    try:
        ids = [chat(gw, {"model": "big", "messages": MSG}).headers["x-smallfleet-trace-id"] for _ in range(3)]
        gw.traces()  # written, and so handed to the span export
        time.sleep(0.2)
        with receiver._cond:
            assert not [s for s in receiver.spans if s["attrs"]["smallfleet.trace_id"] in ids]
    finally:
        gw.server.stop()
        gw.store.close()
    for trace_id in ids:
        assert receiver.span(trace_id, timeout=0.1)["trace_id"] == trace_id


def test_off_sends_nothing(
    upstream: ScriptedUpstream, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No telemetry.otlp_endpoint: no span export, even with the SDK's own variables set."""
    with Receiver() as quiet:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", quiet.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", quiet.url + "/v1/traces")
        gw = _start(upstream, tmp_path)
        try:
            assert gw.app.recorder.exporter is None
            r = chat(gw, {"model": "big", "messages": MSG})
            assert r.status_code == 200
            assert len(gw.traces()) == 1
        finally:
            gw.server.stop()
            gw.store.close()
        time.sleep(0.3)
        assert quiet.requests == 0


def test_missing_extra_names_it(
    upstream: ScriptedUpstream, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    settings = load_settings(
        env={},
        overrides={"telemetry": telemetry(receiver), "store": {"url": f"sqlite:///{tmp_path / 't.db'}"}},
    )
    with pytest.raises(ExtraNotInstalled, match=r"pip install 'smallfleet\[otel\]'"):
        create_app(settings)


# ---------------------------------------------------------------- config


def test_config_typo_and_bad_url() -> None:
    with pytest.raises(ConfigError, match="did you mean 'otlp_endpoint'"):
        load_settings(env={}, overrides={"telemetry": {"otlp_endpont": "http://127.0.0.1:4318"}})
    with pytest.raises(ConfigError, match=r"telemetry\.otlp_endpoint: .*not an http"):
        load_settings(env={}, overrides={"telemetry": {"otlp_endpoint": "127.0.0.1:4318"}})
    env = {
        "SMALLFLEET_TELEMETRY__OTLP_ENDPOINT": "http://collector:4318",
        "SMALLFLEET_TELEMETRY__EXPORT_CONTENT": "true",
    }
    s = load_settings(env=env)
    assert s.telemetry.otlp_endpoint == "http://collector:4318" and s.telemetry.export_content is True
    assert load_settings(env={}).telemetry.otlp_endpoint is None


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://localhost:6006/v1/traces", "http://localhost:6006/v1/traces"),
        (
            "https://cloud.langfuse.com/api/public/otel",
            "https://cloud.langfuse.com/api/public/otel/v1/traces",
        ),
    ],
)
def test_endpoint_url(given: str, url: str) -> None:
    assert otlp_traces_url(given) == url


def test_dead_collector_costs_nothing(upstream: ScriptedUpstream, tmp_path: Any) -> None:
    """A collector that refuses connections: requests and traces go on, shutdown stays short."""
    dead = f"http://127.0.0.1:{free_port()}"
    gw = _start(upstream, tmp_path, telemetry={"otlp_endpoint": dead, "batch_delay_ms": 20, "timeout_s": 1})
    try:
        for _ in range(5):
            assert chat(gw, {"model": "big", "messages": MSG}).status_code == 200
        assert len(gw.traces()) == 5
        assert gw.app.recorder.healthy()
    finally:
        t0 = time.monotonic()
        gw.server.stop()
        gw.store.close()
    assert time.monotonic() - t0 < 8
