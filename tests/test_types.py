"""The OpenAI wire types: round trips of real payloads, field-named errors, and the official SDK's view."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from smallfleet.errors import RequestInvalid
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import (
    AssistantMessage,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    DeveloperMessage,
    ResponseMessage,
    ToolMessage,
    Usage,
    UserMessage,
    chunks_to_response,
    content_text,
    response_to_chunks,
)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}

# A request as an agent framework sends it: every role, multi-part content, a tool
# round trip, strict json_schema, and fields smallfleet does not model.
REQUEST: dict[str, Any] = {
    "model": "gpt-4o-2024-08-06",
    "messages": [
        {"role": "developer", "content": "You are a travel assistant. Answer in JSON."},
        {"role": "system", "content": [{"type": "text", "text": "Today is 2026-11-25."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What's the weather where this photo was taken?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/p.jpg", "detail": "low"}},
            ],
            "name": "ana",
        },
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_9aBx2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9aBx2", "content": '{"temp": 21, "sky": "clear"}'},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": WEATHER_SCHEMA,
                "strict": True,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "weather_report", "schema": WEATHER_SCHEMA, "strict": True},
    },
    "temperature": 0.2,
    "top_p": 0.9,
    "max_completion_tokens": 256,
    "n": 1,
    "stop": ["\n\n"],
    "seed": 7,
    "user": "user-1234",
    "metadata": {"workload": "travel", "team": "agents"},
    "stream": True,
    "stream_options": {"include_usage": True},
    # fields not modelled: kept and passed on
    "reasoning_effort": "low",
    "service_tier": "auto",
    "store": False,
    "logit_bias": {"50256": -100},
    "prediction": {"type": "content", "content": "{}"},
}

# A response as api.openai.com sends it (nulls included).
RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": '{"city":"Paris","unit":"celsius"}',
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

TOOL_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-tool1",
    "object": "chat.completion",
    "created": 1741570300,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    },
                ],
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 82, "completion_tokens": 40, "total_tokens": 122},
}

# Streamed chunks as api.openai.com sends them for two parallel tool calls, with usage.
_HEAD = {
    "id": "chatcmpl-s1",
    "object": "chat.completion.chunk",
    "created": 1741570400,
    "model": "gpt-4o-mini",
}
STREAM: list[dict[str, Any]] = [
    {
        **_HEAD,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": None, "refusal": None},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
    },
    *[
        {
            **_HEAD,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [tc]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            "usage": None,
        }
        for tc in [
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            },
            {"index": 0, "function": {"arguments": '{"ci'}},
            {"index": 0, "function": {"arguments": 'ty": "Paris"}'}},
            {
                "index": 1,
                "id": "call_b",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            },
            {"index": 1, "function": {"arguments": '{"city": "Oslo"}'}},
        ]
    ],
    {
        **_HEAD,
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": None,
    },
    {**_HEAD, "choices": [], "usage": {"prompt_tokens": 82, "completion_tokens": 40, "total_tokens": 122}},
]


def drop_none(obj: Any) -> Any:
    """What ``to_dict`` promises: the same JSON without null-valued keys."""
    if isinstance(obj, dict):
        return {k: drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [drop_none(v) for v in obj]
    return obj


# ---------------------------------------------------------------- round trips


def test_request_round_trip() -> None:
    req = ChatRequest.parse(copy.deepcopy(REQUEST))
    assert req.to_dict() == REQUEST
    assert ChatRequest.parse(req.to_json()).to_dict() == REQUEST
    # the parsed view
    assert [m.role for m in req.messages] == ["developer", "system", "user", "assistant", "tool"]
    assert isinstance(req.messages[0], DeveloperMessage)
    assert isinstance(req.messages[2], UserMessage) and req.messages[2].name == "ana"
    assert isinstance(req.messages[3], AssistantMessage) and req.messages[3].tool_calls
    assert isinstance(req.messages[4], ToolMessage) and req.messages[4].tool_call_id == "call_9aBx2"
    assert req.json_schema == WEATHER_SCHEMA
    assert req.tool_names() == ["get_weather"]
    assert req.output_token_limit == 256
    assert req.last_user_text() == "What's the weather where this photo was taken?"
    assert req.system_text() == "You are a travel assistant. Answer in JSON.\nToday is 2026-11-25."
    assert req.model_extra == {
        "reasoning_effort": "low",
        "service_tier": "auto",
        "store": False,
        "logit_bias": {"50256": -100},
        "prediction": {"type": "content", "content": "{}"},
    }


def test_request_nulls_are_tolerated_and_dropped() -> None:
    data = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": None, "refusal": None},
        ],
        "temperature": None,
        "tools": None,
    }
    assert ChatRequest.parse(data).to_dict() == drop_none(data)


@pytest.mark.parametrize("payload", [RESPONSE, TOOL_RESPONSE], ids=["text", "tool_calls"])
def test_response_round_trip(payload: dict[str, Any]) -> None:
    resp = ChatResponse.model_validate(copy.deepcopy(payload))
    assert resp.to_dict() == drop_none(payload)
    assert ChatResponse.model_validate_json(resp.to_json()) == resp


def test_stream_chunks_round_trip_and_assemble() -> None:
    chunks = [ChatChunk.model_validate(c) for c in STREAM]
    assert [c.to_dict() for c in chunks] == drop_none(STREAM)
    whole = chunks_to_response(chunks)
    calls = whole.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_weather", {"city": "Oslo"}),
    ]
    assert whole.message.content is None
    assert whole.choices[0].finish_reason == "tool_calls"
    assert whole.usage == Usage.of(82, 40)
    assert whole.id == "chatcmpl-s1" and whole.model == "gpt-4o-mini"


def _modelled(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without the response-level extras a stream does not repeat."""
    out = copy.deepcopy(payload)
    out.pop("service_tier", None)
    for choice in out["choices"]:
        choice["message"].pop("annotations", None)
    return out


