"""Chat completions with ``custom`` tools and an ``allowed_tools`` tool choice: accepted, passed
through to the upstream as sent, and recorded (the official ``openai`` SDK against the real
gateway on loopback; the upstream scripted)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gwkit import Running, model_cfg

from smallfleet.testing import Reply, ScriptedUpstream

ALIAS = "big"
PATCH = {
    "type": "custom",
    "custom": {
        "name": "apply_patch",
        "description": "Apply a patch to the repository.",
        "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: /[\\s\\S]+/"}},
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ALLOWED = {
    "type": "allowed_tools",
    "allowed_tools": {"mode": "required", "tools": [{"type": "custom", "custom": {"name": "apply_patch"}}]},
}
CALL = {
    "id": "call_9",
    "type": "custom",
    "custom": {"name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
}


@pytest.fixture(scope="module")
def gw(start_gateway: Any, upstream: ScriptedUpstream) -> Running:
    return start_gateway({"models": {ALIAS: model_cfg(upstream.url, model="gpt-upstream")}})


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream) -> None:
    upstream.reset()


def _custom_call_reply() -> Reply:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-upstream",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [CALL]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
    }
    return Reply(body=body)


def test_custom_tool_and_allowed_tools_pass_through_over_two_turns(
    gw: Running, upstream: ScriptedUpstream
) -> None:
    upstream.push(_custom_call_reply(), Reply.text("Patched."))
    client = gw.client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Fix the typo."}]
    raw = client.chat.completions.with_raw_response.create(
        model=ALIAS, messages=messages, tools=[WEATHER, PATCH], tool_choice=ALLOWED
    )
    first = raw.parse()
    (call,) = first.choices[0].message.tool_calls
    assert (call.type, call.custom.name, call.custom.input) == (
        "custom",
        "apply_patch",
        CALL["custom"]["input"],
    )
    sent = upstream.requests[-1]
    assert (sent["tools"], sent["tool_choice"]) == ([WEATHER, PATCH], ALLOWED)  # as sent
    t = next(t for t in gw.traces() if t.id == raw.headers["x-smallfleet-trace-id"])
    assert (t.status, t.route, t.tool_names) == ("ok", "direct", ["get_weather", "apply_patch"])
    assert t.request["tools"][1] == PATCH and t.request["tool_choice"] == ALLOWED
    assert t.response["choices"][0]["message"]["tool_calls"] == [CALL]
    assert (t.input_tokens, t.output_tokens) == (40, 12)

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_9", "content": "applied"},
    ]
    second = client.chat.completions.create(model=ALIAS, messages=messages, tools=[WEATHER, PATCH])
    assert second.choices[0].message.content == "Patched."
    assert upstream.requests[-1]["messages"][1]["tool_calls"] == [CALL]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "custom", "custom": {}}]}, "tools[0].custom.name"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice.allowed_tools"),
        (
            {
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": "maybe", "tools": [WEATHER]},
                }
            },
            "tool_choice.allowed_tools.mode",
        ),
    ],
)
def test_malformed_custom_tools_get_a_400_naming_the_field(
    gw: Running, upstream: ScriptedUpstream, extra: dict[str, Any], param: str
) -> None:
    body = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}], **extra}
    r = httpx.post(f"{gw.url}/chat/completions", json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert not upstream.requests
