"""``evaluate(model, examples) -> Report``: any model, measured the same way.

A remote LLM, a local LM and a trained specialist are all scored on the same
examples with the metric that fits the task's output shape:

======== ================================================ ==================
shape    correct when                                     score
======== ================================================ ==================
label    the labels match after text normalisation         1 / 0
json     every field equal under the type rules            field F1
tool_call the calls match (BFCL AST-checker style)         1 / 0
text     normalised exact match, or the judge says so      1 / 0, judge score
======== ================================================ ==================

The report carries the accuracy (share correct), the mean score, per-example
results with the model's confidence when it gives one (specialists do), latency
p50/p95, cost, and for confident models the coverage at 90/95/99% accuracy.

Specialists are scored in batches (their :meth:`~Specialist.predict`); their
latency is measured on single requests (``latency_sample`` of them), as a
client of the router would see it.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from smallfleet.encoders import unseen
from smallfleet.evals.coverage import coverage_at_accuracy, coverage_curve
from smallfleet.evals.metrics import field_prf, macro_f1, normalize_text, parse_json, schema_errors
from smallfleet.specialists.base import Example, Specialist, SpecialistChatModel
from smallfleet.specialists.catalog import Shape, profile_task
from smallfleet.types import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from smallfleet.config import Price
    from smallfleet.evals.judge import Judge
    from smallfleet.models.base import ChatModel

__all__ = ["TARGET_ACCURACIES", "ExampleResult", "ExampleScore", "Report", "evaluate", "score", "shape_of"]

#: Accuracy targets the report gives the coverage for.
TARGET_ACCURACIES = (0.9, 0.95, 0.99)


def shape_of(response: ChatResponse) -> Shape:
    """The shape of one response: ``tool_call``, ``json`` (a JSON object) or ``text``.

    ``label`` is a property of a task (a small set of texts), not of one response:
    :func:`~smallfleet.specialists.catalog.profile_task` tells it from many.
    """
    if response.choices and response.message.tool_calls:
        return "tool_call"
    try:
        if isinstance(parse_json(response.text), dict):
            return "json"
    except ValueError:
        pass
    return "text"


@dataclass(frozen=True)
class ExampleScore:
    correct: bool
    score: float
    detail: str | None = None


def _label(response: ChatResponse) -> str:
    from smallfleet.errors import UserError
    from smallfleet.specialists.classifier import label_of

    try:
        return normalize_text(label_of(response))
    except UserError:
        return "<tool call>"


def score(
    predicted: ChatResponse, expected: ChatResponse, request: ChatRequest, shape: Shape
) -> ExampleScore:
    """Score one answer against the reference with the metric for ``shape`` (the judge aside)."""
    if shape == "label":
        p, e = _label(predicted), _label(expected)
        return ExampleScore(p == e, float(p == e), None if p == e else f"label {p!r} != {e!r}")
    if shape == "json":
        return _score_json(predicted, expected, request)
    if shape == "tool_call":
        from smallfleet.evals.tool_match import calls_from_response, match_tool_calls

        result = match_tool_calls(
            calls_from_response(predicted), calls_from_response(expected), request.tools
        )
        return ExampleScore(result.ok, float(result.ok), result.reason)
    same = normalize_text(predicted.text) == normalize_text(expected.text)
    return ExampleScore(same, float(same), None if same else "text differs")


def _score_json(predicted: ChatResponse, expected: ChatResponse, request: ChatRequest) -> ExampleScore:
    try:
        pred = parse_json(predicted.text)
    except ValueError:
        return ExampleScore(False, 0.0, "not valid JSON")
    try:
        gold = parse_json(expected.text)
    except ValueError:
        gold = expected.text
    problems = []
    schema = request.json_schema
    if schema:
        errs = schema_errors(pred, schema)
        if errs:
            problems.append(f"schema: {errs[0]}")
    f = field_prf(pred, gold)
    if not f.exact:
        problems.append(f"fields: {f.tp} right, {f.fp} wrong or extra, {f.fn} missed")
    return ExampleScore(not problems, f.f1, "; ".join(problems) or None)


@dataclass
class ExampleResult:
    index: int
    correct: bool
    score: float
    confidence: float | None = None
    latency_ms: float | None = None
    detail: str | None = None
    predicted: str = ""
    expected: str = ""
    error: str | None = None


@dataclass
class Report:
    """What ``evaluate`` found. ``to_dict()`` / ``to_json()`` for files and the flywheel."""

    model: str
    shape: Shape
    n: int
    accuracy: float
    score: float
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_usd: float | None
    results: list[ExampleResult] = field(default_factory=list)
    macro_f1: float | None = None
    #: accuracy target → the largest share of answers kept at that accuracy (confident models).
    coverage: dict[str, float] | None = None
    curve: list[dict[str, float]] | None = None
    seconds: float = 0.0

    @property
    def confidences(self) -> list[float] | None:
        conf = [r.confidence for r in self.results]
        return None if any(c is None for c in conf) else conf  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        d = dict(data)
        d["results"] = [ExampleResult(**r) for r in d.get("results", [])]
        return cls(**d)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))
    return s[k]


def _show(response: ChatResponse | None) -> str:
    if response is None or not response.choices:
        return ""
    msg = response.message
    if msg.tool_calls:
        return "; ".join(f"{c.function.name}({c.function.arguments})" for c in msg.tool_calls)
    return msg.content or ""


async def _predict_specialist(
    specialist: Specialist, requests: list[ChatRequest], batch_size: int, latency_sample: int
) -> tuple[list[ChatResponse | None], list[float], list[float], float, list[str | None]]:
    responses: list[ChatResponse | None] = []
    confidences: list[float] = []
    errors: list[str | None] = []
    started = time.perf_counter()
    for i in range(0, len(requests), batch_size):
        batch = requests[i : i + batch_size]
        try:
            preds = await asyncio.to_thread(specialist.predict, batch)
            responses += [p.response for p in preds]
            confidences += [p.confidence for p in preds]
            errors += [None] * len(preds)
        except Exception:  # find the request that fails; the others still count
            for req in batch:
                try:
                    (p,) = await asyncio.to_thread(specialist.predict, [req])
                    responses.append(p.response)
                    confidences.append(p.confidence)
                    errors.append(None)
                except Exception as e:
                    responses.append(None)
                    confidences.append(0.0)
                    errors.append(f"{type(e).__name__}: {getattr(e, 'message', None) or e}")
    compute = time.perf_counter() - started
    latencies = []
    # the batches above embedded these messages; a live request arrives unseen
    with unseen(r.last_user_text() for r in requests[:latency_sample]):
        for req in requests[:latency_sample]:  # single requests, as the router sends them
            t = time.perf_counter()
            try:
                await asyncio.to_thread(specialist.predict, [req])
            except Exception:
                continue
            latencies.append((time.perf_counter() - t) * 1000)
    return responses, confidences, latencies, compute, errors


async def _predict_model(
    model: ChatModel, requests: list[ChatRequest], concurrency: int
) -> tuple[list[ChatResponse | None], list[float | None], list[str | None]]:
    sem = asyncio.Semaphore(max(1, concurrency))
    responses: list[ChatResponse | None] = [None] * len(requests)
    latencies: list[float | None] = [None] * len(requests)
    errors: list[str | None] = [None] * len(requests)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            try:
                responses[i] = await model.complete(requests[i])
                latencies[i] = (time.perf_counter() - t) * 1000
            except Exception as e:  # one failed call is a wrong answer, not a failed evaluation
                errors[i] = f"{type(e).__name__}: {getattr(e, 'message', None) or e}"

    await asyncio.gather(*(one(i) for i in range(len(requests))))
    return responses, latencies, errors


async def evaluate(
    model: ChatModel | Specialist,
    examples: Sequence[Example],
    *,
    shape: Shape | None = None,
    judge: Judge | None = None,
    concurrency: int = 8,
    price: Price | None = None,
    usd_per_hour: float | None = None,
    batch_size: int = 64,
    latency_sample: int = 32,
    name: str | None = None,
) -> Report:
    """Score ``model`` on ``examples`` (the teacher's responses are the references).

    ``shape`` defaults to the one :func:`profile_task` reads from the examples.
    ``judge`` grades free-text answers that do not match exactly. ``price`` (USD
    per 1M tokens) prices a model by its usage; ``usd_per_hour`` prices a local
    model by its compute time.
    """
    started = time.perf_counter()
    shape = shape or profile_task(examples).shape
    requests = [ex.request for ex in examples]
    specialist = model.specialist if isinstance(model, SpecialistChatModel) else model
    confidences: list[float] | None = None
    errors: list[str | None] = [None] * len(examples)
    if isinstance(specialist, Specialist):
        label = name or getattr(model, "name", None) or f"specialist:{specialist.kind}"
        responses, confidences, sample, compute, errors = await _predict_specialist(
            specialist, requests, batch_size, latency_sample
        )
        latencies: list[float] = sample
        per_example_latency: list[float | None] = [compute * 1000 / max(1, len(examples))] * len(examples)
        cost = None if usd_per_hour is None else compute / 3600 * usd_per_hour
    else:
        assert not isinstance(model, Specialist)
        label = name or model.name
        responses, per_example_latency, errors = await _predict_model(model, requests, concurrency)
        latencies = [x for x in per_example_latency if x is not None]
        cost = _usage_cost(responses, price)
        if usd_per_hour is not None:
            cost = (cost or 0.0) + sum(latencies) / 1000 / 3600 * usd_per_hour

    results: list[ExampleResult] = []
    judged: list[int] = []
    for i, (ex, resp) in enumerate(zip(examples, responses, strict=True)):
        r = ExampleResult(
            index=i,
            correct=False,
            score=0.0,
            confidence=confidences[i] if confidences is not None else None,
            latency_ms=per_example_latency[i],
            predicted=_show(resp),
            expected=_show(ex.response),
            error=errors[i],
        )
        if resp is not None:
            s = score(resp, ex.response, ex.request, shape)
            r.correct, r.score, r.detail = s.correct, s.score, s.detail
            if judge is not None and shape == "text" and not s.correct:
                judged.append(i)
        results.append(r)
    if judged and judge is not None:
        await _judge(judge, examples, responses, results, judged, concurrency)

    correct = [r.correct for r in results]
    n = len(results)
    report = Report(
        model=label,
        shape=shape,
        n=n,
        accuracy=sum(correct) / n if n else 0.0,
        score=sum(r.score for r in results) / n if n else 0.0,
        errors=sum(r.error is not None for r in results),
        latency_p50_ms=_percentile(latencies, 0.5),
        latency_p95_ms=_percentile(latencies, 0.95),
        cost_usd=cost,
        results=results,
    )
    if shape == "label":
        report.macro_f1 = macro_f1(
            [_label(r) if r is not None else "<error>" for r in responses],
            [_label(ex.response) for ex in examples],
        )
    if confidences is not None and n:
        report.coverage = {f"{t:g}": coverage_at_accuracy(confidences, correct, t) for t in TARGET_ACCURACIES}
        report.curve = [p.to_dict() for p in coverage_curve(confidences, correct)]
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _usage_cost(responses: Sequence[ChatResponse | None], price: Price | None) -> float | None:
    if price is None:
        return None
    usd = 0.0
    for r in responses:
        if r is not None and r.usage is not None:
            usd += r.usage.prompt_tokens * price.input + r.usage.completion_tokens * price.output
    return usd / 1_000_000


async def _judge(
    judge: Judge,
    examples: Sequence[Example],
    responses: Sequence[ChatResponse | None],
    results: list[ExampleResult],
    indices: list[int],
    concurrency: int,
) -> None:
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(i: int) -> None:
        resp = responses[i]
        assert resp is not None
        async with sem:
            try:
                v = await judge.grade(examples[i].request, resp.text, examples[i].response.text)
            except Exception as e:  # a judge failure leaves the exact-match verdict in place
                results[i].detail = f"judge failed: {getattr(e, 'message', None) or e}"
                return
        results[i].correct, results[i].score = v.correct, v.score
        results[i].detail = f"judge: {v.reason}" if v.reason else "judge"

    await asyncio.gather(*(one(i) for i in indices))


def summary_rows(report: Report) -> list[tuple[str, str]]:
    """The report as (name, value) rows for a terminal table."""

    def ms(x: float | None) -> str:
        return "–" if x is None else f"{x:.1f} ms"

    rows = [
        ("model", report.model),
        ("shape", report.shape),
        ("examples", str(report.n)),
        ("accuracy", f"{report.accuracy:.3f}"),
        ("score", f"{report.score:.3f}"),
    ]
    if report.macro_f1 is not None:
        rows.append(("macro-F1", f"{report.macro_f1:.3f}"))
    rows += [
        ("errors", str(report.errors)),
        ("latency p50", ms(report.latency_p50_ms)),
        ("latency p95", ms(report.latency_p95_ms)),
        ("cost", "–" if report.cost_usd is None else f"${report.cost_usd:.6f}"),
    ]
    for target, cov in (report.coverage or {}).items():
        rows.append((f"coverage at {float(target):.0%} accuracy", f"{cov:.1%}"))
    if report.confidences:
        rows.append(("mean confidence", f"{statistics.fmean(report.confidences):.3f}"))
    return rows
