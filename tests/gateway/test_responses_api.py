"""``POST /v1/responses`` end to end: the real ``openai`` SDK and the OpenAI Agents SDK against the
real gateway on loopback, the upstream a scripted chat completions server; traces in SQLite.

The gateway translates each Responses request into a chat request at its edge, so the upstream
sees (and the trace records) a chat completions body.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from gwkit import PRICE, Running, model_cfg

from smallfleet.gateway.responses_api import from_chat, to_chat, to_chat_response, to_response
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatRequest, ChatResponse, Usage

ALIAS = "big"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather forecast for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def gw(start_gateway: Any, upstream: ScriptedUpstream) -> Running:
    return start_gateway({"models": {ALIAS: model_cfg(upstream.url, model="gpt-upstream")}})


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> None:
    upstream.reset()


def only_trace(gw: Running, trace_id: str) -> Any:
    traces = [t for t in gw.traces() if t.id == trace_id]
    assert len(traces) == 1
    return traces[0]


def cost(inp: int, out: int) -> float:
    return (inp * PRICE["input"] + out * PRICE["output"]) / 1e6


# ---------------------------------------------------------------- the openai SDK


def test_plain_text_is_translated_served_and_recorded_once_redacted(
    gw: Running, upstream: ScriptedUpstream
) -> None:
    upstream.push(Reply.text("It ships tomorrow.", prompt_tokens=17))
    before = len(gw.traces())
    raw = gw.client().responses.with_raw_response.create(
        model=ALIAS,
        instructions="You are a support desk.",
        input="Where is order 1234? Mail me at jane.doe@example.com",
        max_output_tokens=50,
        extra_headers={"x-smallfleet-workload": "support"},
    )
    resp = raw.parse()
    trace_id = raw.headers["x-smallfleet-trace-id"]
    assert resp.output_text == "It ships tomorrow."
    assert resp.id == f"resp_{trace_id}"
    assert resp.status == "completed"
    assert resp.instructions == "You are a support desk."
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (17, 3, 20)
    sent = upstream.requests[-1]
    assert sent["model"] == "gpt-upstream"
    assert sent["messages"] == [
        {"role": "system", "content": "You are a support desk."},
        {"role": "user", "content": "Where is order 1234? Mail me at jane.doe@example.com"},
    ]
    assert sent["max_completion_tokens"] == 50
    assert len(gw.traces()) == before + 1
    t = only_trace(gw, trace_id)
    assert (t.status, t.http_status, t.route, t.workload) == ("ok", 200, "direct", "support")
    assert (t.input_tokens, t.output_tokens) == (17, 3)
    assert t.cost_usd == pytest.approx(cost(17, 3))
    assert t.request["messages"][0] == {"role": "system", "content": "You are a support desk."}
    assert "jane.doe@example.com" not in json.dumps(t.request)  # redacted before it was stored
    assert t.response["choices"][0]["message"]["content"] == "It ships tomorrow."


def test_stream_sends_typed_events_with_usage(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.stream(ChatResponse.of_text("u", "Hello there, friend.", Usage.of(9, 4)), piece=5))
    before = len(gw.traces())
    events = list(gw.client().responses.create(model=ALIAS, input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_item.added") == 1
    assert kinds.count("response.output_item.done") == 1
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello there, friend." and len(deltas) == 4
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response
    assert done.output_text == "Hello there, friend."
    assert (done.usage.input_tokens, done.usage.output_tokens) == (9, 4)
    assert upstream.requests[-1]["stream"] is True
    assert len(gw.traces()) == before + 1
    t = only_trace(gw, done.id.removeprefix("resp_"))
    assert (t.status, t.stream, t.input_tokens, t.output_tokens) == ("ok", True, 9, 4)
    assert t.response["choices"][0]["message"]["content"] == "Hello there, friend."


def _weather_upstream(body: dict[str, Any]) -> Reply:
    """A large model that calls get_weather, then answers from the tool's output."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        answer = ChatResponse.of_text("u", f"Forecast: {last['content']}.", Usage.of(30, 5))
    else:
        answer = ChatResponse.of_tool_calls("u", [("get_weather", {"city": "Paris"})], Usage.of(20, 8))
    return Reply.stream(answer, piece=3) if body.get("stream") else Reply.of(answer)


