"""A task type promoted from chat completions traffic serves ``POST /v1/responses`` too, and what
the router must not serve (``custom`` tools, an ``allowed_tools`` choice) goes to the upstream.

Real gateway on 127.0.0.1 over SQLite, the route promoted with :class:`RouteStore`, its
specialist the scripted tool caller of :mod:`routekit`, the large model a scripted upstream;
the clients are the official ``openai`` SDK's ``responses`` and ``chat.completions``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from routekit import ALIAS, SCRIPTED_KIND, RoutedGateway, ScriptedToolCaller, key_matcher, start_gateway

from smallfleet.routing.routes import Route
from smallfleet.specialists.base import KINDS
from smallfleet.testing import Reply, ScriptedUpstream

SYSTEM = "You are the weather desk. Call a tool."
WEATHER = {
    "name": "get_weather",
    "description": "Weather forecast for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
CHAT_TOOLS = [{"type": "function", "function": WEATHER}]
RESPONSES_TOOLS = [{"type": "function", **WEATHER}]
SCRIPT = {"weather in Paris": ("get_weather", {"city": "Paris", "days": 3}, 0.9)}
LARGE = "answer from the large model"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: ScriptedUpstream) -> None:
    upstream.reset()
    upstream.set_responder(lambda body: Reply.text(LARGE))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[RoutedGateway]:
    KINDS[SCRIPTED_KIND] = "routekit:ScriptedToolCaller"
    work = tmp_path_factory.mktemp("routed-responses")
    route = Route(
        name="weather",
        kind="tool_caller",
        specialist_path=str(ScriptedToolCaller(SCRIPT).save(work / "tools")),
        threshold=0.5,
        mode="on",
        matcher=key_matcher(SYSTEM, CHAT_TOOLS),  # the key of chat completions traffic
    )
    running = start_gateway(work, upstream.url, [route])
    yield running
    running.stop()
    KINDS.pop(SCRIPTED_KIND, None)


def test_chat_traffic_route_serves_a_responses_request(gw: RoutedGateway, upstream: ScriptedUpstream) -> None:
    chat = gw.client().chat.completions.with_raw_response.create(
        model=ALIAS,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "weather in Paris"}],
        tools=CHAT_TOOLS,
    )
    assert chat.headers["x-smallfleet-route"] == "specialist:weather"
    raw = gw.client().responses.with_raw_response.create(
        model=ALIAS, instructions=SYSTEM, input="weather in Paris", tools=RESPONSES_TOOLS
    )
    assert raw.headers["x-smallfleet-route"] == "specialist:weather"
    resp = raw.parse()
    (call,) = resp.output
    assert (call.type, call.name, json.loads(call.arguments)) == (
        "function_call",
        "get_weather",
        SCRIPT["weather in Paris"][1],
    )
    assert resp.model == "smallfleet:weather"
    assert not upstream.requests  # the large model was never asked
    t = gw.trace(raw.headers["x-smallfleet-trace-id"])
    assert (t.route, t.status, t.confidence) == ("specialist:weather", "ok", pytest.approx(0.9))
    assert t.request["messages"][0] == {"role": "system", "content": SYSTEM}


def test_chat_traffic_route_serves_a_streamed_responses_request(
    gw: RoutedGateway, upstream: ScriptedUpstream
) -> None:
    events = list(
        gw.client().responses.create(
            model=ALIAS, instructions=SYSTEM, input="weather in Paris", tools=RESPONSES_TOOLS, stream=True
        )
    )
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris", "days": 3}
    assert events[-1].type == "response.completed"
    assert not upstream.requests
    t = gw.trace(events[-1].response.id.removeprefix("resp_"))
    assert (t.route, t.stream) == ("specialist:weather", True)


CUSTOM = {"type": "custom", "custom": {"name": "apply_patch", "description": "Apply a patch."}}
ALLOWED = {
    "type": "allowed_tools",
    "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_weather"}}]},
}


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [*CHAT_TOOLS, CUSTOM]},
        {"tools": CHAT_TOOLS, "tool_choice": ALLOWED},
    ],
    ids=["custom_tool", "allowed_tools"],
)
def test_custom_tools_and_allowed_tools_are_passed_through_not_served(
    gw: RoutedGateway, upstream: ScriptedUpstream, extra: dict[str, Any]
) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "weather in Paris"}]
    raw = gw.client().chat.completions.with_raw_response.create(model=ALIAS, messages=messages, **extra)
    assert raw.headers["x-smallfleet-route"] == "direct"  # its route would match: the router declines
    assert raw.parse().choices[0].message.content == LARGE
    sent = upstream.requests[-1]
    for key, value in extra.items():
        assert sent[key] == value  # passed through as sent
    t = gw.trace(raw.headers["x-smallfleet-trace-id"])
    assert t.route == "direct" and t.escalation is None
    for key, value in extra.items():
        assert t.request[key] == value  # and recorded
