"""Clustering (S3) on the generated support-agent workload, with the real bundled encoder.

Agreement with the true task types is the adjusted Rand index with noise counted as one
more label (stricter than leaving noise out).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sklearn.metrics import adjusted_rand_score

from smallfleet.demo import TASK_TYPES, generate_workload, to_trace_records
from smallfleet.flywheel.cluster import (
    Clustering,
    ClusterMatcher,
    cluster_records,
    output_shape,
    signature,
    task_signature,
)

N = 1500


@pytest.fixture(scope="module")
def calls() -> list:
    return generate_workload(N, seed=7)


@pytest.fixture(scope="module")
def fitted(calls: list) -> tuple[list, Clustering]:
    """Clustered on the oldest 80%; the newest 20% are held out for the matcher."""
    cut = int(0.8 * N)
    return calls[:cut], cluster_records(to_trace_records(calls[:cut]))


def _majority(calls: list, clustering: Clustering) -> dict[str, int]:
    votes: dict[str, Counter] = {}
    for c, lab in zip(calls, clustering.labels, strict=True):
        votes.setdefault(c.task_type, Counter())[lab] += 1
    return {t: v.most_common(1)[0][0] for t, v in votes.items()}


def test_clusters_agree_with_true_types(fitted: tuple[list, Clustering]) -> None:
    calls, clustering = fitted
    truth = [c.task_type for c in calls]
    assert adjusted_rand_score(truth, clustering.labels) >= 0.9
    assert clustering.noise <= 0.05 * len(calls)
    majority = _majority(calls, clustering)
    assert len(set(majority.values())) == len(majority)  # every type its own cluster
    for task, label in majority.items():
        info = clustering.clusters[label]
        assert info.label == label
        expected = TASK_TYPES[task].output
        assert info.shape["kind"] == {"json": "json"}.get(expected, expected), (task, info.shape)
        if TASK_TYPES[task].tool:
            assert info.name.startswith(TASK_TYPES[task].tool)
            assert TASK_TYPES[task].tool in info.tools
    intent = clustering.clusters[majority["intent"]]
    assert set(intent.shape["labels"]) <= {
        "order_status", "refund_request", "change_address", "cancel_order",
        "product_question", "payment_problem", "account_access", "complaint",
    }  # fmt: skip
    assert clustering.clusters[majority["extract"]].formats == ["json_schema:ticket_entities"]


def test_cluster_stats(fitted: tuple[list, Clustering]) -> None:
    calls, clustering = fitted
    by_id = {c.id: c for c in calls}
    sizes = [c.size for c in clustering.clusters]
    assert sizes == sorted(sizes, reverse=True)
    assert sum(c.share for c in clustering.clusters) == pytest.approx(1 - clustering.noise / len(calls))
    total_cost = sum(c.cost_usd for c in calls)
    for info in clustering.clusters:
        members = [by_id[i] for i in info.trace_ids]
        assert info.size == len(members)
        assert info.cost_usd == pytest.approx(sum(m.cost_usd for m in members))
        assert info.share_cost == pytest.approx(info.cost_usd / total_cost)
        assert info.input_tokens == sum(m.input_tokens for m in members)
        lat = sorted(m.latency_ms for m in members)
        assert lat[0] <= info.latency_p50_ms <= lat[-1]
        assert json.dumps(info.to_dict())
    names = [c.name for c in clustering.clusters]
    assert len(set(names)) == len(names)


def test_matcher_assigns_held_out_requests(calls: list, fitted: tuple[list, Clustering]) -> None:
    fit_calls, clustering = fitted
    majority = _majority(fit_calls, clustering)
    held_out = calls[len(fit_calls) :]
    got = clustering.matcher.match_batch([c.request for c in held_out])
    assert [clustering.matcher.match(c.request) for c in held_out[:20]] == got[:20]  # the online path agrees
    matched = [(c, g) for c, g in zip(held_out, got, strict=True) if g is not None]
    assert len(matched) >= 0.9 * len(held_out)
    right = sum(g == majority[c.task_type] for c, g in matched)
    assert right / len(matched) >= 0.99


def test_matcher_rejects_types_it_has_not_seen(calls: list) -> None:
    unseen = {"policy", "issue_refund", "urgency"}
    seen_calls = [c for c in calls[:900] if c.task_type not in unseen]
    clustering = cluster_records(to_trace_records(seen_calls))
    matcher = clustering.matcher
    for task in unseen:
        probes = [c for c in calls[900:] if c.task_type == task][:40]
        accepted = sum(m is not None for m in matcher.match_batch([c.request for c in probes]))
        assert accepted <= 0.05 * len(probes), task
    # a drifted week: the renamed tool and the new task type are not recognised either
    drifted = [
        c
        for c in generate_workload(300, seed=7, week=2)
        if c.task_type in ("shipping_status", "return_label")
    ]
    assert drifted and matcher.match_batch([c.request for c in drifted]) == [None] * len(drifted)
    assert matcher.match(drifted[0].request) is None


def test_matcher_serialises(calls: list, fitted: tuple[list, Clustering], tmp_path) -> None:
    _, clustering = fitted
    probes = [c.request for c in calls[-60:]]
    expected = clustering.matcher.match_batch(probes)
    again = ClusterMatcher.from_dict(json.loads(json.dumps(clustering.matcher.to_dict())))
    assert again.match_batch(probes) == expected
    loaded = ClusterMatcher.load(clustering.matcher.save(tmp_path / "m"))
    assert loaded.match_batch(probes) == expected and loaded.match_dict(probes[0]) == expected[0]
    # one matcher per route, combined again under the routes' names
    per_route = [(f"route-{c.label}", clustering.matcher_for(c.label).to_dict()) for c in clustering.clusters]
    combined = ClusterMatcher.combine(per_route)
    assert combined.match_batch(probes) == [None if e is None else f"route-{e}" for e in expected]
    single = clustering.matcher_for(expected[0])
    assert single.labels == [expected[0]] and single.match(probes[0]) == expected[0]
    with pytest.raises(ValueError, match="version"):
        ClusterMatcher.from_dict({"version": 99})


def test_sampled_fit_and_small_data_fallback(calls: list) -> None:
    truth = [c.task_type for c in calls[:1200]]
    # by content alone (the path of traffic without step identity)
    sampled = cluster_records(to_trace_records(calls[:1200]), max_fit=500, by_step=False)
    assert sampled.method == "hdbscan"
    assert adjusted_rand_score(truth, sampled.labels) >= 0.9
    small = calls[:200]
    clustering = cluster_records(to_trace_records(small), by_step=False)
    assert clustering.method == "agglomerative"
    assert adjusted_rand_score([c.task_type for c in small], clustering.labels) >= 0.85
    empty = cluster_records([])
    assert empty.labels == [] and empty.clusters == [] and empty.matcher.match(small[0].request) is None


def test_signature_parts(calls: list) -> None:
    tool_call = next(c for c in calls if c.task_type == "issue_refund")
    sig = signature(tool_call.request)
    assert sig.tools == ("issue_refund", "lookup_order")
    assert "issue_refund(amount, order_id, reason)" in sig.structure
    assert sig.dialogue == tool_call.user_text
    assert "0" in sig.system and "2026" not in sig.system  # digits masked: one prompt per step, not per day
    extract = next(c for c in calls if c.task_type == "extract")
    assert signature(extract.request).format == "json_schema:ticket_entities"
    assert "system:" in task_signature(extract.request) and extract.user_text in task_signature(
        extract.request
    )
    bare = signature({"messages": [{"role": "user", "content": "hi"}]})
    assert bare.system == "" and bare.tools == () and bare.format == "text"


def test_output_shape() -> None:
    def text(t: str) -> dict:
        return {"choices": [{"message": {"role": "assistant", "content": t}}]}

    assert output_shape([text("a"), text("b"), text("a"), text("b"), text("a")]) == {
        "kind": "label",
        "labels": ["a", "b"],
    }
    assert output_shape([text('{"x": 1}'), text('{"x": 2, "y": null}')])["keys"] == ["x", "y"]
    assert output_shape([text(f"long answer number {i}\nwith lines") for i in range(5)]) == {"kind": "text"}


def test_many_labels_are_labels_not_text() -> None:
    """A label set as large as the traffic has (here 300 labels) is a label task, not free text."""

    def text(t: str) -> dict:
        return {"choices": [{"message": {"role": "assistant", "content": t}}]}

    answers = [text(f"intent_{i % 300}") for i in range(900)]
    shape = output_shape(answers)
    assert shape["kind"] == "label" and len(shape["labels"]) == 300
    assert output_shape(answers, max_labels=100) == {"kind": "text"}  # a cap, only when asked for
    assert output_shape([text(f"intent_{i}") for i in range(900)]) == {"kind": "text"}  # never recurs


def test_call_or_reply_steps_are_tool_calling() -> None:
    """A step that calls a tool on some turns and asks the user first on others is a tool-calling step."""

    def reply(t: str) -> dict:
        return {"choices": [{"message": {"role": "assistant", "content": t}}]}

    def call(name: str) -> dict:
        fn = {"name": name, "arguments": "{}"}
        return {"choices": [{"message": {"role": "assistant", "tool_calls": [{"function": fn}]}}]}

    answers = [call("book") if i % 4 == 0 else reply(f"Which day would you like, {i}?") for i in range(40)]
    assert output_shape(answers) == {"kind": "tool_call", "tools": ["book"], "replies": 0.75}
    few = [call("book")] + [reply(f"Hello {i}, how can I help?") for i in range(39)]
    assert output_shape(few) == {"kind": "text"}  # one call in forty: a chat step that rarely calls
