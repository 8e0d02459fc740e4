"""The demo workload generator: deterministic, varied, valid OpenAI shapes, and a drifted second week."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import jsonschema
import pytest

from smallfleet.demo import TASK_TYPES, generate_workload, task_mix, to_examples, to_trace_records
from smallfleet.demo.workload import EXTRACT_SCHEMA, TOOLS, week_start
from smallfleet.types import ChatRequest, ChatResponse

N = 3000


@pytest.fixture(scope="module")
def week1() -> list:
    return generate_workload(N, seed=3)


@pytest.fixture(scope="module")
def week2() -> list:
    return generate_workload(N, seed=3, week=2)


def test_seeded_determinism() -> None:
    a, b = generate_workload(300, seed=11), generate_workload(300, seed=11)
    assert [(c.id, c.user_text, c.response, c.created_at) for c in a] == [
        (c.id, c.user_text, c.response, c.created_at) for c in b
    ]
    other = generate_workload(300, seed=12)
    assert [c.user_text for c in a] != [c.user_text for c in other]
    assert [c.task_type for c in a] != [c.task_type for c in other]


def test_no_user_text_twice_within_and_across_weeks(week1: list, week2: list) -> None:
    texts1 = [c.user_text for c in week1]
    texts2 = [c.user_text for c in week2]
    assert len(set(texts1)) == len(texts1)
    assert len(set(texts2)) == len(texts2)
    assert not set(texts1) & set(texts2)
    # so a split by time never has the same text in train and test
    cut = int(0.7 * N)
    assert not {c.user_text for c in week1[:cut]} & {c.user_text for c in week1[cut:]}


def test_every_type_present_with_its_share(week1: list) -> None:
    counts = Counter(c.task_type for c in week1)
    mix = task_mix(1)
    assert set(counts) == set(mix)
    for name, share in mix.items():
        assert abs(counts[name] / N - share) < 0.03, name
    routine = {n for n in mix if TASK_TYPES[n].routine}
    assert len(routine) >= 6
    assert {n for n in mix if not TASK_TYPES[n].routine} == {"troubleshoot", "policy", "complaint"}


def test_at_least_30_phrasings_per_type(week1: list) -> None:
    phrasings: dict[str, set[str]] = defaultdict(set)
    for c in week1:
        phrasings[c.task_type].add(c.template)
    for name, seen in phrasings.items():
        assert len(seen) >= 30, (name, len(seen))


def test_time_rhythm_tokens_latency_cost(week1: list) -> None:
    times = [c.created_at for c in week1]
    assert times == sorted(times)
    assert week_start(1) <= times[0] and times[-1] < week_start(1) + 7 * 86400
    hours = Counter(int((t - week_start(1)) // 3600) % 24 for t in times)
    assert hours[11] > 3 * hours[3]  # busy late morning, quiet night
    by_kind: dict[str, list] = defaultdict(list)
    for c in week1:
        by_kind[TASK_TYPES[c.task_type].output].append(c)
        assert c.cost_usd == pytest.approx((c.input_tokens * 2.5 + c.output_tokens * 10) / 1e6)
        usage = c.response["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (c.input_tokens, c.output_tokens)

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    label_ms = median([c.latency_ms for c in by_kind["label"]])
    text_ms = median([c.latency_ms for c in by_kind["text"]])
    assert 500 < label_ms < 1500 and text_ms > 2 * label_ms
    assert median([c.output_tokens for c in by_kind["text"]]) > 10 * median(
        [c.output_tokens for c in by_kind["label"]]
    )


def test_valid_openai_shapes_and_schemas(week1: list) -> None:
    wrong = 0
    for c in week1:
        req = ChatRequest.model_validate(c.request)
        resp = ChatResponse.model_validate(c.response)
        kind = TASK_TYPES[c.task_type].output
        wrong += c.teacher_wrong
        if kind == "tool_call":
            (call,) = resp.message.tool_calls or []
            assert call.function.name in req.tool_names()
            jsonschema.validate(
                json.loads(call.function.arguments), TOOLS[call.function.name]["function"]["parameters"]
            )
            assert resp.choices[0].finish_reason == "tool_calls"
        elif kind == "json":
            assert req.json_schema == EXTRACT_SCHEMA
            jsonschema.validate(json.loads(resp.text), EXTRACT_SCHEMA)
        elif kind == "label":
            assert resp.text and " " not in resp.text
        else:
            assert len(resp.text) > 150
    assert 0.005 < wrong / N < 0.04
    assert all(not c.teacher_wrong for c in week1 if not TASK_TYPES[c.task_type].routine)


def test_extraction_and_tool_values_come_from_the_text(week1: list) -> None:
    for c in week1:
        if c.teacher_wrong:
            continue
        msg = ChatResponse.model_validate(c.response).message
        if c.task_type == "extract":
            out = json.loads(msg.content or "")
            for key in ("order_id", "email", "product"):
                if out[key] is not None:
                    assert out[key].lower() in c.user_text.lower(), (key, c.user_text)
        elif msg.tool_calls:
            args = json.loads(msg.tool_calls[0].function.arguments)
            order = args.get("order_id") or args.get("order_number")
            assert order in c.user_text


def test_drifted_week_renames_a_tool_and_adds_a_type(week1: list, week2: list) -> None:
    types1 = {c.task_type for c in week1}
    types2 = {c.task_type for c in week2}
    assert types2 - types1 == {"shipping_status", "return_label"}
    assert types1 - types2 == {"track_shipment"}
    tools2 = {t for c in week2 for t in (x["function"]["name"] for x in c.request.get("tools", []))}
    assert "get_shipping_status" in tools2 and "track_shipment" not in tools2
    params = TOOLS["get_shipping_status"]["function"]["parameters"]
    assert "order_number" in params["properties"] and "order_id" not in params["properties"]
    assert min(c.created_at for c in week2) >= week_start(2)


def test_records_and_examples(week1: list) -> None:
    calls = week1[:50]
    recs = to_trace_records(calls)
    assert [r.id for r in recs] == [c.id for c in calls]
    r = next(r for r, c in zip(recs, calls, strict=True) if c.request.get("tools"))
    assert r.tool_names and r.route == "direct" and r.status == "ok" and r.cost_usd and r.latency_ms
    assert "task_type" not in json.dumps(r.metadata)
    exs = to_examples(calls)
    assert exs[0].trace_id == calls[0].id and exs[0].request.last_user_text() == calls[0].user_text


def test_write_to_store_sqlite(tmp_path) -> None:
    from smallfleet.demo import write_to_store
    from smallfleet.store import TraceStore

    calls = generate_workload(120, seed=5)
    store = TraceStore(f"sqlite:///{tmp_path / 'traces.db'}")
    try:
        assert write_to_store(store, calls, batch_size=50) == 120
        write_to_store(store, calls[:10])  # idempotent on id
        assert store.count_traces() == 120
        got = store.get_trace(calls[7].id)
        assert got is not None and got.request == calls[7].request and got.response == calls[7].response
    finally:
        store.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="week"):
        generate_workload(10, week=3)
    with pytest.raises(ValueError, match="calls"):
        generate_workload(-1)
