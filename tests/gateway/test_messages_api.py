"""``POST /v1/messages`` end to end: the official ``anthropic`` SDK against the real gateway on
loopback, the large model a scripted OpenAI-compatible upstream, and translation round trips.

The Messages request takes the chat path: each call leaves one redacted trace, and a task type
promoted from chat-completions traffic is served by its specialist whichever API asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from gwkit import Running, model_cfg

from smallfleet.gateway.auth import hash_key
from smallfleet.gateway.messages_api import (
    ChatToMessagesStream,
    MessagesToChatStream,
    chat_request_to_messages,
    chat_response_to_messages,
    messages_request_to_chat,
    messages_response_to_chat,
)
from smallfleet.specialists.base import Prediction, Specialist, SpecialistMeta
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Usage,
    chunks_to_response,
    response_to_chunks,
)

ALIAS = "big"
SYSTEM = "You are the weather desk. Answer with a tool call."
WEATHER = {
    "name": "get_weather",
    "description": "Weather forecast for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": WEATHER["name"],
        "description": WEATHER["description"],
        "parameters": WEATHER["input_schema"],
    },
}
EMAIL = "alice.jones@example.com"
SCRIPTED_KIND = "scripted_messages_caller"


def anthropic_client(gw: Running, **kw: Any) -> Any:
    import anthropic

    kw.setdefault("api_key", "x")
    return anthropic.Anthropic(base_url=gw.server.base, max_retries=0, timeout=15, **kw)


@pytest.fixture
def gw(upstream: ScriptedUpstream, start_gateway: Callable[..., Running]) -> Running:
    upstream.reset()
    return start_gateway({"models": {ALIAS: model_cfg(upstream.url)}})


@pytest.fixture(scope="module")
def shared(upstream: ScriptedUpstream, start_gateway: Callable[..., Running]) -> Running:
    """One gateway for the tests that look up their own trace by id."""
    return start_gateway({"models": {ALIAS: model_cfg(upstream.url)}})


def first_turn(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- the SDK, over two turns


def test_messages_create_with_tools_over_two_turns(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(
        Reply.tool_call("get_weather", {"city": "Paris", "days": 2}, prompt_tokens=31),
        Reply.text("Sunny in Paris for two days.", prompt_tokens=44),
    )
    client = anthropic_client(gw)
    messages = first_turn(f"Weather in Paris? Reply to {EMAIL}")
    raw = client.messages.with_raw_response.create(
        model=ALIAS, max_tokens=200, system=SYSTEM, tools=[WEATHER], messages=messages
    )
    first = raw.parse()
    assert first.type == "message" and first.role == "assistant"
    assert first.stop_reason == "tool_use"
    (call,) = first.content
    assert call.type == "tool_use" and call.name == "get_weather"
    assert call.input == {"city": "Paris", "days": 2}
    assert (first.usage.input_tokens, first.usage.output_tokens) == (31, 12)
    trace_ids = [raw.headers["x-smallfleet-trace-id"]]
    assert raw.headers["x-smallfleet-route"] == "direct"

    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    raw = client.messages.with_raw_response.create(
        model=ALIAS, max_tokens=200, system=SYSTEM, tools=[WEATHER], messages=messages
    )
    second = raw.parse()
    trace_ids.append(raw.headers["x-smallfleet-trace-id"])
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == "Sunny in Paris for two days."

    # What the chat-completions upstream was asked: the same conversation, in its own format.
    sent = upstream.requests
    assert sent[0]["messages"][0] == {"role": "system", "content": SYSTEM}
    assert sent[0]["tools"] == [CHAT_WEATHER] and sent[0]["max_tokens"] == 200
    assistant, tool = sent[1]["messages"][2:]
    assert assistant["tool_calls"][0]["id"] == call.id
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == call.input
    assert tool == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}

    traces = {t.id: t for t in gw.traces()}
    assert set(traces) == set(trace_ids)  # exactly one trace per call
    for tid in trace_ids:
        rec = traces[tid]
        assert rec.status == "ok" and rec.route == "direct" and rec.tool_names == ["get_weather"]
        assert rec.model_requested == ALIAS and not rec.stream
        assert EMAIL not in json.dumps(rec.request)  # redacted before it was stored
        assert rec.cost_usd is not None and rec.cost_usd > 0
    assert traces[trace_ids[0]].input_tokens == 31


def test_messages_stream_with_tools_over_two_turns(gw: Running, upstream: ScriptedUpstream) -> None:
    call_resp = ChatResponse.of_tool_calls("upstream", [("get_weather", {"city": "Oslo"})], Usage.of(20, 9))
    text_resp = ChatResponse.of_text("upstream", "Snow in Oslo, bring boots.", Usage.of(33, 7))
    upstream.push(Reply.stream(call_resp), Reply.stream(text_resp, piece=3))
    client = anthropic_client(gw)
    messages = first_turn(f"Weather in Oslo? I am {EMAIL}")
    with client.messages.stream(
        model=ALIAS, max_tokens=100, system=SYSTEM, tools=[WEATHER], messages=messages
    ) as stream:
        kinds = [event.type for event in stream]
        first = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    for kind in ("content_block_start", "input_json", "content_block_stop", "message_delta"):
        assert kind in kinds
    assert first.stop_reason == "tool_use"
    (call,) = first.content
    assert call.type == "tool_use" and call.input == {"city": "Oslo"}
    assert (first.usage.input_tokens, first.usage.output_tokens) == (20, 9)

    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "-3C"}]}
            ],
        },
    ]
    with client.messages.stream(
        model=ALIAS, max_tokens=100, system=SYSTEM, tools=[WEATHER], messages=messages
    ) as stream:
        pieces = list(stream.text_stream)
        second = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == "Snow in Oslo, bring boots."
    assert second.stop_reason == "end_turn" and second.usage.output_tokens == 7
    assert upstream.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "-3C"}
    assert all(r["stream_options"] == {"include_usage": True} for r in upstream.requests)

    traces = gw.traces()
    assert len(traces) == 2
    for rec in traces:
        assert rec.status == "ok" and rec.stream and rec.route == "direct"
        assert EMAIL not in json.dumps(rec.request)
    by_tokens = {rec.input_tokens: rec for rec in traces}
    assert (
        by_tokens[20].response["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    )
    assert by_tokens[33].response["choices"][0]["message"]["content"] == "Snow in Oslo, bring boots."


# ---------------------------------------------------------------- keys and errors


def test_x_api_key_is_checked_like_a_bearer_token(
    upstream: ScriptedUpstream, start_gateway: Callable[..., Running]
) -> None:
    upstream.reset()
    key = {"name": "team", "sha256": hash_key("sk-team-1")}
    gw = start_gateway({"models": {ALIAS: model_cfg(upstream.url)}, "gateway": {"keys": [key]}})
    import anthropic

    ok = anthropic_client(gw, api_key="sk-team-1").messages.create(
        model=ALIAS, max_tokens=10, messages=first_turn("hi")
    )
    assert ok.content[0].text == "ok"
    bearer = anthropic_client(gw, api_key=None, auth_token="sk-team-1")
    assert bearer.messages.create(model=ALIAS, max_tokens=10, messages=first_turn("hi")).content
    with pytest.raises(anthropic.AuthenticationError) as err:
        anthropic_client(gw, api_key="sk-wrong").messages.create(
            model=ALIAS, max_tokens=10, messages=first_turn("hi")
        )
    assert err.value.body["error"]["type"] == "authentication_error"
    traces = gw.traces()
    assert sorted((t.status, t.key_id) for t in traces) == [("error", None), ("ok", "team"), ("ok", "team")]


@pytest.mark.parametrize(
    ("body", "status", "kind", "says"),
    [
        (
            {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]},
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        ({"model": ALIAS, "max_tokens": 5, "messages": []}, 400, "invalid_request_error", "messages"),
        (
            {"model": ALIAS, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            400,
            "invalid_request_error",
            "messages.0.role",
        ),
        (
            {
                "model": ALIAS,
                "max_tokens": 5,
                "messages": first_turn("x"),
                "tools": [{"type": "web_search_20250305"}],
            },
            400,
            "invalid_request_error",
            "tools.0",
        ),
        (
            {"model": ALIAS, "max_tokens": 5, "messages": first_turn("x"), "frobnicate": 1},
            400,
            "invalid_request_error",
            "frobnicate",
        ),
        (
            {"model": "no-such-model", "max_tokens": 5, "messages": first_turn("x")},
            404,
            "not_found_error",
            "no-such-model",
        ),
        (b"{not json", 400, "invalid_request_error", "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, 400, "invalid_request_error", "nested"),
    ],
)
def test_bad_requests_get_anthropic_errors_and_a_trace(
    shared: Running, body: Any, status: int, kind: str, says: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(
        f"{shared.server.base}/v1/messages",
        content=content,
        headers={"content-type": "application/json", "x-api-key": "x", "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == status
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == kind
    assert says in data["error"]["message"]
    (rec,) = [t for t in shared.traces() if t.id == r.headers["x-smallfleet-trace-id"]]
    assert rec.status == "error" and rec.http_status == status


def test_oversized_body_wrong_method_and_upstream_failure(
    upstream: ScriptedUpstream, start_gateway: Callable[..., Running]
) -> None:
    upstream.reset()
    gw = start_gateway({"models": {ALIAS: model_cfg(upstream.url)}, "gateway": {"max_body_bytes": 2048}})
    url = f"{gw.server.base}/v1/messages"
    big = {"model": ALIAS, "max_tokens": 5, "messages": first_turn("x" * 5000)}
    r = httpx.post(url, json=big)
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
    r = httpx.get(url)
    assert r.status_code == 405 and r.json()["type"] == "error"
    upstream.push(Reply.error(500, "the upstream broke"))
    r = httpx.post(url, json={"model": ALIAS, "max_tokens": 5, "messages": first_turn("x")})
    assert r.status_code == 502 and r.json()["error"]["type"] == "api_error"
    upstream.push(Reply.error(500, "the upstream broke"))
    body = {"model": ALIAS, "max_tokens": 5, "messages": first_turn("x"), "stream": True}
    r = httpx.post(url, json=body)  # failed before the first byte: still a plain error answer
    assert r.status_code == 502 and r.json()["error"]["type"] == "api_error"
    assert len(gw.traces()) == 4


# ---------------------------------------------------------------- served by a specialist


class ScriptedCaller(Specialist):
    """Calls ``get_weather`` for the city named last in the user's text, confidently (test-only)."""

    kind: ClassVar[str] = SCRIPTED_KIND

    def __init__(self) -> None:
        self.meta = SpecialistMeta(kind=self.kind, base_model="scripted", params={})

    def predict(self, requests: Sequence[ChatRequest]) -> list[Prediction]:
        out = []
        for r in requests:
            city = r.last_user_text().rstrip("?").split()[-1]
            response = ChatResponse.of_tool_calls(
                "scripted", [("get_weather", {"city": city})], Usage.of(0, 0)
            )
            out.append(Prediction(response, 0.97))
        return out

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        self.meta.write(d)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ScriptedCaller:
        return cls()


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[Running]:
    """A gateway with a tool-calling route promoted from chat-completions traffic (its static key)."""
    from smallfleet.config import load_settings
    from smallfleet.gateway.app import create_app
    from smallfleet.gateway.server import BackgroundServer
    from smallfleet.routing.matcher import static_key_of_dict
    from smallfleet.routing.routes import Route, RouteStore
    from smallfleet.specialists.base import KINDS
    from smallfleet.store.trace_store import TraceStore

    KINDS[SCRIPTED_KIND] = f"{__name__}:ScriptedCaller"
    work = tmp_path_factory.mktemp("routed")
    chat_traffic = {"messages": [{"role": "system", "content": SYSTEM}], "tools": [CHAT_WEATHER]}
    matcher = {"version": 1, "keys": [static_key_of_dict(chat_traffic)]}
    url = f"sqlite:///{work / 'traces.db'}"
    store = TraceStore(url)
    route = Route(
        name="weather",
        kind="tool_caller",
        specialist_path=str(ScriptedCaller().save(work / "weather")),
        threshold=0.5,
        mode="on",
        matcher=matcher,
    )
    RouteStore(store.engine).promote(route, actor="test")
    settings = load_settings(
        env={},
        overrides={
            "models": {ALIAS: model_cfg(upstream.url)},
            "store": {"url": url},
            "gateway": {"flush_interval_ms": 20},
            "pricing": {"local_usd_per_hour": 0.5},
            "routing": {"enabled": True, "reload_seconds": 0.2, "seed": 7, "guard_fraction": 0.0},
        },
    )
    app = create_app(settings, store=store)
    server = BackgroundServer(app).start()
    yield Running(app, server, store)
    server.stop()
    store.close()
    KINDS.pop(SCRIPTED_KIND, None)