def _responses() -> Iterator[ChatResponse]:
    yield ChatResponse.model_validate(_modelled(RESPONSE))
    yield ChatResponse.model_validate(TOOL_RESPONSE)
    refusal = ResponseMessage(content=None, refusal="I can't help with that.")
    yield ChatResponse(model="m", choices=[Choice(message=refusal)], system_fingerprint="fp_1")
    yield ChatResponse.of_text("m", "Bonjour à tous, ça va ? 👋", Usage.of(3, 9))
    yield ChatResponse.of_tool_calls("m", [("search", {"q": "smallfleet"}), ("book", {"n": 2})])
    yield ChatResponse.of_text("m", "")


@pytest.mark.parametrize("piece", [0, 1, 5])
def test_chunks_to_response_inverts_response_to_chunks(piece: int) -> None:
    for resp in _responses():
        assert chunks_to_response(response_to_chunks(resp, include_usage=True, piece=piece)) == resp


def test_content_text_of_parts() -> None:
    req = ChatRequest.parse(REQUEST)
    assert content_text(req.messages[1].content) == "Today is 2026-11-25."
    assert content_text(None) == ""


# ---------------------------------------------------------------- errors name the field

U = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"messages": U}, "model", "Missing required parameter"),
        ({"model": 5, "messages": U}, "model", "valid string"),
        ({"model": "m"}, "messages", "Missing required parameter"),
        ({"model": "m", "messages": []}, "messages", "at least 1"),
        ({"model": "m", "messages": "hi"}, "messages", "valid list"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "robot"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role", "role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string"),
        ({"model": "m", "messages": [*U, {"role": "tool", "content": "42"}]}, "messages[1].tool_call_id", ""),
        ({"model": "m", "messages": U, "n": 2}, "n", "only n=1"),
        ({"model": "m", "messages": U, "temperature": "hot"}, "temperature", "number"),
        ({"model": "m", "messages": U, "temperature": 3}, "temperature", "less than or equal to 2"),
        ({"model": "m", "messages": U, "max_tokens": "ten"}, "max_tokens", "integer"),
        ({"model": "m", "messages": U, "stop": [1]}, "stop[0]", "string"),
        (
            {"model": "m", "messages": U, "stream_options": {"include_usage": "sure"}},
            "stream_options.include_usage",
            "",
        ),
        (
            {"model": "m", "messages": U, "response_format": {"type": "xml"}},
            "response_format.type",
            "json_schema",
        ),
        ({"model": "m", "messages": U, "tool_choice": "sometimes"}, "tool_choice", "auto"),
        (
            {"model": "m", "messages": U, "tool_choice": {"type": "function", "function": {}}},
            "tool_choice.function.name",
            "Missing",
        ),
        (
            {"model": "m", "messages": U, "tools": [{"type": "function", "function": {"description": "x"}}]},
            "tools[0].function.name",
            "Missing",
        ),
        (
            {
                "model": "m",
                "messages": U,
                "tools": [{"type": "function", "function": {"name": "f", "strict": "maybe"}}],
            },
            "tools[0].function.strict",
            "boolean",
        ),
        (
            {
                "model": "m",
                "messages": [
                    *U,
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]},
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
            "Missing",
        ),
    ],
)
def test_parse_errors_name_the_field(body: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(RequestInvalid) as ei:
        ChatRequest.parse(body)
    err = ei.value
    assert err.param == param
    assert f"'{param}'" in err.message
    assert fragment in err.message
    assert err.status_code == 400
    body_json = err.to_openai()["error"]
    assert body_json["param"] == param and body_json["type"] == "invalid_request_error"  # type: ignore[index]


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        ('{"model": "m", "messages": [', "invalid_json", "not valid JSON"),
        (b"\xff\xfe\x00", "invalid_json", "not valid JSON"),
        ("[1, 2]", "invalid_type", "JSON object"),
        ('"hello"', "invalid_type", "JSON object"),
    ],
)
def test_parse_errors_for_bodies_that_are_not_objects(raw: str | bytes, code: str, fragment: str) -> None:
    with pytest.raises(RequestInvalid) as ei:
        ChatRequest.parse(raw)
    assert ei.value.code == code
    assert fragment in ei.value.message