@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_over_two_turns(gw: Running, upstream: ScriptedUpstream, stream: bool) -> None:
    upstream.set_responder(_weather_upstream)
    client = gw.client()
    ask: dict[str, Any] = {"model": ALIAS, "tools": [WEATHER], "instructions": "You forecast weather."}
    history: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        events = list(client.responses.create(input=history, stream=True, **ask))
        args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        assert json.loads(args) == {"city": "Paris"}
        first = events[-1].response
    else:
        first = client.responses.create(input=history, **ask)
    (call,) = first.output
    assert (call.type, call.name, json.loads(call.arguments)) == (
        "function_call",
        "get_weather",
        {"city": "Paris"},
    )
    assert first.usage.input_tokens == 20
    sent = upstream.requests[-1]
    assert sent["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24C"})
    if stream:
        second = list(client.responses.create(input=history, stream=True, **ask))[-1].response
    else:
        second = client.responses.create(input=history, **ask)
    assert second.output_text == "Forecast: sunny, 24C."
    messages = upstream.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[2]["tool_calls"][0]["id"] == call.call_id
    assert messages[3] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 24C"}
    for resp in (first, second):
        t = only_trace(gw, resp.id.removeprefix("resp_"))
        assert t.status == "ok" and t.tool_names == ["get_weather"]
    assert (
        only_trace(gw, first.id.removeprefix("resp_")).response["choices"][0]["finish_reason"] == "tool_calls"
    )


def test_text_format_json_schema_becomes_response_format(gw: Running, upstream: ScriptedUpstream) -> None:
    upstream.push(Reply.text('{"intent": "refund"}'))
    schema = {
        "type": "object",
        "properties": {"intent": {"type": "string"}},
        "required": ["intent"],
        "additionalProperties": False,
    }
    resp = gw.client().responses.create(
        model=ALIAS,
        input="I want my money back",
        text={"format": {"type": "json_schema", "name": "intent", "schema": schema, "strict": True}},
    )
    assert json.loads(resp.output_text) == {"intent": "refund"}
    assert upstream.requests[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "intent", "schema": schema, "strict": True},
    }
    assert resp.text.format.type == "json_schema"


