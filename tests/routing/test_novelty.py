"""The novelty gate: a request of an intent the route never learned escalates as ``novel``.

A real classifier (head on the bundled encoder) learns banking77 intents from the committed
slice, with one intent held out of its training; the slice's test messages then go through
:meth:`Router.decide` on a route whose confidence threshold lets everything through, so what
stops a request is the gate alone.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from smallfleet.routing.matcher import static_key_of_dict
from smallfleet.routing.novelty import GATE_FILE, NoveltyGate, answer_key, fit_route_gate
from smallfleet.routing.router import Router
from smallfleet.routing.routes import Route
from smallfleet.specialists.base import Example
from smallfleet.types import ChatRequest, ChatResponse, Usage

DATA = Path(__file__).resolve().parents[1] / "data" / "banking77"
SYSTEM = "Classify the bank customer's message into one intent; answer with its name only."
#: held out of training on purpose; the slice's test.csv also has two intents train.csv lacks
HELD_OUT = "exchange_rate"


def _rows(name: str) -> list[tuple[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as f:
        return [(r["text"].strip(), r["category"].strip()) for r in csv.DictReader(f)]


def _example(text: str, intent: str) -> Example:
    request = ChatRequest.model_validate(
        {
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        }
    )
    return Example(request, ChatResponse.of_text("gpt-4o", intent, Usage.of(0, 1)))


@pytest.fixture(scope="module")
def banking(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from smallfleet.specialists.classifier import Classifier

    rows = [r for r in _rows("train.csv") if r[1] != HELD_OUT]
    train = [_example(t, c) for t, c in rows[::2] + rows[1::2][:60]]
    validation = [_example(t, c) for t, c in rows[1::2][60:]]
    folder = tmp_path_factory.mktemp("novelty") / "classifier"
    clf = Classifier(progress=False, trainable_layers=0, seed=0).fit(train, validation)
    clf.save(folder)
    info = fit_route_gate(folder, train, validation, "label")
    assert info is not None and info["keyed"] and (folder / GATE_FILE).exists()
    route = Route(
        name="banking-intent",
        kind="classifier",
        specialist_path=str(folder),
        threshold=1e-6,  # every answer is confident enough: only the gate can escalate
        mode="on",
        labels=clf.labels,
        matcher={"version": 1, "keys": [static_key_of_dict(train[0].request.to_dict())]},
        metrics={"novelty": info},
    )
    trained = {c for _, c in rows}
    tests = [(_example(t, c), c not in trained) for t, c in _rows("test.csv")]
    return {"route": route, "tests": tests, "info": info, "folder": folder}


def _outcomes(router: Router, tests: list[tuple[Example, bool]]) -> dict[bool, Counter[str]]:
    from smallfleet.encoders import embed_cached
    from smallfleet.routing.novelty import request_text

    embed_cached([request_text(ex.request) for ex, _ in tests])  # in one batch: the test runs faster
    out: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    for ex, unseen in tests:
        d = router.decide(ex.request)
        out[unseen][d.reason or d.action] += 1
    return out


def test_a_held_out_intent_escalates_as_novel_while_seen_ones_are_served(banking: dict[str, Any]) -> None:
    tests = banking["tests"]
    gated = _outcomes(Router([banking["route"]], max_batch=1), tests)
    print(gated)
    unseen_n, seen_n = sum(gated[True].values()), sum(gated[False].values())
    assert unseen_n >= 20 and seen_n >= 60
    # every answer passes the threshold and validates: only the gate escalates
    assert set(gated[True]) | set(gated[False]) <= {"small", "novel"}
    # held-out intents: escalated as novel, though the specialist answered
    assert gated[True]["novel"] / unseen_n >= 0.6, gated
    # seen intents: served, the gate costs few of them
    assert gated[False]["small"] / seen_n >= 0.85, gated

    # with the gate switched off, the same route serves them
    plain = Router([banking["route"]], max_batch=1, novelty=False)
    assert all(plain.decide(ex.request).action == "small" for ex, unseen in tests if unseen)


def test_the_decision_says_why_and_routes_without_a_gate_serve_as_before(banking: dict[str, Any]) -> None:
    ex = next(ex for ex, unseen in banking["tests"] if unseen)
    router = Router([banking["route"]], max_batch=1)
    novel = [router.decide(e.request) for e, unseen in banking["tests"] if unseen]
    d = next(d for d in novel if d.reason == "novel")
    assert d.action == "large" and d.label == "escalated:novel" and d.response is None
    assert d.novelty is not None and d.novelty < router.gate(banking["route"]).threshold  # type: ignore[union-attr]
    assert d.confidence is not None and d.prediction is not None

    old = Route(**{**banking["route"].__dict__, "metrics": {}})  # a route promoted before gates
    assert Router([old], max_batch=1).decide(ex.request).action == "small"


def test_the_gate_round_trips_and_scores_an_answer_training_never_gave_as_novel(
    banking: dict[str, Any],
) -> None:
    gate = NoveltyGate.load(banking["folder"] / GATE_FILE)
    assert gate.vectors.dtype.name == "float16" and gate.keys is not None
    assert gate.threshold == pytest.approx(banking["info"]["threshold"])
    text = "My card arrived but the PIN is blocked"
    assert gate.score(text, "no_such_intent") == float("-inf")
    assert gate.score(text, answer_key(ChatResponse.of_text("m", "pin_blocked"))) > gate.threshold
