"""AnthropicMessages (``backend: anthropic``) against a scripted server that speaks Anthropic's
Messages API over real HTTP on loopback, alone and behind the real gateway."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from smallfleet.config import AnthropicModelConfig, load_settings
from smallfleet.errors import ConfigError, UpstreamError, UpstreamRejected
from smallfleet.gateway.server import BackgroundServer
from smallfleet.models.anthropic_http import AnthropicMessages
from smallfleet.models.registry import ModelRegistry
from smallfleet.types import ChatRequest, chunks_to_response

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
KEY = "sk-ant-test-key"


def message(
    *blocks: dict[str, Any], stop: str = "end_turn", usage: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": list(blocks),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 12, "output_tokens": 4},
    }


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def tool_use(name: str, args: dict[str, Any], tid: str = "toolu_01") -> dict[str, Any]:
    return {"type": "tool_use", "id": tid, "name": name, "input": args}


@dataclass
class Answer:
    """One scripted answer: a message (streamed as events when asked), or an error status."""

    body: dict[str, Any] | None = None
    status: int = 200
    error_mid_stream: bool = False


def events_of(msg: dict[str, Any], error_mid_stream: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events Anthropic streams for ``msg``."""
    start = {**msg, "content": [], "stop_reason": None, "usage": {**msg["usage"], "output_tokens": 1}}
    out = [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
    for i, block in enumerate(msg["content"]):
        if block["type"] == "text":
            out.append(
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": text("")},
                )
            )
            for j in range(0, len(block["text"]), 4):
                delta = {"type": "text_delta", "text": block["text"][j : j + 4]}
                out.append(
                    ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
                )
        else:
            head = {**block, "input": {}}
            out.append(
                ("content_block_start", {"type": "content_block_start", "index": i, "content_block": head})
            )
            args = json.dumps(block["input"])
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": part}
                out.append(
                    ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
                )
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        if error_mid_stream:
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            return [*out, ("error", error)]
    delta = {"stop_reason": msg["stop_reason"], "stop_sequence": None}
    out.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": msg["usage"]["output_tokens"]},
            },
        )
    )
    out.append(("message_stop", {"type": "message_stop"}))
    return out


@dataclass
class ScriptedAnthropic:
    """An ASGI app speaking Anthropic's ``POST /v1/messages``; answers from ``script``, then a default."""

    script: deque[Answer] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        request = json.loads(body)
        self.requests.append(request)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        answer = self.script.popleft() if self.script else Answer(message(text("ok")))
        if answer.status != 200 or scope["path"] != "/v1/messages":
            status = answer.status if answer.status != 200 else 404
            error = {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "scripted failure"},
            }
            await self._send(send, status, b"application/json", json.dumps(error).encode())
            return
        assert answer.body is not None
        if not request.get("stream"):
            await self._send(send, 200, b"application/json", json.dumps(answer.body).encode())
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for name, data in events_of(answer.body, answer.error_mid_stream):
            event = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _send(send: Any, status: int, ctype: bytes, data: bytes) -> None:
        headers = [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ScriptedAnthropic, BackgroundServer]]:
    app = ScriptedAnthropic()
    with BackgroundServer(app) as server:
        yield app, server


@pytest.fixture
def anthropic_up(served: tuple[ScriptedAnthropic, BackgroundServer]) -> ScriptedAnthropic:
    app, _ = served
    app.script.clear()
    app.requests.clear()
    app.headers.clear()
    return app


@pytest.fixture
def model(
    served: tuple[ScriptedAnthropic, BackgroundServer], anthropic_up: ScriptedAnthropic
) -> AnthropicMessages:
    _, server = served
    return AnthropicMessages(
        base_url=server.url, model="claude-test", api_key=KEY, max_retries=1, backoff_base=0.0
    )


def ask(**extra: Any) -> ChatRequest:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
    return ChatRequest.parse({"model": "alias", "messages": messages, **extra})


# ---------------------------------------------------------------- the model alone


async def test_complete_speaks_the_messages_wire_format(
    model: AnthropicMessages, anthropic_up: ScriptedAnthropic
) -> None:
    usage = {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 100}
    anthropic_up.script.append(
        Answer(
            message(
                text("Checking."), tool_use("get_weather", {"city": "Paris"}), stop="tool_use", usage=usage
            )
        )
    )
    out = await model.complete(ask(tools=[WEATHER_TOOL], tool_choice="required", stop="END"))
    assert out.choices[0].finish_reason == "tool_calls"
    assert out.message.content == "Checking."
    (call,) = out.message.tool_calls or []
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "toolu_01",
        "get_weather",
        {"city": "Paris"},
    )
    assert out.usage is not None and (out.usage.prompt_tokens, out.usage.completion_tokens) == (120, 9)
    assert (
        out.usage.prompt_tokens_details is not None and out.usage.prompt_tokens_details.cached_tokens == 100
    )
    (sent,) = anthropic_up.requests
    assert sent["model"] == "claude-test" and sent["max_tokens"] == 4096  # the API requires one
    assert sent["system"] == "Be brief." and sent["messages"] == [
        {"role": "user", "content": "Weather in Paris?"}
    ]
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert sent["tool_choice"] == {"type": "any"} and sent["stop_sequences"] == ["END"]
    headers = anthropic_up.headers[0]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers


async def test_stream_gives_chat_chunks_with_usage(
    model: AnthropicMessages, anthropic_up: ScriptedAnthropic
) -> None:
    anthropic_up.script.append(
        Answer(
            message(text("Let me look that up."), tool_use("get_weather", {"city": "Rome"}), stop="tool_use")
        )
    )
    request = ask(tools=[WEATHER_TOOL], stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in model.stream(request)]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 4)
    out = chunks_to_response(chunks)
    assert out.message.content == "Let me look that up." and out.choices[0].finish_reason == "tool_calls"
    (call,) = out.message.tool_calls or []
    assert json.loads(call.function.arguments) == {"city": "Rome"} and call.id == "toolu_01"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # token by token
    assert anthropic_up.requests[0]["stream"] is True


async def test_errors_are_typed(model: AnthropicMessages, anthropic_up: ScriptedAnthropic) -> None:
    anthropic_up.script.append(Answer(status=400))
    with pytest.raises(UpstreamRejected) as rejected:
        await model.complete(ask())
    assert rejected.value.status_code == 400 and "scripted failure" in rejected.value.message
    anthropic_up.script.extend([Answer(status=529), Answer(status=529)])  # overloaded: retried, then failed
    with pytest.raises(UpstreamError) as failed:
        await model.complete(ask())
    assert failed.value.status == 529 and len(anthropic_up.requests) == 3
    anthropic_up.script.append(Answer(message(text("partial answer")), error_mid_stream=True))
    with pytest.raises(UpstreamError, match="Overloaded"):
        _ = [c async for c in model.stream(ask(stream=True))]
    with pytest.raises(Exception, match="response_format"):
        await model.complete(ask(response_format={"type": "json_object"}))


def test_config_and_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        env={},
        overrides={
            "models": {
                "claude": {"backend": "anthropic", "api_key_env": "SF_TEST_ANTHROPIC_KEY", "max_tokens": 512}
            }
        },
    )
    cfg = settings.models["claude"]
    assert isinstance(cfg, AnthropicModelConfig) and cfg.base_url == "https://api.anthropic.com/v1"
    registry = ModelRegistry(settings)
    assert registry.capabilities("claude") == {"streams": True, "tools": True, "json_schema": False}
    with pytest.raises(ConfigError, match="export SF_TEST_ANTHROPIC_KEY"):
        registry.get("claude")
    monkeypatch.setenv("SF_TEST_ANTHROPIC_KEY", KEY)
    built = registry.get("claude")
    assert isinstance(built, AnthropicMessages) and built.default_max_tokens == 512
    assert KEY not in repr(built)
    with pytest.raises(ConfigError, match="anthropic_verison"):
        load_settings(env={}, overrides={"models": {"c": {"backend": "anthropic", "anthropic_verison": "x"}}})


# ---------------------------------------------------------------- behind the gateway


@pytest.fixture
def gateway(
    served: tuple[ScriptedAnthropic, BackgroundServer], tmp_path: Any, anthropic_up: ScriptedAnthropic
) -> Iterator[Any]:
    from smallfleet.gateway.app import create_app
    from smallfleet.store.trace_store import TraceStore

    _, upstream = served
    url = f"sqlite:///{tmp_path / 'traces.db'}"
    cfg = {
        "backend": "anthropic",
        "base_url": upstream.url,
        "model": "claude-test",
        "max_retries": 0,
        "price": {"input": 3.0, "output": 15.0},
    }
    settings = load_settings(
        env={},
        overrides={"models": {"claude": cfg}, "store": {"url": url}, "gateway": {"flush_interval_ms": 20}},
    )
    store = TraceStore(url)
    app = create_app(settings, store=store)
    with BackgroundServer(app) as server:
        yield app, server, store
    store.close()


def traces_of(app: Any, store: Any) -> list[Any]:
    assert app.recorder.flush(10)
    return list(store.iter_traces())


def test_chat_completions_and_messages_requests_served_by_an_anthropic_upstream(
    gateway: tuple[Any, BackgroundServer, Any], anthropic_up: ScriptedAnthropic
) -> None:
    import anthropic
    import openai

    app, server, store = gateway
    anthropic_up.script.extend(
        [
            Answer(message(tool_use("get_weather", {"city": "Lima"}), stop="tool_use")),
            Answer(message(text("Warm in Lima."))),
            Answer(message(text("Streamed from Claude."))),
            Answer(message(text("Messages in, messages out."), stop="max_tokens")),
        ]
    )
    chat = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=15)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Lima?"}]
    first = chat.chat.completions.create(model="claude", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type]
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "25C"},
    ]
    second = chat.chat.completions.create(model="claude", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type]
    assert second.choices[0].message.content == "Warm in Lima."
    turn = anthropic_up.requests[1]["messages"]
    assert turn[1]["content"] == [tool_use("get_weather", {"city": "Lima"})]
    assert turn[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "25C"}]

    stream = chat.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Streamed from Claude."

    claude = anthropic.Anthropic(base_url=server.base, api_key="x", max_retries=0, timeout=15)
    with claude.messages.stream(
        model="claude", max_tokens=30, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        final = s.get_final_message()
    assert final.content[0].text == "Messages in, messages out." and final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 4
    assert anthropic_up.requests[3]["max_tokens"] == 30

    traces = traces_of(app, store)
    assert len(traces) == 4 and {t.status for t in traces} == {"ok"}
    assert {t.model_served for t in traces} == {"claude"}
    assert all(t.input_tokens == 12 and t.cost_usd == pytest.approx((12 * 3 + 4 * 15) / 1e6) for t in traces)
