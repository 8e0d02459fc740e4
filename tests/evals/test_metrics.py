"""Hand-checked cases for every metric in smallfleet.evals.metrics."""

from __future__ import annotations

import pytest

from smallfleet.evals.metrics import (
    accuracy,
    exact_match,
    field_prf,
    flatten_json,
    json_equal,
    json_valid,
    macro_f1,
    normalize_text,
    normalized_match,
    parse_json,
    schema_errors,
    schema_valid,
    values_equal,
)


def test_normalize_text_rules() -> None:
    assert normalize_text("  Hello,   WORLD!! ") == "hello world"
    assert normalize_text("ﬁle ＡＢＣ") == "file abc"  # NFKC: ligature and full-width letters
    assert normalize_text("Straße") == "strasse"  # casefold, not lower
    assert normalize_text("a\t\nb") == "a b"
    assert normalize_text("") == ""


def test_exact_and_normalized_match() -> None:
    assert exact_match("refund", " refund\n")
    assert not exact_match("Refund", "refund")
    assert normalized_match("Refund!", "refund")
    assert normalized_match("order  status", "Order status.")
    assert not normalized_match("refund", "refunds")


def test_accuracy() -> None:
    assert accuracy(["a", "b", "c", "a"], ["a", "b", "b", "b"]) == 0.5
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy(["a"], [])


def test_macro_f1_hand_checked() -> None:
    pred = ["a", "a", "b", "c"]
    gold = ["a", "b", "b", "b"]
    # a: tp1 fp1 fn0 → 2/3; b: tp1 fp0 fn2 → 2/4; c: tp0 fp1 fn0 → 0
    assert macro_f1(pred, gold) == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    # restricting the labels drops c
    assert macro_f1(pred, gold, labels=["a", "b"]) == pytest.approx((2 / 3 + 0.5) / 2)
    assert macro_f1(["x", "y"], ["x", "y"]) == 1.0


def test_json_validity_and_fences() -> None:
    assert json_valid('{"a": 1}')
    assert json_valid('```json\n{"a": 1}\n```')
    assert parse_json("```json\n[1, 2]\n```") == [1, 2]
    assert not json_valid("{'a': 1}")
    assert not json_valid("")
    assert not json_valid(None)


def test_schema_validity() -> None:
    schema = {
        "type": "object",
        "properties": {"qty": {"type": "integer"}, "sku": {"type": "string"}},
        "required": ["sku"],
        "additionalProperties": False,
    }
    assert schema_valid({"sku": "A1", "qty": 2}, schema)
    errs = schema_errors({"qty": "two", "x": 1}, schema)
    assert any("sku" in e for e in errs)
    assert any(e.startswith("qty:") for e in errs)
    assert any("'x'" in e for e in errs)
    assert schema_errors({}, {"type": "nonsense"})[0].startswith("the schema itself is invalid")


def test_value_type_rules() -> None:
    assert values_equal(3, 3.0)
    assert values_equal("3", 3)  # numeric strings count as numbers
    assert values_equal(" 2.50 ", 2.5)
    assert not values_equal(True, 1)  # booleans are not numbers
    assert not values_equal(True, "true")
    assert values_equal("New  York", "new york")  # strings normalised
    assert not values_equal("3a", 3)
    assert values_equal(None, None)


def test_flatten_json() -> None:
    flat = flatten_json({"a": {"b": 1, "c": None}, "items": [{"sku": "X"}], "tags": ["b", "a"]})
    assert set(flat) == {"a.b", "items[0].sku", "tags"}
    assert flat["tags"] == flatten_json({"tags": ["a", "b"]})["tags"]  # order-free scalar lists
    assert flat["tags"] != flatten_json({"tags": ["a", "a"]})["tags"]  # but a multiset


def test_field_prf_hand_checked() -> None:
    gold = {"name": "Ada Lovelace", "age": 36, "city": "London"}
    pred = {"name": "ada lovelace", "age": "36", "city": "Paris", "zip": "N1"}
    s = field_prf(pred, gold)
    # tp: name, age; fp: city (wrong), zip (extra); fn: city
    assert (s.tp, s.fp, s.fn) == (2, 2, 1)
    assert s.precision == pytest.approx(0.5)
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert not s.exact


def test_field_prf_edges() -> None:
    assert field_prf({}, {}).f1 == 1.0
    assert field_prf({"a": None}, {}).f1 == 1.0  # null counts as absent
    assert field_prf({}, {"a": 1}).f1 == 0.0
    assert field_prf({"a": 1}, {}).precision == 0.0
    assert json_equal({"a": {"b": [1, 2]}}, {"a": {"b": [2, "1"]}})
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
