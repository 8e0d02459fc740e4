"""benchmarks/workloads: public datasets as an agent's calls, and the whole loop on a small slice.

The slices under tests/data/ are small excerpts of the public datasets, with their
licences (see tests/data/README.md), so this runs on a fresh clone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
sys.path.insert(0, str(REPO))

from benchmarks.workloads import banking77, nlupp, sgd  # noqa: E402
from benchmarks.workloads.common import Gold, Pair, agrees, answer_of  # noqa: E402
from benchmarks.workloads.run import GoldUpstream, Outcome, figures, request_key, wrong_kind  # noqa: E402

from smallfleet.store.jsonl import parse_line  # noqa: E402


def _importable(pairs: list[Pair], workload: str) -> None:
    """Every pair is a line ``smallfleet traces import`` takes, as the agent's call it stands for."""
    for p in pairs:
        line = json.loads(json.dumps(p.to_line(workload)))
        rec = parse_line(line, workload=None, raw=json.dumps(line))
        assert rec.id == p.id and rec.workload == workload and rec.status == "ok"
        assert rec.request == p.request and rec.response == p.response
        assert rec.input_tokens > 0 and rec.output_tokens > 0 and rec.latency_ms > 0


def _content(p: Pair) -> str:
    return p.response["choices"][0]["message"]["content"]


# ---------------------------------------------------------------- banking77


def test_banking77_one_step_listing_every_intent() -> None:
    train, test = banking77.load(DATA / "banking77")
    assert (len(train), len(test)) == (288, 108)
    labels = banking77.intents(DATA / "banking77")
    assert len(labels) == 77
    prompts = {p.request["messages"][0]["content"] for p in train + test}
    assert len(prompts) == 1  # one agent step, one system prompt
    assert all(f"- {label}\n" in next(iter(prompts)) + "\n" for label in labels)
    for p in train + test:
        system, user = p.request["messages"]
        assert (system["role"], user["role"]) == ("system", "user")
        assert p.gold == Gold("label", p.meta["intent"]) and _content(p) == p.meta["intent"]
    # the file is sorted by intent; the recorded week is not
    assert len({p.meta["intent"] for p in train[:30]}) > 3
    times = [p.created_at for p in train]
    assert times == sorted(times) and max(times) < min(p.created_at for p in test)
    _importable(train[:50], banking77.WORKLOAD)


def test_banking77_is_one_task_type_and_one_classifier() -> None:
    """One agent step with 77 labels and widely varied wording: one cluster, a label shape, a classifier."""
    from smallfleet.flywheel.cluster import cluster_records
    from smallfleet.flywheel.pipeline import to_example
    from smallfleet.specialists.catalog import Budget, profile_task, select
    from smallfleet.store.jsonl import parse_line

    train, _ = banking77.load(DATA / "banking77" / "all-intents")
    assert len(train) == 308
    records = [parse_line(p.to_line("b77"), workload=None, raw="") for p in train]
    clustering = cluster_records(records)
    assert clustering.noise == 0 and len(clustering.clusters) == 1
    (info,) = clustering.clusters
    assert info.size == len(train) and info.shape["kind"] == "label"
    assert set(info.shape["labels"]) == {p.meta["intent"] for p in train} and len(info.shape["labels"]) == 77
    assert clustering.method == "steps"
    examples = [to_example(r) for r in records]
    profile = profile_task([ex for ex in examples if ex is not None])
    assert profile.shape == "label" and len(profile.labels or []) == 77
    assert select(profile, Budget(cpu_only=True))[0].kind == "classifier"
    # a new request of the step matches it, whatever its words
    assert clustering.matcher.match(train[0].request) == info.label


def test_limits_and_seed() -> None:
    a, b = banking77.load(DATA / "banking77", limit_train=20, limit_test=5, seed=1)
    assert (len(a), len(b)) == (20, 5)
    again, _ = banking77.load(DATA / "banking77", limit_train=20, limit_test=5, seed=1)
    other, _ = banking77.load(DATA / "banking77", limit_train=20, limit_test=5, seed=2)
    assert [p.id for p in a] == [p.id for p in again] != [p.id for p in other]


# ---------------------------------------------------------------- NLU++


