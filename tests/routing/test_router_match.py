"""Recognising task types online with what the flywheel clustered: static keys, then the cluster matcher.

Real clustering (the bundled encoder) of a small mixed workload: support-desk triage and a
weather tool-calling step. The route built for the triage cluster recognises new triage
requests, by key and, with the keys removed, by embedding; it never takes the weather step.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from smallfleet.routing.matcher import RouteMatcher, build_matchers, static_key
from smallfleet.routing.router import Router
from smallfleet.routing.routes import Route
from smallfleet.store.records import TraceRecord
from smallfleet.testing.intents import SYSTEM_PROMPT, support_desk_examples
from smallfleet.types import ChatRequest

WEATHER_SYSTEM = "You plan trips. Call get_weather for the city the traveller names."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Tokyo", "Cairo", "Quito", "Perth", "Dakar", "Hanoi"]
PHRASES = [
    "What's the weather in {c}?",
    "Will it rain in {c} tomorrow?",
    "Forecast for {c} please",
    "Is {c} sunny?",
]


def weather_request(text: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": WEATHER_SYSTEM}, {"role": "user", "content": text}],
        "tools": [WEATHER_TOOL],
    }


def _records() -> list[TraceRecord]:
    rng = random.Random(0)
    out = [
        TraceRecord(request=ex.request.to_dict(), response=ex.response.to_dict())
        for ex in support_desk_examples(48, split="train", seed=3)
    ]
    for i in range(32):
        city = CITIES[i % len(CITIES)]
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
        }
        response = {
            "id": f"r{i}",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "tool_calls": [call]},
                    "finish_reason": "tool_calls",
                }
            ],
        }
        out.append(
            TraceRecord(request=weather_request(rng.choice(PHRASES).format(c=city)), response=response)
        )
    return out


@pytest.fixture(scope="module")
def matchers() -> tuple[dict[int, dict[str, Any]], int]:
    """(matcher dict per cluster label, the triage cluster's label)."""
    from smallfleet.flywheel.cluster import cluster_records

    records = _records()
    clustering = cluster_records(records, min_cluster_size=5)
    labels = {clustering.labels[i] for i in range(48)}
    assert len(labels) == 1 and -1 not in labels, "the triage calls should form one cluster"
    (triage,) = labels
    assert triage not in {clustering.labels[i] for i in range(48, 80)}
    return build_matchers([r.request for r in records], clustering), triage


def _triage(text: str) -> ChatRequest:
    return ChatRequest.parse(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
        }
    )


def test_a_cluster_owns_its_static_key(matchers: tuple[dict[int, dict[str, Any]], int]) -> None:
    built, triage = matchers
    spec = built[triage]
    assert spec["keys"] == [static_key(_triage("anything"))]  # the triage step's one key, owned
    matcher = RouteMatcher([("triage", spec)])
    assert matcher.match(_triage("my kettle will not turn on")) == "triage"
    assert matcher.match(ChatRequest.parse(weather_request("Is Rome sunny?"))) is None


def test_without_keys_the_cluster_matcher_recognises_by_embedding(
    matchers: tuple[dict[int, dict[str, Any]], int],
) -> None:
    built, triage = matchers
    spec = {"version": 1, "keys": [], "cluster": built[triage]["cluster"]}
    route = Route(
        name="triage",
        kind="classifier",
        specialist_path="/nowhere",
        threshold=0.5,
        mode="shadow",
        matcher=spec,
    )
    router = Router([route])
    new = support_desk_examples(6, split="test", seed=9)  # wordings the clustering never saw
    decisions = [router.decide(ex.request) for ex in new]
    assert all(d.route is not None and d.route.name == "triage" and d.action == "shadow" for d in decisions)
    weather = router.decide(ChatRequest.parse(weather_request("Will it rain in Lima tomorrow?")))
    assert weather.route is None and weather.reason == "no_match"
    # a different system prompt and tool set: not this task type
    other = ChatRequest.parse(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Translate to French."},
                {"role": "user", "content": "hi"},
            ],
        }
    )
    assert router.decide(other).reason == "no_match"


def test_only_routable_workloads_and_aliases_are_considered(
    matchers: tuple[dict[int, dict[str, Any]], int],
) -> None:
    built, triage = matchers
    route = Route(
        name="triage",
        kind="classifier",
        specialist_path="/nowhere",
        threshold=0.5,
        mode="off",
        matcher=built[triage],
    )
    router = Router([route], workloads=["support/*"], aliases=["gpt-4o-*"])
    req = _triage("where is my parcel?")
    assert router.decide(req, "support/desk").reason == "mode_off"
    unroutable = router.decide(req, "billing")
    assert unroutable.route is None and unroutable.reason is None and unroutable.label == "direct"
    assert router.decide(req.model_copy(update={"model": "claude"}), "support/desk").reason is None
