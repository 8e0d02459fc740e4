"""The classifier specialist, trained in the test on a generated support-desk task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smallfleet.errors import UserError
from smallfleet.specialists.base import Example, SpecialistChatModel, load_specialist
from smallfleet.specialists.classifier import Classifier, label_of
from smallfleet.testing.intents import INTENTS, support_desk_examples
from smallfleet.types import ChatRequest, ChatResponse

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained() -> tuple[Classifier, list[Example]]:
    train = support_desk_examples(180, "train", seed=0)
    validation = support_desk_examples(60, "train", seed=1)
    test = support_desk_examples(120, "test", seed=2)  # phrasings never seen in training
    clf = Classifier(epochs=3, progress=False).fit(train, validation)
    return clf, test


def test_reaches_accuracy_on_unseen_wording(trained: tuple[Classifier, list[Example]]) -> None:
    clf, test = trained
    preds = clf.predict([ex.request for ex in test])
    correct = [p.response.text == label_of(ex.response) for p, ex in zip(preds, test, strict=True)]
    assert sum(correct) / len(correct) >= 0.9
    assert sorted(clf.labels) == sorted(INTENTS)
    assert all(0.0 < p.confidence <= 1.0 for p in preds)
    # the confidence means something: right answers are on average surer than wrong ones
    right = [p.confidence for p, ok in zip(preds, correct, strict=True) if ok]
    wrong = [p.confidence for p, ok in zip(preds, correct, strict=True) if not ok]
    if wrong:
        assert sum(right) / len(right) > sum(wrong) / len(wrong)
    assert clf.meta.metrics["temperature"] > 0
    assert clf.meta.n_train == 180 and clf.meta.data_hash


def test_save_load_gives_identical_predictions(
    trained: tuple[Classifier, list[Example]], tmp_path: Path
) -> None:
    clf, test = trained
    requests = [ex.request for ex in test[:40]]
    before = clf.predict(requests)
    clf.save(tmp_path / "clf")
    meta = json.loads((tmp_path / "clf" / "specialist.json").read_text())
    assert meta["kind"] == "classifier" and sorted(meta["labels"]) == sorted(INTENTS)
    loaded = load_specialist(tmp_path / "clf")
    assert isinstance(loaded, Classifier)
    after = loaded.predict(requests)
    assert [p.response.text for p in after] == [p.response.text for p in before]
    for a, b in zip(after, before, strict=True):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-5)


async def test_as_a_chat_model(trained: tuple[Classifier, list[Example]]) -> None:
    clf, test = trained
    model = SpecialistChatModel(clf, name="intent-small")
    resp = await model.complete(test[0].request)
    assert resp.model == "intent-small"
    assert resp.text in INTENTS
    assert resp.choices[0].finish_reason == "stop"
    assert ChatResponse.model_validate(resp.to_dict()).text == resp.text  # exact OpenAI shape
    pred = await model.predict_one(test[1].request)
    assert 0 < pred.confidence <= 1


def test_keeps_the_teachers_json_format() -> None:
    train = support_desk_examples(96, "train", seed=3, json_labels=True)
    clf = Classifier(trainable_layers=0, progress=False).fit(train)
    (pred,) = clf.predict([train[0].request])
    assert json.loads(pred.response.text) == {"intent": label_of(pred.response)}
    assert pred.response.text == train[0].response.text  # the teacher's exact text
    assert set(clf.labels) == set(INTENTS)


def test_clear_errors() -> None:
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "weather in Paris?"}])
    tool = Example(req, ChatResponse.of_tool_calls("t", [("get_weather", {"city": "Paris"})]))
    with pytest.raises(UserError, match="tool call"):
        Classifier(progress=False).fit([tool])
    with pytest.raises(UserError, match="not trained"):
        Classifier(progress=False).predict([req])
    many = [Example(req, ChatResponse.of_text("t", f"answer {i}")) for i in range(5)]
    with pytest.raises(UserError, match="distinct labels"):
        Classifier(max_labels=3, progress=False).fit(many)
    with pytest.raises(UserError):
        Classifier(progress=False).fit([])
