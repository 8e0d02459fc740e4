"""Curation (S2): seeded failures, refusals, truncations, duplicates and near-duplicates are dropped
and counted; the split is by time; near-duplicates never straddle train and test."""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict

import pytest

from smallfleet.demo import generate_workload, to_trace_records
from smallfleet.flywheel.curate import (
    _answer_text,
    _block_key,
    curate,
    dialogue_text,
    drop_reason,
    is_refusal,
    near_duplicate_vectors,
)
from smallfleet.store.records import TraceRecord

N = 400  # the oldest calls of test_cluster's workload: their embeddings are cached by then


def _variant(r: TraceRecord, i: int, **changes: object) -> TraceRecord:
    """A later copy of ``r`` with a fresh id."""
    fields: dict[str, object] = {
        "id": f"seeded{i:04d}",
        "created_at": r.created_at + 60 + i,
        "request": copy.deepcopy(r.request),
        "response": copy.deepcopy(r.response),
    }
    return dataclasses.replace(r, **{**fields, **changes})


def _set_text(r: TraceRecord, text: str) -> TraceRecord:
    r.request["messages"][-1]["content"] = text
    return r


def _message(r: TraceRecord) -> dict:
    return r.response["choices"][0]["message"]


@pytest.fixture(scope="module")
def seeded() -> tuple[list[TraceRecord], dict[str, set[str]], dict[str, float]]:
    """The workload plus seeded bad calls; returns the records, the seeded ids per reason, feedback."""
    base = to_trace_records(generate_workload(1500, seed=7)[:N])
    texts = [r for r in base if r.response["choices"][0]["message"].get("content")]
    seeded: dict[str, set[str]] = defaultdict(set)
    extra: list[TraceRecord] = []
    i = 0

    def add(reason: str, rec: TraceRecord) -> None:
        nonlocal i
        seeded[reason].add(rec.id)
        extra.append(rec)
        i += 1

    for r in base[:6]:
        add(
            "error",
            _variant(r, i, status="error", http_status=502, error="upstream timed out", response=None),
        )
    add("error", _variant(base[6], i, http_status=429, error="rate limited"))
    for r in base[7:9]:
        add("no_response", _variant(r, i, response=None))
    add("invalid_response", _variant(base[9], i, response={"object": "chat.completion"}))
    refusals = [
        "I'm sorry, but I can't help with that.",
        "I cannot assist with that request.",
        "Sorry, I can't help with this.",
        "As an AI language model, I cannot do that.",
    ]
    for r, text in zip(texts[:4], refusals, strict=True):
        v = _variant(r, i)
        _message(v)["content"] = text
        add("refusal", v)
    v = _variant(texts[4], i)
    _message(v).update(content=None, refusal="I can't comply with that.")
    add("refusal", v)
    v = _variant(texts[5], i)
    v.response["choices"][0]["finish_reason"] = "content_filter"
    add("refusal", v)
    for r in base[10:14]:
        v = _variant(r, i)
        v.response["choices"][0]["finish_reason"] = "length"
        add("truncated", v)
    for r in texts[6:9]:
        v = _variant(r, i)
        _message(v)["content"] = "  "
        add("empty", v)
    for r in base[20:25]:  # the same call again, word for word
        add("duplicate", _variant(r, i))
    add(
        "duplicate",
        _set_text(_variant(base[25], i), "  " + base[25].request["messages"][-1]["content"].upper()),
    )
    alone = curate(base).reasons  # originals that are themselves kept, so their copies have a kept twin
    near = [
        r
        for r in base[30:]
        if "," in dialogue_text(r.request) and len(dialogue_text(r.request)) > 40 and r.id not in alone
    ][:5]
    for r in near:  # the same words, a little punctuation missing
        add(
            "near_duplicate",
            _set_text(_variant(r, i), dialogue_text(r.request).replace(",", "").replace(".", "", 1)),
        )
    feedback = {base[40].id: -1.0, base[41].id: -0.5, base[42].id: -1.0, base[43].id: 1.0, base[44].id: 0.0}
    seeded["negative_feedback"] = {base[40].id, base[41].id, base[42].id}
    return base + extra, seeded, feedback


def test_seeded_bad_calls_are_dropped_and_counted(seeded: tuple) -> None:
    records, by_reason, feedback = seeded
    cur = curate(records, feedback=feedback)
    for reason, ids in by_reason.items():
        assert {cur.reasons.get(i) for i in ids} == {reason}, reason
        if reason != "near_duplicate":  # the generated traffic itself has none of the others
            assert cur.dropped[reason] == len(ids), reason
    assert cur.dropped["near_duplicate"] >= len(by_reason["near_duplicate"])
    assert cur.dropped["near_duplicate"] <= len(by_reason["near_duplicate"]) + 0.02 * N
    assert cur.kept + sum(cur.dropped.values()) == len(records)
    kept_ids = {r.id for r in [*cur.train, *cur.validation, *cur.test]}
    assert not kept_ids & set(cur.reasons)
    assert {cur.reasons.get(records[i].id) for i in (43, 44)} <= {
        None,
        "near_duplicate",
    }  # good feedback stays
    assert cur.reasons.get(records[20].id) != "duplicate"  # of duplicates, the earliest is kept
    assert cur.summary()["dropped"] == dict(cur.dropped)


