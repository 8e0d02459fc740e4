"""OpenAICompatible against a real HTTP server on loopback (ScriptedUpstream)."""

from __future__ import annotations

import email.utils
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from smallfleet.config import OpenAIModelConfig, Settings
from smallfleet.errors import ConfigError, RateLimited, UpstreamError, UpstreamTimeout
from smallfleet.models.openai_http import OpenAICompatible, parse_retry_after
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatRequest, ChatResponse, Usage, chunks_to_response

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def req(**extra: Any) -> ChatRequest:
    return ChatRequest.parse(
        {"model": "alias", "messages": [{"role": "user", "content": "What's up in Paris?"}], **extra}
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture
def upstream(server: ScriptedUpstream) -> ScriptedUpstream:
    server.reset()
    return server


def model(up: ScriptedUpstream, **kw: Any) -> OpenAICompatible:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return OpenAICompatible(base_url=up.url, model="gpt-upstream", **kw)


async def test_success_sends_upstream_model_and_key(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("Sunny, 21 degrees.", model="gpt-upstream-2025"))
    m = model(upstream, api_key="sk-secret", headers={"X-Team": "agents"})
    resp = await m.complete(req(temperature=0.2))
    await m.aclose()
    assert resp.text == "Sunny, 21 degrees."
    assert resp.model == "gpt-upstream-2025"
    assert resp.usage is not None and resp.usage.prompt_tokens == 10
    sent = upstream.requests[-1]
    assert sent["model"] == "gpt-upstream"
    assert sent["temperature"] == 0.2
    assert "stream" not in sent
    assert upstream.headers[-1]["authorization"] == "Bearer sk-secret"
    assert upstream.headers[-1]["x-team"] == "agents"


async def test_no_client_before_first_call(upstream: ScriptedUpstream) -> None:
    m = model(upstream)
    assert m._client is None
    assert upstream.requests == []
    await m.complete(req())
    assert m._client is not None
    await m.aclose()
    assert m._client is None


async def test_tools_round_trip(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.tool_call("get_weather", {"city": "Paris"}))
    m = model(upstream)
    resp = await m.complete(req(tools=[WEATHER_TOOL], tool_choice="auto"))
    await m.aclose()
    call = resp.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert resp.choices[0].finish_reason == "tool_calls"
    assert upstream.requests[-1]["tools"] == [WEATHER_TOOL]
    assert upstream.requests[-1]["tool_choice"] == "auto"


async def test_json_schema_and_unknown_fields_pass_through(upstream: ScriptedUpstream) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True}}
    upstream.push(Reply.text('{"city": "Paris", "days": 3}'))
    m = model(upstream)
    r = req(response_format=rf, reasoning_effort="low", prediction={"type": "content", "content": "x"})
    resp = await m.complete(r)
    await m.aclose()
    assert json.loads(resp.text) == {"city": "Paris", "days": 3}
    sent = upstream.requests[-1]
    assert sent["response_format"] == rf
    assert sent["reasoning_effort"] == "low"
    assert sent["prediction"] == {"type": "content", "content": "x"}


async def test_complete_raw_forwards_dicts_and_bytes(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("one"), Reply.text("two"))
    m = model(upstream)
    body = {"model": "gpt-upstream", "messages": [{"role": "user", "content": "hi"}], "vendor_x": [1, 2]}
    first = await m.complete_raw(body)
    second = await m.complete_raw(json.dumps(body).encode())
    await m.aclose()
    assert first["choices"][0]["message"]["content"] == "one"
    assert second["choices"][0]["message"]["content"] == "two"
    assert upstream.requests == [body, body]


async def test_streaming_assembles_to_the_scripted_response(upstream: ScriptedUpstream) -> None:
    scripted = ChatResponse.of_text("gpt-upstream", "The weather in Paris is sunny and mild.", Usage.of(9, 8))
    upstream.push(Reply.stream(scripted, piece=5, include_usage=True))
    m = model(upstream)
    chunks = [c async for c in m.stream(req(stream=True, stream_options={"include_usage": True}))]
    await m.aclose()
    assert len(chunks) > 5
    assert chunks_to_response(chunks) == scripted
    sent = upstream.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_streaming_tool_calls(upstream: ScriptedUpstream) -> None:
    scripted = ChatResponse.of_tool_calls("gpt-upstream", [("get_weather", {"city": "Oslo"})])
    upstream.push(Reply.stream(scripted, include_usage=False))
    m = model(upstream)
    chunks = [c async for c in m.stream(req(tools=[WEATHER_TOOL]))]
    await m.aclose()
    assert chunks_to_response(chunks) == scripted