def test_nlupp_folds_tasks_and_schemas() -> None:
    train, test = nlupp.load(DATA / "nlupp")
    # 10 messages per fold and domain in the slice; folds 0-14 train, 15-19 test; two calls each
    assert (len(train), len(test)) == (2 * 2 * 15 * 10, 2 * 2 * 5 * 10)
    assert {p.task for p in train} == {"banking/slots", "banking/intents", "hotels/slots", "hotels/intents"}
    for p in train + test:
        fmt = p.request["response_format"]
        assert fmt["type"] == "json_schema"
        schema = fmt["json_schema"]["schema"]
        answer = json.loads(_content(p))
        assert p.gold == Gold("json", answer)
        jsonschema.validate(answer, schema)  # the gold answer is what the schema asks for
    banking = next(p for p in train if p.task == "banking/slots").request["response_format"]
    hotels = next(p for p in train if p.task == "hotels/slots").request["response_format"]
    b_props = banking["json_schema"]["schema"]["properties"]
    h_props = hotels["json_schema"]["schema"]["properties"]
    assert {"amount_of_money", "company_name", "date"} <= set(b_props) and "rooms" not in b_props
    assert {"rooms", "adults", "date"} <= set(h_props) and "company_name" not in h_props
    assert b_props["amount_of_money"]["type"] == "object" and h_props["rooms"]["type"] == "integer"
    # some messages give no detail at all: the answer is an empty object
    assert any(p.gold.value == {} for p in train if p.task.endswith("slots"))
    assert any(p.gold.value for p in train if p.task.endswith("slots"))
    _importable(train[:40], nlupp.WORKLOAD)


def test_nlupp_values_in_canonical_form() -> None:
    v = nlupp.slot_value
    assert v("date", {"value": {"day": 5, "month": 3, "year": 2022}}) == "2022-03-05"
    assert v("date", {"value": "ambiguous"}) is None
    assert v("time_to", {"value": {"hour": 18, "minute": 35}}) == "18:35"
    period = {
        "values": {
            "type": "absolute",
            "from": {"day": 21, "month": 3, "year": 2022},
            "to": {"day": 27, "month": 3, "year": 2022},
        }
    }
    assert v("date_period", period) == "2022-03-21/2022-03-27"
    assert v("date_period", {"values": {"type": "relative", "days": 3}}) == "P3D"
    assert v("date_period", {"values": {"type": "periodic"}}) is None
    assert v("time_period", {"values": {"type": "relative", "days": 30.0}}) == "PT30M"  # minutes, in the data
    assert v("amount_of_money", {"value": {"amount": 600.0, "currency": "GBP"}}) == {
        "amount": 600,
        "currency": "GBP",
    }
    assert v("amount_of_money", {"value": {"amount": 56.79, "currency": "ambiguous"}}) == {"amount": 56.79}
    assert (
        v("rooms", {"value": 2}) == 2
        and v("person_name", {"value": "dalana palomares"}) == "dalana palomares"
    )


def test_nlupp_intents_in_listed_order() -> None:
    train, _ = nlupp.load(DATA / "nlupp", tasks=("intents",))
    assert {p.task for p in train} == {"banking/intents", "hotels/intents"}
    for p in train:
        items = p.request["response_format"]["json_schema"]["schema"]["properties"]["intents"]["items"][
            "enum"
        ]
        got = p.gold.value["intents"]
        assert got == [i for i in items if i in got]


# ---------------------------------------------------------------- SGD


def test_sgd_tools_from_the_schema() -> None:
    schema = sgd.load_schema(DATA / "sgd" / "train")
    tools = {t["function"]["name"]: t["function"] for t in sgd.tools_for(["Restaurants_1"], schema)}
    assert set(tools) == {"ReserveRestaurant", "FindRestaurants"}
    reserve = tools["ReserveRestaurant"]["parameters"]
    assert reserve["required"] == ["restaurant_name", "city", "time"]
    assert set(reserve["properties"]) == {"restaurant_name", "city", "time", "date", "party_size"}
    assert reserve["properties"]["party_size"]["enum"] == ["1", "2", "3", "4", "5", "6"]
    assert reserve["properties"]["party_size"]["default"] == "2"
    assert "enum" not in reserve["properties"]["city"]  # not categorical
    find = tools["FindRestaurants"]["parameters"]["properties"]
    assert find["price_range"]["enum"][:2] == ["inexpensive", "moderate"]
    assert "default" not in find["price_range"]  # "dontcare" is no default