def test_a_task_promoted_from_chat_traffic_serves_messages_requests(
    routed: Running, upstream: ScriptedUpstream
) -> None:
    upstream.reset()
    chat = routed.client().chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Weather in Rome?"}],
        tools=[CHAT_WEATHER],
    )
    assert chat.headers["x-smallfleet-route"] == "specialist:weather"
    client = anthropic_client(routed)
    raw = client.messages.with_raw_response.create(
        model=ALIAS, max_tokens=50, system=SYSTEM, tools=[WEATHER], messages=first_turn("Weather in Lima?")
    )
    assert raw.headers["x-smallfleet-route"] == "specialist:weather"
    (call,) = raw.parse().content
    assert (call.name, call.input) == ("get_weather", {"city": "Lima"})
    with client.messages.stream(
        model=ALIAS, max_tokens=50, system=SYSTEM, tools=[WEATHER], messages=first_turn("Weather in Kyiv?")
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use" and streamed.content[0].input == {"city": "Kyiv"}
    assert upstream.requests == []  # the large model was never asked
    traces = routed.traces()
    assert len(traces) == 3
    assert {t.route for t in traces} == {"specialist:weather"}
    assert all(t.confidence == pytest.approx(0.97) for t in traces)


# ---------------------------------------------------------------- translation round trips


CHAT_REQUEST = {
    "model": "m",
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {"role": "user", "content": "Thanks!"},
    ],
    "tools": [CHAT_WEATHER],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "max_tokens": 64,
    "stop": ["END"],
    "temperature": 0.5,
}