async def test_sse_comments_multiline_data_and_keepalives(upstream: ScriptedUpstream) -> None:
    """A hand-written SSE body: comments, event: lines, data split across lines, CRLF."""
    c1 = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    first = {**c1, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}
    second = {**c1, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}
    split = json.dumps(second, indent=1).split("\n")
    body = (
        ": keep-alive\r\n\r\n"
        f"event: message\r\ndata: {json.dumps(first)}\r\n\r\n"
        ": ping\n\n" + "".join(f"data: {line}\n" for line in split) + "\ndata: [DONE]\n\n"
    )
    upstream.push(Reply(body=body, headers={"content-type": "text/event-stream"}))
    m = model(upstream)
    chunks = [c async for c in m.stream(req())]
    await m.aclose()
    assert chunks_to_response(chunks).text == "Hello"


async def test_text_completion_object_is_tolerated(upstream: ScriptedUpstream) -> None:
    """TGI and LoRAX label chat answers ``"object": "text_completion"``."""
    body = ChatResponse.of_text("lorax", "fine").to_dict() | {"object": "text_completion"}
    chunk = {"id": "c", "object": "text_completion", "created": 1, "model": "lorax"}
    chunk["choices"] = [{"index": 0, "delta": {"content": "fine"}, "finish_reason": "stop"}]
    upstream.push(Reply(body=body), Reply(chunks=[chunk]))
    m = model(upstream)
    assert (await m.complete(req())).text == "fine"
    assert chunks_to_response([c async for c in m.stream(req())]).text == "fine"
    await m.aclose()


async def test_stream_against_a_server_that_ignores_stream(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("not streamed"))
    m = model(upstream)
    chunks = [c async for c in m.stream(req())]
    await m.aclose()
    assert chunks_to_response(chunks).text == "not streamed"


async def test_retry_after_is_honoured_then_success(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.error(429, "slow down", headers={"Retry-After": "1"}), Reply.text("finally"))
    m = model(upstream, max_retries=2, backoff_max=5)
    t0 = time.monotonic()
    resp = await m.complete(req())
    waited = time.monotonic() - t0
    await m.aclose()
    assert resp.text == "finally"
    assert len(upstream.requests) == 2
    assert 0.95 <= waited < 4.0  # the 1 s asked for, not the 10 ms backoff


async def test_retry_after_capped_by_backoff_max(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.error(429, headers={"Retry-After": "30"}), Reply.text("ok"))
    m = model(upstream, backoff_max=0.2)
    t0 = time.monotonic()
    assert (await m.complete(req())).text == "ok"
    assert time.monotonic() - t0 < 2.0
    await m.aclose()


async def test_rate_limited_after_retries(upstream: ScriptedUpstream) -> None:
    upstream.push(*[Reply.error(429, "quota", headers={"retry-after-ms": "20"}) for _ in range(3)])
    m = model(upstream, max_retries=2)
    with pytest.raises(RateLimited) as ei:
        await m.complete(req())
    await m.aclose()
    assert ei.value.status == 429
    assert ei.value.retry_after == pytest.approx(0.02)
    assert "quota" in (ei.value.body or "")
    assert len(upstream.requests) == 3


async def test_500s_until_retries_are_exhausted(upstream: ScriptedUpstream) -> None:
    upstream.push(*[Reply.error(500, "the GPU caught fire") for _ in range(10)])
    m = model(upstream, max_retries=3, api_key="sk-do-not-leak")
    with pytest.raises(UpstreamError) as ei:
        await m.complete(req())
    await m.aclose()
    err = ei.value
    assert err.status == 500
    assert "the GPU caught fire" in (err.body or "")
    assert upstream.url in err.message and "500" in err.message and "4 attempts" in err.message
    assert "sk-do-not-leak" not in err.message
    assert len(upstream.requests) == 4  # max_retries + 1


