"""Route names: what the route does, readable aloud, the same for the same traffic."""

from __future__ import annotations

import re
from typing import Any

import pytest

from smallfleet.demo.workload import generate_workload
from smallfleet.flywheel.cluster import output_shape, signature
from smallfleet.flywheel.naming import route_name, slug, workload_of


@pytest.fixture(scope="module")
def by_task() -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for call in generate_workload(600, seed=5):
        out.setdefault(call.task_type, []).append(call)
    return out


def _name(calls: list[Any], workload: str | None = "support") -> str:
    requests = [c.request for c in calls]
    shape = output_shape([c.response for c in calls])
    formats = sorted({signature(r).format for r in requests})
    labels = shape.get("labels") or sorted({c.response["choices"][0]["message"]["content"] for c in calls})
    return route_name(
        shape, requests, formats=formats, labels=labels, keywords=["days", "business"], workload=workload
    )


def test_names_say_what_the_route_does(by_task: dict[str, list[Any]]) -> None:
    names = {task: _name(calls) for task, calls in by_task.items()}
    assert names["issue_refund"] == "support-issue-refund"  # the tool its answers call
    assert names["update_address"] == "support-update-address"
    assert names["extract"] == "support-extract-ticket-entities"  # the response format's name
    assert names["intent"] == "support-classify-intent"  # what the system prompt asks to classify
    assert names["urgency"] == "support-rate-urgent"
    assert names["policy"].startswith("support-reply-")  # free text: the prompt's telling words
    for name in names.values():  # slugs: typed in a shell, read aloud, used in URLs
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) and len(name) <= 60


def test_the_same_traffic_gets_the_same_name_in_any_order(by_task: dict[str, list[Any]]) -> None:
    calls = by_task["track_shipment"]
    assert _name(calls) == _name(list(reversed(calls))) == "support-track-shipment"


def test_no_workload_no_prefix_and_a_label_set_without_a_verb() -> None:
    shape = {"kind": "label", "labels": ["low", "high"]}
    request = {"messages": [{"role": "system", "content": "Answer low or high."}]}
    assert route_name(shape, [request], labels=["low", "high"]) == "label-high-low"
    assert route_name(shape, [request], labels=["low", "high"], workload="default") == "label-high-low"
    assert workload_of(["a", "a", None]) == "a" and workload_of(["a", "b"]) is None
    assert slug("Support Desk / EU!", 12) == "support-desk"