def test_sgd_every_assistant_turn_is_a_call_or_a_reply() -> None:
    train, _ = sgd.load(DATA / "sgd")
    dialogues = sgd.load_dialogues(DATA / "sgd" / "train")
    assistant_turns = sum(t["speaker"] == "SYSTEM" for d in dialogues for t in d["turns"])
    assert len(train) == assistant_turns
    calls = [p for p in train if p.task == "call"]
    replies = [p for p in train if p.task == "reply"]
    assert calls and replies
    by_id = {d["dialogue_id"]: d for d in dialogues}
    for p in calls:
        turn = by_id[p.meta["dialogue_id"]]["turns"][p.meta["turn"]]
        sc = next(f["service_call"] for f in turn["frames"] if "service_call" in f)
        (tc,) = p.response["choices"][0]["message"]["tool_calls"]
        assert p.response["choices"][0]["finish_reason"] == "tool_calls"
        assert (
            tc["function"]["name"] == sc["method"]
            and json.loads(tc["function"]["arguments"]) == sc["parameters"]
        )
        tool = next(t for t in p.request["tools"] if t["function"]["name"] == sc["method"])
        jsonschema.validate(sc["parameters"], tool["function"]["parameters"])  # enums and required hold
    for p in replies:
        turn = by_id[p.meta["dialogue_id"]]["turns"][p.meta["turn"]]
        assert _content(p) == turn["utterance"] and p.gold == Gold("text", turn["utterance"])
        assert "tool_calls" not in p.response["choices"][0]["message"]
    # the conversation so far: a request ends with the user's turn; an earlier call is in it as the
    # agent's tool call, the tool's result and the assistant's reply
    for p in train:
        assert p.request["messages"][0]["role"] == "system" and p.request["messages"][-1]["role"] == "user"
    later = [p for p in train if any(m["role"] == "tool" for m in p.request["messages"])]
    assert later
    msgs = later[0].request["messages"]
    i = next(k for k, m in enumerate(msgs) if m["role"] == "tool")
    assert (
        msgs[i - 1]["tool_calls"][0]["id"] == msgs[i]["tool_call_id"] and msgs[i + 1]["role"] == "assistant"
    )
    assert isinstance(json.loads(msgs[i]["content"]), list)
    _importable(train[:30], sgd.WORKLOAD)


def test_sgd_dev_marks_unseen_services() -> None:
    _, test = sgd.load(DATA / "sgd")
    seen = {p.meta["service"]: p.meta["seen"] for p in test}
    assert seen == {"Buses_1": True, "RentalCars_1": True, "Alarm_1": False, "Restaurants_2": False}
    # a seen service's tool names can be an unseen one's too: the route must tell them apart
    names = {p.meta["service"]: {t["function"]["name"] for t in p.request["tools"]} for p in test}
    assert "FindRestaurants" in names["Restaurants_2"]


# ---------------------------------------------------------------- scoring


def _response(message: dict[str, object]) -> dict[str, object]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def test_agreement_rules() -> None:
    assert agrees(Gold("label", "card_arrival"), answer_of(_response({"content": "card_arrival\n"}), "label"))
    assert not agrees(
        Gold("label", "card_arrival"), answer_of(_response({"content": "card_linking"}), "label")
    )
    obj = Gold("json", {"date": "2022-03-15", "rooms": 2})
    assert agrees(obj, answer_of(_response({"content": '{"rooms": 2, "date": "2022-03-15"}'}), "json"))
    assert not agrees(obj, answer_of(_response({"content": '{"rooms": 2}'}), "json"))
    call = Gold("tool_call", [("FindBus", {"from_location": "Fresno", "travelers": "2"})])
    tc = {
        "type": "function",
        "id": "c",
        "function": {"name": "FindBus", "arguments": '{"travelers": "2", "from_location": "Fresno"}'},
    }
    assert agrees(call, answer_of(_response({"content": None, "tool_calls": [tc]}), "tool_call"))
    wrong = {
        **tc,
        "function": {"name": "FindBus", "arguments": '{"travelers": 2, "from_location": "Fresno"}'},
    }
    assert not agrees(call, answer_of(_response({"content": None, "tool_calls": [wrong]}), "tool_call"))
    text = Gold("text", "Where are you leaving from?")
    assert not agrees(text, answer_of(_response({"content": None, "tool_calls": [tc]}), "text"))
    assert not agrees(call, answer_of(_response({"content": "Where from?"}), "tool_call"))


def _outcome(gold: Gold, answer: object, route: str = "specialist:r", **meta: object) -> Outcome:
    pair = Pair(
        id="x",
        request={},
        response={"usage": {"prompt_tokens": 10, "completion_tokens": 2}},
        gold=gold,
        task="t",
        meta=dict(meta),
    )
    o = Outcome(pair, 200, route, 5.0, None, answer=answer)
    o.agree = agrees(gold, answer)
    return o