def test_length_cut_is_an_incomplete_response(gw: Running, upstream: ScriptedUpstream) -> None:
    answer = ChatResponse.of_text("u", "It ships", Usage.of(5, 2))
    answer.choices[0].finish_reason = "length"
    upstream.push(Reply.of(answer))
    resp = gw.client().responses.create(model=ALIAS, input="When?", max_output_tokens=2)
    assert resp.status == "incomplete"
    assert resp.incomplete_details.reason == "max_output_tokens"


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id", "unsupported_parameter"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation", "unsupported_parameter"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "invalid_value"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type", "invalid_value"),
        ({"input": "hi", "frobnicate": 1}, "frobnicate", "unknown_parameter"),
        ({"instructions": "x"}, "input", "missing_required_parameter"),
        ({"input": 5}, "input", "invalid_type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
        (
            {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format.schema",
            "invalid_type",
        ),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
        ({"input": "hi", "temperature": 9.0}, "temperature", "invalid_value"),
    ],
)
def test_bad_requests_get_a_400_in_openais_shape_and_one_trace(
    gw: Running, upstream: ScriptedUpstream, body: dict[str, Any], param: str, code: str
) -> None:
    before = len(gw.traces())
    r = httpx.post(f"{gw.url}/responses", json={"model": ALIAS, **body}, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")
    if code == "unsupported_parameter":
        assert "send the whole history as 'input' items" in err["message"]
    assert not upstream.requests
    traces = gw.traces()
    assert len(traces) == before + 1
    t = only_trace(gw, r.headers["x-smallfleet-trace-id"])
    assert (t.route, t.status, t.http_status) == ("rejected", "error", 400)


def test_sdk_raises_its_bad_request_error(gw: Running) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        gw.client().responses.create(model=ALIAS, input="hi", previous_response_id="resp_abc")
    assert "previous_response_id" in str(info.value)


def test_get_and_invalid_json_are_refused(gw: Running) -> None:
    r = httpx.get(f"{gw.url}/responses", timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = httpx.post(
        f"{gw.url}/responses", content=b"{not json", headers={"content-type": "application/json"}, timeout=10
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_upstream_failure_mid_stream_ends_with_an_error_event(
    gw: Running, upstream: ScriptedUpstream
) -> None:
    upstream.push(Reply.stream(ChatResponse.of_text("u", "one two three four"), piece=2, cut_after=3))
    r = httpx.post(f"{gw.url}/responses", json={"model": ALIAS, "input": "hi", "stream": True}, timeout=15)
    assert r.status_code == 200
    kinds = [line.removeprefix("event: ") for line in r.text.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "response.created" and kinds[-1] == "error"
    assert "response.completed" not in kinds


# ---------------------------------------------------------------- the OpenAI Agents SDK


AGENT_SCRIPT = """
import asyncio, json, sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)
calls = []


@function_tool
def get_weather(city: str) -> str:
    \"\"\"Weather forecast for a city.\"\"\"
    calls.append(city)
    return "sunny, 24C"


async def main() -> None:
    client = AsyncOpenAI(base_url=sys.argv[1], api_key="x", max_retries=0, timeout=15)
    model = OpenAIResponsesModel(model=sys.argv[2], openai_client=client)
    agent = Agent(name="forecaster", instructions="You forecast weather.", tools=[get_weather], model=model)
    result = await Runner.run(agent, "Weather in Paris?")
    await client.close()
    print(json.dumps({"final": result.final_output, "calls": calls}))


asyncio.run(main())
"""


def test_agents_sdk_default_responses_model_runs_a_tool_agent_to_its_end(
    gw: Running, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    # In a process of its own, as an agent is run: this suite's tests/agents package shadows the
    # SDK's top-level name ``agents`` inside pytest.
    upstream.set_responder(_weather_upstream)
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT)
    before = len(gw.traces())
    env = {**os.environ, "OPENAI_AGENTS_DISABLE_TRACING": "1", "OPENAI_API_KEY": "x"}
    done = subprocess.run(
        [sys.executable, str(script), gw.url, ALIAS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"final": "Forecast: sunny, 24C.", "calls": ["Paris"]}
    traces = gw.traces()[before:]
    assert len(traces) == 2  # one per model call
    assert all(t.status == "ok" and t.tool_names == ["get_weather"] for t in traces)
    assert upstream.requests[0]["messages"][0] == {"role": "system", "content": "You forecast weather."}


# ---------------------------------------------------------------- round trips (no server)


CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "You forecast weather."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
    ],
    "tools": [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "f", "schema": {"type": "object"}}},
    "max_completion_tokens": 64,
    "temperature": 0.5,
}


def test_chat_request_round_trips_through_the_responses_shape() -> None:
    again = to_chat(from_chat(CHAT))
    assert again == CHAT
    assert ChatRequest.parse(again).tool_names() == ["get_weather"]


@pytest.mark.parametrize(
    "chat",
    [
        ChatResponse.of_tool_calls(
            "m", [("get_weather", {"city": "Paris"}), ("get_time", {})], Usage.of(20, 8)
        ),
        ChatResponse.of_text("m", "Sunny.", Usage.of(9, 2)),
    ],
)
def test_chat_response_round_trips_through_the_responses_shape(chat: ChatResponse) -> None:
    out = chat.to_dict()
    out["usage"]["prompt_tokens_details"] = {"cached_tokens": 4}
    resp = to_response(out, "resp_1")
    back = ChatResponse.model_validate(to_chat_response(resp))
    assert back.choices[0].finish_reason == chat.choices[0].finish_reason
    assert back.message.content == chat.message.content
    assert back.message.tool_calls == chat.message.tool_calls
    assert back.usage is not None and back.usage.prompt_tokens_details is not None
    assert (back.usage.prompt_tokens, back.usage.completion_tokens, back.usage.total_tokens) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
        chat.usage.total_tokens,
    )
    assert back.usage.prompt_tokens_details.cached_tokens == 4


def test_a_length_cut_round_trips() -> None:
    chat = ChatResponse.of_text("m", "It ships", Usage.of(5, 2))
    chat.choices[0].finish_reason = "length"
    resp = to_response(chat.to_dict(), "resp_1")
    assert resp["status"] == "incomplete"
    assert to_chat_response(resp)["choices"][0]["finish_reason"] == "length"