def test_split_is_by_time_with_test_newest(seeded: tuple) -> None:
    records, _, _ = seeded
    cur = curate(records, split=(0.7, 0.15, 0.15))
    assert abs(len(cur.train) / cur.kept - 0.7) < 0.02 and abs(len(cur.test) / cur.kept - 0.15) < 0.02
    assert max(r.created_at for r in cur.train) <= min(r.created_at for r in cur.validation)
    assert max(r.created_at for r in cur.validation) <= min(r.created_at for r in cur.test)
    assert cur.split_of(cur.test[-1].id) == "test" and cur.split_of("nope") is None


def _near_pairs(records: list[TraceRecord], threshold: float) -> list[tuple[str, str]]:
    x = near_duplicate_vectors([dialogue_text(r.request) for r in records])
    keys = [_block_key(r.request, _answer_text(_message(r))) for r in records]
    sims = (x @ x.T).toarray()
    return [
        (records[i].id, records[j].id)
        for i in range(len(records))
        for j in range(i + 1, len(records))
        if keys[i] == keys[j] and sims[i, j] >= threshold
    ]


def test_near_duplicates_never_straddle_splits(seeded: tuple) -> None:
    records, _, _ = seeded
    # kept as groups at a loose threshold: the seeded twins and some look-alikes, each whole in one split
    grouped = curate(records, near_duplicates="group", near_duplicate_threshold=0.6)
    split = {r.id: name for name in ("train", "validation", "test") for r in getattr(grouped, name)}
    pairs = _near_pairs([*grouped.train, *grouped.validation, *grouped.test], 0.6)
    assert len(pairs) > 5 and grouped.groups
    assert all(split[a] == split[b] for a, b in pairs)
    assert "near_duplicate" not in grouped.dropped
    # dropped (the default): no two kept calls are near-duplicates at all
    dropped = curate(records, near_duplicate_threshold=0.9)
    assert not _near_pairs([*dropped.train, *dropped.validation, *dropped.test], 0.9)
    assert dropped.dropped["near_duplicate"] > 0


def test_threshold_one_switches_near_duplicates_off(seeded: tuple) -> None:
    records, by_reason, _ = seeded
    cur = curate(records, near_duplicate_threshold=1.0)
    assert "near_duplicate" not in cur.dropped
    assert cur.dropped["duplicate"] == len(by_reason["duplicate"])


def test_is_refusal() -> None:
    yes = [
        "I'm sorry, but I can't help with that.",
        "I cannot assist with that.",
        "Sorry, I can’t do that.",
        "We are unable to help with this request.",
        "As an AI, I can't give legal advice.",
    ]
    for text in yes:
        assert is_refusal(text), text
    no = [
        "cancel_order",
        "I can't believe it arrived broken, here is what we'll do: a refund.",
        "Dear Anna,\n\nI'm sorry. I can't undo the delay, but " + "I have sent a replacement. " * 20,
    ]
    for text in no:
        assert not is_refusal(text), text


def test_drop_reason_on_odd_records() -> None:
    assert drop_reason(TraceRecord(response={"choices": []})) == "invalid_response"
    assert drop_reason(TraceRecord(response={"choices": [{"message": "x"}]})) == "invalid_response"
    ok = {"choices": [{"message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}]}
    assert drop_reason(TraceRecord(response=ok)) is None
    assert drop_reason(TraceRecord(status="client_disconnected", response=ok)) == "error"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="near_duplicates"):
        curate([], near_duplicates="merge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        curate([], split=(0.5, 0.2, 0.2))
    assert curate([]).kept == 0


def test_a_near_duplicate_with_another_answer_is_kept(seeded: tuple) -> None:
    """Alike requests that want different answers (consecutive turns, two intents) are both examples."""
    records, _, _ = seeded
    base = next(r for r in records if _message(r) and _message(r).get("content") and r.status == "ok")
    twin = _variant(base, 900)
    _message(twin)["content"] = (_message(base)["content"] or "") + " (revised)"
    same = _variant(base, 901)
    _set_text(same, dialogue_text(base.request).upper() + "!!")
    cur = curate([base, twin, same])
    assert twin.id not in cur.reasons  # another answer: kept
    assert cur.reasons.get(same.id) in ("near_duplicate", "duplicate")  # same words, same answer: dropped


def test_paraphrases_are_not_near_duplicates() -> None:
    """Two customers asking one thing in their own words are two examples (judged on words, not meaning)."""
    texts = ["I lost my card, what do I do?", "i lost my card what do i do", "My card is missing, help!"]
    x = near_duplicate_vectors(texts)
    sims = (x @ x.T).toarray()
    assert sims[0, 1] > 0.99
    assert sims[0, 2] < 0.9