def test_wrong_serves_by_kind() -> None:
    call = Gold("tool_call", [("FindBus", {"a": "1"})])
    text = Gold("text", "Which city?")
    assert wrong_kind(_outcome(text, [("FindBus", {"a": "1"})]), None) == "call_for_reply"
    assert wrong_kind(_outcome(call, "Which city?"), None) == "reply_for_call"
    assert wrong_kind(_outcome(call, [("FindBus", {"a": "2"})]), None) == "wrong_call"
    assert wrong_kind(_outcome(call, [("FindBus", {"a": "1"})], seen=False), None) == "unseen_service"
    assert wrong_kind(_outcome(call, [("FindBus", {"a": "1"})], seen=True), None) is None
    label = Gold("label", "age_limit")
    assert wrong_kind(_outcome(label, "pin_blocked"), ["pin_blocked", "card_arrival"]) == "unseen_label"
    assert wrong_kind(_outcome(label, "pin_blocked"), ["pin_blocked", "age_limit"]) == "wrong_label"
    assert wrong_kind(_outcome(Gold("json", {"a": 1}), {"a": 2}), None) == "wrong_object"


def test_figures_promised_next_to_delivered() -> None:
    label = Gold("label", "age_limit")
    outs = [
        _outcome(label, "age_limit"),
        _outcome(label, "pin_blocked"),
        _outcome(label, None, route="escalated:no_match"),
        _outcome(label, None, route="escalated:low_confidence"),
    ]
    routes = {"r": {"name": "r", "labels": ["age_limit", "pin_blocked"], "promised": 0.97}}
    res = figures(outs, routes, {})
    assert res["served_share"] == 0.5 and res["delivered_agreement"] == 0.5
    assert res["wrong_serves"] == {"total": 1, "wrong_label": 1}
    assert res["routes"] == [{**routes["r"], "served": 2, "delivered": 0.5}]
    assert res["escalations"] == {"escalated:no_match": 1, "escalated:low_confidence": 1}
    assert res["cost_with_smallfleet_usd"] < res["cost_large_alone_usd"]


def test_gold_upstream_answers_what_the_gateway_forwards() -> None:
    _, test = sgd.load(DATA / "sgd", limit_test=12)
    up = GoldUpstream(test)
    p = test[-1]
    forwarded = json.loads(json.dumps(p.request))
    for m in forwarded["messages"]:  # what a gateway may normalise on the way
        if m.get("content") is None:
            m["content"] = ""
    forwarded["tools"] = list(reversed(forwarded["tools"]))
    assert request_key(forwarded) == request_key(p.request)
    assert up._answer(forwarded).body == p.response
    assert up._answer({"messages": [{"role": "user", "content": "?"}]}).status == 404 and up.unknown == 1


# ---------------------------------------------------------------- the whole loop


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_end_to_end_on_a_slice(tmp_path: Path) -> None:
    """import → flywheel → gateway → replay on the banking77 slice: properties, not numbers."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "workloads" / "run.py"),
            "banking77",
            "--data",
            str(DATA / "banking77"),
            "--limit-test",
            "60",
            "--workdir",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "dataset",
        "served_share",
        "delivered_agreement",
        "wrong_serves",
        "routes",
        "flywheel_seconds",
        "peak_rss_mb",
    ):
        assert key in res
    assert res["dataset"] == "banking77" and res["calls"] == res["test_calls"] == 60
    assert res["flywheel_returncode"] == 0 and res["errors"] == 0 and res["upstream_unanswered"] == 0
    assert 0.0 <= res["served_share"] <= 1.0
    assert res["delivered_agreement"] is None or 0.0 <= res["delivered_agreement"] <= 1.0
    assert res["flywheel_seconds"] > 0 and res["peak_rss_mb"] > 100
    assert res["wrong_serves"]["total"] <= res["served_small"]
    assert sum(t["calls"] for t in res["by_task"].values()) == 60
    assert sum(r["served"] for r in res["routes"]) == res["served_small"]
    for r in res["routes"]:
        assert "promised" in r and "delivered" in r and r["mode"] == "on"
        assert r["promised"] is None or 0.0 <= r["promised"] <= 1.0
        assert (r["delivered"] is None) == (r["served"] == 0)
    assert res["cost_with_smallfleet_usd"] <= res["cost_large_alone_usd"] + 1e-9
    saved = json.loads((tmp_path / "w" / "result.json").read_text())
    assert saved["served_small"] == res["served_small"]
