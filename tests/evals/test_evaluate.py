"""evaluate(): a remote model behind real HTTP and a trained specialist, measured the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from smallfleet.config import Price
from smallfleet.errors import OutputInvalid
from smallfleet.evals import Judge, Report, evaluate, score, shape_of
from smallfleet.evals.judge import parse_verdict
from smallfleet.models.openai_http import OpenAICompatible
from smallfleet.specialists.base import Example, Prediction, Specialist, SpecialistChatModel
from smallfleet.testing.intents import support_desk_examples
from smallfleet.testing.upstream import Reply, ScriptedUpstream
from smallfleet.types import ChatRequest, ChatResponse, Tool


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture
def up(upstream: ScriptedUpstream) -> ScriptedUpstream:
    upstream.reset()
    return upstream


def _user(body: dict[str, Any]) -> str:
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def _ex(user: str, response: ChatResponse, **req: Any) -> Example:
    return Example(ChatRequest(model="m", messages=[{"role": "user", "content": user}], **req), response)


def test_shape_of() -> None:
    assert shape_of(ChatResponse.of_text("m", '{"a": 1}')) == "json"
    assert shape_of(ChatResponse.of_text("m", "[1]")) == "text"
    assert shape_of(ChatResponse.of_text("m", "refund")) == "text"
    assert shape_of(ChatResponse.of_tool_calls("m", [("f", {})])) == "tool_call"


def test_score_each_shape() -> None:
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "x"}])
    t = ChatResponse.of_text
    assert score(t("m", "Refund."), t("m", "refund"), req, "label").correct
    assert score(t("m", '{"intent": "refund"}'), t("m", "refund"), req, "label").correct
    s = score(t("m", '{"a": "1", "b": 2}'), t("m", '{"a": 1, "b": 3}'), req, "json")
    assert not s.correct and s.score == pytest.approx(0.5)
    assert score(t("m", "nope"), t("m", '{"a": 1}'), req, "json").detail == "not valid JSON"
    schema_req = ChatRequest(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {"required": ["z"]}}},
    )
    bad = score(t("m", '{"a": 1}'), t("m", '{"a": 1}'), schema_req, "json")
    assert not bad.correct and bad.score == 1.0 and "schema" in (bad.detail or "")
    call = ChatResponse.of_tool_calls
    assert score(call("m", [("f", {"x": 1})]), call("m", [("f", {"x": 1.0})]), req, "tool_call").correct
    wrong = score(call("m", [("g", {"x": 1})]), call("m", [("f", {"x": 1})]), req, "tool_call")
    assert not wrong.correct and wrong.detail
    assert score(t("m", "Hello,  world"), t("m", "hello world!"), req, "text").correct


async def test_remote_model_over_http(up: ScriptedUpstream) -> None:
    examples = support_desk_examples(12, "test", seed=5)
    truth = {ex.request.last_user_text(): ex.response.text for ex in examples}
    wrong = {examples[1].request.last_user_text(), examples[2].request.last_user_text()}
    assert "refund" not in {truth[t] for t in wrong}

    def teacher(body: dict[str, Any]) -> Reply:
        text = _user(body)
        return Reply.text("refund" if text in wrong else truth[text], prompt_tokens=100)

    up.set_responder(teacher)
    model = OpenAICompatible(base_url=up.url, model="gpt-test", max_retries=0)
    try:
        report = await evaluate(model, examples, price=Price(input=1.0, output=2.0))
    finally:
        await model.aclose()
    assert report.shape == "label" and report.n == 12 and report.errors == 0
    assert report.accuracy == pytest.approx(10 / 12)
    assert report.macro_f1 is not None and report.macro_f1 < 1.0
    assert report.latency_p50_ms is not None and report.latency_p95_ms >= report.latency_p50_ms
    assert report.cost_usd == pytest.approx(12 * (100 * 1.0 + 1 * 2.0) / 1e6)
    assert report.coverage is None  # an LLM gives no confidence
    assert len(up.requests) == 12
    again = Report.from_dict(json.loads(report.to_json()))
    assert again.accuracy == report.accuracy and again.results[0].predicted == report.results[0].predicted


async def test_failures_are_wrong_answers_not_crashes(up: ScriptedUpstream) -> None:
    examples = support_desk_examples(3, "test", seed=6)
    up.push(Reply.error(500, "boom"), Reply.text(examples[1].response.text), Reply.text("nonsense"))
    model = OpenAICompatible(base_url=up.url, model="gpt-test", max_retries=0)
    try:
        report = await evaluate(model, examples, concurrency=1)
    finally:
        await model.aclose()
    assert report.errors == 1 and report.results[0].error and "boom" in report.results[0].error
    assert [r.correct for r in report.results] == [False, True, False]


async def test_json_and_tool_call_tasks(up: ScriptedUpstream) -> None:
    json_ex = [
        _ex("Ada, 36", ChatResponse.of_text("t", '{"name": "Ada", "age": 36}')),
        _ex("Bob, 40", ChatResponse.of_text("t", '{"name": "Bob", "age": 40}')),
    ]
    up.push(Reply.text('{"name": "ada", "age": "36"}'), Reply.text('{"name": "Bob", "age": 41}'))
    model = OpenAICompatible(base_url=up.url, model="gpt-test", max_retries=0)
    try:
        rep = await evaluate(model, json_ex, concurrency=1)
        assert rep.shape == "json"
        assert [r.correct for r in rep.results] == [True, False]
        assert rep.score == pytest.approx((1.0 + 0.5) / 2)

        tools = [
            Tool.model_validate(
                {
                    "function": {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                    }
                }
            )
        ]
        call_ex = [
            _ex(
                f"weather in {c}",
                ChatResponse.of_tool_calls("t", [("get_weather", {"city": c})]),
                tools=tools,
            )
            for c in ["Paris", "Oslo"]
        ]
        up.push(
            Reply.tool_call("get_weather", {"city": "paris"}),
            Reply.tool_call("get_weather", {"city": "Rome"}),
        )
        rep = await evaluate(model, call_ex, concurrency=1)
        assert rep.shape == "tool_call"
        assert [r.correct for r in rep.results] == [True, False]
        assert rep.results[1].detail
    finally:
        await model.aclose()


async def test_judge_grades_free_text(up: ScriptedUpstream) -> None:
    examples = [
        _ex("capital of France?", ChatResponse.of_text("t", "The capital of France is Paris.")),
        _ex("2+2?", ChatResponse.of_text("t", "Two plus two is four.")),
        _ex("sky colour?", ChatResponse.of_text("t", "Blue.")),
    ]

    def responder(body: dict[str, Any]) -> Reply:
        if body.get("response_format", {}).get("type") == "json_object":  # the judge
            verdict = "Paris" in _user(body).split("## Answer to grade")[1]
            return Reply.text(
                json.dumps({"correct": verdict, "score": 0.9 if verdict else 0.1, "reason": "ok"})
            )
        return Reply.text(
            {"capital of France?": "Paris.", "2+2?": "Five.", "sky colour?": "blue"}[_user(body)]
        )

    up.set_responder(responder)
    model = OpenAICompatible(base_url=up.url, model="gpt-test", max_retries=0)
    try:
        rep = await evaluate(model, examples, shape="text", judge=Judge(model), concurrency=1)
    finally:
        await model.aclose()
    assert [r.correct for r in rep.results] == [True, False, True]
    assert rep.results[0].score == pytest.approx(0.9) and rep.results[0].detail == "judge: ok"
    assert rep.results[2].detail is None  # exact after normalisation: the judge was not asked
    judge_calls = [b for b in up.requests if b.get("response_format")]
    assert len(judge_calls) == 2
    with pytest.raises(OutputInvalid):
        parse_verdict("I think it is right")
    assert parse_verdict('```json\n{"correct": false}\n```').score == 0.0


async def test_specialist_measured_the_same_way() -> None:
    pytest.importorskip("torch")
    from smallfleet.specialists.classifier import Classifier

    clf = Classifier(trainable_layers=0, progress=False).fit(support_desk_examples(72, "train", seed=0))
    test = support_desk_examples(36, "test", seed=7)
    report = await evaluate(
        SpecialistChatModel(clf, name="intent-small"), test, latency_sample=8, usd_per_hour=1.0
    )
    assert report.model == "intent-small" and report.shape == "label"
    assert report.accuracy >= 0.85
    assert all(r.confidence is not None for r in report.results)
    assert report.coverage is not None and set(report.coverage) == {"0.9", "0.95", "0.99"}
    assert report.coverage["0.9"] >= report.coverage["0.99"]
    assert report.curve and report.curve[-1]["coverage"] == 1.0
    assert report.latency_p50_ms is not None and report.cost_usd is not None and report.cost_usd > 0
    direct = await evaluate(clf, test, latency_sample=0)
    assert [r.correct for r in direct.results] == [r.correct for r in report.results]


class _Keyword(Specialist):
    """A rule-based specialist: answers 'refund' when the text says money, fails on 'boom'."""

    kind = "classifier"

    def predict(self, requests: Sequence[ChatRequest]) -> list[Prediction]:
        out = []
        for r in requests:
            text = r.last_user_text()
            if "boom" in text:
                raise ValueError("cannot read this request")
            label = "refund" if "money" in text else "other"
            out.append(Prediction(ChatResponse.of_text("kw", label), 0.9 if label == "refund" else 0.6))
        return out


async def test_a_failing_request_does_not_sink_a_specialist_batch() -> None:
    examples = [
        _ex("I want my money back", ChatResponse.of_text("t", "refund")),
        _ex("boom", ChatResponse.of_text("t", "other")),
        _ex("where is it", ChatResponse.of_text("t", "other")),
        _ex("money please", ChatResponse.of_text("t", "other")),
    ]
    report = await evaluate(_Keyword(), examples, shape="label", latency_sample=4)
    assert [r.correct for r in report.results] == [True, False, True, False]
    assert report.errors == 1 and "cannot read" in (report.results[1].error or "")
    assert [r.confidence for r in report.results] == [0.9, 0.0, 0.6, 0.9]
    assert report.coverage == {"0.9": 0.0, "0.95": 0.0, "0.99": 0.0}
    assert report.curve and report.curve[0]["accuracy"] == 0.5  # the two 0.9 answers: one right