async def test_503_then_success(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.error(503), Reply.error(502), Reply.text("recovered"))
    m = model(upstream, max_retries=2)
    assert (await m.complete(req())).text == "recovered"
    await m.aclose()
    assert len(upstream.requests) == 3


async def test_other_4xx_are_not_retried(upstream: ScriptedUpstream) -> None:
    body = {"error": {"message": "Invalid 'messages[0].role'", "type": "invalid_request_error"}}
    upstream.push(Reply(status=400, body=body))
    m = model(upstream, max_retries=3)
    with pytest.raises(UpstreamError) as ei:
        await m.complete(req())
    await m.aclose()
    assert ei.value.status == 400
    assert json.loads(ei.value.body or "") == body
    assert len(upstream.requests) == 1


async def test_404_hints_at_base_url(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply(status=404, body={"error": {"message": "Not Found"}}))
    m = OpenAICompatible(base_url=upstream.base, model="m")  # forgot the /v1
    with pytest.raises(UpstreamError) as ei:
        await m.complete(req())
    await m.aclose()
    assert ei.value.status == 404 and "/v1" in ei.value.message


async def test_401_hints_at_the_key(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply(status=401, body={"error": {"message": "Incorrect API key provided"}}))
    m = model(upstream)
    with pytest.raises(UpstreamError) as ei:
        await m.complete(req())
    await m.aclose()
    assert ei.value.status == 401 and "api_key_env" in ei.value.message
    assert len(upstream.requests) == 1


async def test_read_timeout(upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text("too late", delay=1.5))
    m = model(upstream, read_timeout=0.2, max_retries=2)
    t0 = time.monotonic()
    with pytest.raises(UpstreamTimeout) as ei:
        await m.complete(req())
    assert time.monotonic() - t0 < 1.2
    await m.aclose()
    assert upstream.url in ei.value.message
    assert len(upstream.requests) == 1  # a read timeout is not retried


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_connection_refused_after_retries() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    m = OpenAICompatible(base_url=url, model="m", max_retries=2, backoff_base=0.01, api_key="sk-x")
    t0 = time.monotonic()
    with pytest.raises(UpstreamError) as ei:
        await m.complete(req())
    assert time.monotonic() - t0 < 2
    await m.aclose()
    assert ei.value.status is None
    assert "Could not connect" in ei.value.message and url in ei.value.message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"id": "x", "choices": [', "not JSON"),
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"id": "x", "object": "chat.completion"}', "'choices'"),
        ('{"error": {"message": "context length exceeded"}}', "an error"),
        ("", "not JSON"),
        ('{"model": "m", "choices": [{"message": {"role": "robot"}}]}', "not a chat completion"),
    ],
)
async def test_malformed_upstream_bodies(upstream: ScriptedUpstream, body: str, fragment: str) -> None:
    upstream.push(Reply(body=body))
    m = model(upstream)
    with pytest.raises(UpstreamError) as ei:
        await m.complete(req())
    await m.aclose()
    assert fragment in ei.value.message
    assert ei.value.body == body or json.loads(ei.value.body or "null") == json.loads(body)


async def test_stream_cut_midway(upstream: ScriptedUpstream) -> None:
    scripted = ChatResponse.of_text("m", "a long answer that never finishes")
    upstream.push(Reply.stream(scripted, piece=4, cut_after=3))
    m = model(upstream, max_retries=2)
    got = []
    with pytest.raises(UpstreamError) as ei:
        async for c in m.stream(req()):
            got.append(c)
    await m.aclose()
    assert "ended early" in ei.value.message
    assert len(got) == 3  # what arrived before the cut was delivered
    assert len(upstream.requests) == 1  # no retry once the stream had begun


def _sse(*events: dict[str, Any]) -> Reply:
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events)  # a complete body, no [DONE]
    return Reply(body=body, headers={"content-type": "text/event-stream"})