# ---------------------------------------------------------------- the official openai package agrees


def test_openai_sdk_parses_our_responses() -> None:
    from openai.types.chat import ChatCompletion

    for resp in _responses():
        sdk = ChatCompletion.model_validate(resp.to_dict())
        assert sdk.id == resp.id and sdk.model == resp.model
        assert sdk.choices[0].message.content == resp.message.content
        assert sdk.choices[0].finish_reason == resp.choices[0].finish_reason
        ours = [(c.id, c.function.name, c.function.arguments) for c in resp.message.tool_calls or []]
        theirs = [
            (c.id, c.function.name, c.function.arguments) for c in sdk.choices[0].message.tool_calls or []
        ]
        assert ours == theirs
        if resp.usage:
            assert sdk.usage is not None and sdk.usage.total_tokens == resp.usage.total_tokens


def test_openai_sdk_parses_our_chunks() -> None:
    from openai.types.chat import ChatCompletionChunk

    for resp in _responses():
        chunks = response_to_chunks(resp, include_usage=True, piece=3)
        sdk = [ChatCompletionChunk.model_validate(c.to_dict()) for c in chunks]
        text = "".join(c.choices[0].delta.content or "" for c in sdk if c.choices)
        assert text == (resp.message.content or "")
        args = "".join(
            tc.function.arguments or ""
            for c in sdk
            if c.choices
            for tc in c.choices[0].delta.tool_calls or []
            if tc.function
        )
        assert args == "".join(c.function.arguments for c in resp.message.tool_calls or [])
        refusal = "".join(c.choices[0].delta.refusal or "" for c in sdk if c.choices)
        assert refusal == (resp.message.refusal or "")
        assert sdk[-1].choices == []
        assert (sdk[-1].usage is not None) == (resp.usage is not None)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


def test_our_request_type_accepts_what_the_sdk_sends(upstream: ScriptedUpstream) -> None:
    from openai import OpenAI

    upstream.reset()
    upstream.push(Reply.tool_call("get_weather", {"city": "Paris", "unit": "celsius"}))
    client = OpenAI(base_url=upstream.url, api_key="sk-test", max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "error: city missing"},
        ],
        tools=[
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": True},
            }
        ],
        tool_choice="required",
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER_SCHEMA}},
        temperature=0,
        max_completion_tokens=64,
        metadata={"workload": "weather"},
        extra_body={"vendor_option": {"top_k": 20}},
    )
    client.close()
    sent = upstream.requests[-1]
    req = ChatRequest.parse(sent)
    assert req.to_dict() == drop_none(sent)
    assert req.tool_names() == ["get_weather"]
    assert req.json_schema == WEATHER_SCHEMA
    assert req.model_extra == {"vendor_option": {"top_k": 20}}
    # and the SDK read our scripted answer
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}  # type: ignore[union-attr]


def test_sdk_streams_our_chunks(upstream: ScriptedUpstream) -> None:
    from openai import OpenAI

    upstream.reset()
    scripted = ChatResponse.of_text("gpt-4o-mini", "Streaming works end to end.", Usage.of(5, 5))
    upstream.push(Reply.stream(scripted, piece=4, include_usage=True))
    client = OpenAI(base_url=upstream.url, api_key="sk-test", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "go"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    client.close()
    assert "".join(parts) == "Streaming works end to end."
    assert ChatRequest.parse(upstream.requests[-1]).stream is True