def test_chat_request_round_trips_through_messages() -> None:
    messages = chat_request_to_messages(CHAT_REQUEST)
    assert messages["system"] == SYSTEM
    assert [t["role"] for t in messages["messages"]] == ["user", "assistant", "user"]
    results = messages["messages"][2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text"]
    assert messages["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    back = messages_request_to_chat(messages)
    assert ChatRequest.parse(back).to_dict() == ChatRequest.parse(CHAT_REQUEST).to_dict()


@pytest.mark.parametrize(("choice", "expected"), [("auto", "auto"), ("required", "any"), ("none", "none")])
def test_tool_choice_round_trips(choice: str, expected: str) -> None:
    messages = chat_request_to_messages({**CHAT_REQUEST, "tool_choice": choice, "parallel_tool_calls": None})
    assert messages["tool_choice"] == {"type": expected}
    assert messages_request_to_chat(messages)["tool_choice"] == choice


@pytest.mark.parametrize(
    ("finish", "stop"), [("stop", "end_turn"), ("tool_calls", "tool_use"), ("length", "max_tokens")]
)
def test_responses_round_trip_with_usage_and_finish_reasons(finish: str, stop: str) -> None:
    if finish == "tool_calls":
        resp = ChatResponse.of_tool_calls("m", [("get_weather", {"city": "Paris"}), ("get_time", {})])
    else:
        resp = ChatResponse.of_text("m", "Hello there")
    resp.choices[0].finish_reason = finish  # type: ignore[assignment]
    resp.usage = Usage.of(17, 5)
    chat = resp.to_dict()
    messages = chat_response_to_messages(chat)
    assert messages["stop_reason"] == stop
    assert messages["usage"] == {"input_tokens": 17, "output_tokens": 5}
    back = ChatResponse.model_validate(messages_response_to_chat(messages)).to_dict()
    for key in ("model", "choices", "usage"):
        assert back[key] == chat[key]

    # Streams: chat chunks → Messages events → chat chunks, the same response.
    events = ChatToMessagesStream()
    sse = b"".join(events.feed(c.to_dict()) for c in response_to_chunks(resp, include_usage=True, piece=4))
    sse += events.done()
    to_chat = MessagesToChatStream(include_usage=True)
    chunks = []
    for raw in sse.split(b"\n\n")[:-1]:
        data = json.loads(raw.split(b"data: ", 1)[1])
        chunks += [ChatChunk.model_validate(c) for c in to_chat.feed(data)]
    assert to_chat.stopped
    rebuilt = chunks_to_response(chunks).to_dict()
    for key in ("model", "choices", "usage"):
        assert rebuilt[key] == chat[key]