async def test_stream_without_done(upstream: ScriptedUpstream) -> None:
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    part = {**head, "choices": [{"index": 0, "delta": {"content": "half"}}]}
    last = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    upstream.push(_sse(part, last), _sse(part), _sse({**head, "choices": "nope"}))
    m = model(upstream)
    # finished (a finish_reason came) but no [DONE]: some servers do that; accepted
    assert chunks_to_response([c async for c in m.stream(req())]).text == "half"
    # neither [DONE] nor a finish_reason: cut short
    with pytest.raises(UpstreamError, match="ended early"):
        async for _ in m.stream(req()):
            pass
    # a chunk that is not a chat completion chunk
    with pytest.raises(UpstreamError, match="not a chat completion chunk"):
        async for _ in m.stream(req()):
            pass
    await m.aclose()


async def test_stream_retries_before_first_byte(upstream: ScriptedUpstream) -> None:
    scripted = ChatResponse.of_text("m", "second time lucky")
    upstream.push(Reply.error(503), Reply.stream(scripted))
    m = model(upstream)
    chunks = [c async for c in m.stream(req())]
    await m.aclose()
    assert chunks_to_response(chunks).text == "second time lucky"
    assert len(upstream.requests) == 2


async def test_stream_error_status_at_start(upstream: ScriptedUpstream) -> None:
    upstream.push(*[Reply.error(429, headers={"retry-after": "0"}) for _ in range(2)])
    m = model(upstream, max_retries=1)
    with pytest.raises(RateLimited):
        async for _ in m.stream(req()):
            pass
    await m.aclose()
    assert len(upstream.requests) == 2


async def test_error_event_inside_stream(upstream: ScriptedUpstream) -> None:
    ok = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    ok["choices"] = [{"index": 0, "delta": {"content": "hi"}}]
    err = {"error": {"message": "model overloaded mid-stream", "type": "server_error"}}
    upstream.push(Reply(chunks=[ok, err]))
    m = model(upstream)
    with pytest.raises(UpstreamError) as ei:
        async for _ in m.stream(req()):
            pass
    await m.aclose()
    assert "model overloaded mid-stream" in ei.value.message


async def test_stream_stall_is_a_timeout(upstream: ScriptedUpstream) -> None:
    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}
    upstream.push(Reply(chunks=[first, first], chunk_delay=0.6))
    m = model(upstream, read_timeout=0.15)
    with pytest.raises(UpstreamTimeout):
        async for _ in m.stream(req()):
            pass
    await m.aclose()


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(date, now=now) or 0) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True)) == 0.0


async def test_retry_after_http_date(upstream: ScriptedUpstream) -> None:
    date = email.utils.formatdate(time.time() + 1, usegmt=True)
    upstream.push(Reply.error(429, headers={"Retry-After": date}), Reply.text("ok"))
    m = model(upstream, backoff_max=3)
    t0 = time.monotonic()
    assert (await m.complete(req())).text == "ok"
    # HTTP dates have whole-second resolution: the wait is between 0 and 1 s, not the 10 ms backoff.
    assert time.monotonic() - t0 < 2.5
    await m.aclose()


def test_from_config_reads_the_key_from_the_named_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = OpenAIModelConfig(base_url="http://127.0.0.1:9/v1/", api_key_env="SF_TEST_KEY", max_retries=5)
    monkeypatch.delenv("SF_TEST_KEY", raising=False)
    with pytest.raises(ConfigError) as ei:
        OpenAICompatible.from_config("big", cfg, Settings())
    assert "SF_TEST_KEY" in ei.value.message and "export SF_TEST_KEY" in ei.value.message
    monkeypatch.setenv("SF_TEST_KEY", "sk-from-env")
    m = OpenAICompatible.from_config("big", cfg, Settings())
    assert m.model == "big" and m.name == "big"
    assert m.url == "http://127.0.0.1:9/v1/chat/completions"
    assert m.max_retries == 5
    assert "sk-from-env" not in repr(m)
    assert m._client is None


async def test_model_reused_across_event_loops(upstream: ScriptedUpstream) -> None:
    """A client built on one event loop is replaced, not reused, on another (CLI, tests, threads)."""
    import asyncio
    import threading

    m = model(upstream)
    assert (await m.complete(req())).text == "ok"
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(m.complete(req())).text))
    t.start()
    t.join()
    assert out == ["ok"]
    assert (await m.complete(req())).text == "ok"
    await m.aclose()
