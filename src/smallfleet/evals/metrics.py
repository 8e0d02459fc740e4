"""Metrics that fit each output shape: labels, text, JSON objects.

All pure functions on plain Python values. The comparison rules, chosen once here
and used everywhere (evaluation, the flywheel, the router's agreement checks):

* **Text** is compared *normalised*: Unicode NFKC, case-folded, punctuation
  removed, whitespace collapsed. ``"Refund!"`` matches ``"refund"``.
* **JSON values** are compared *type-aware*:

  - numbers compare numerically, and a string that is a plain decimal number
    counts as that number (``"3"`` == ``3`` == ``3.0``) — teachers are
    inconsistent about quoting numbers and the meaning is the same;
  - booleans equal booleans only (``True`` != ``1``, ``True`` != ``"true"``);
  - strings compare normalised as above;
  - ``null`` counts as absent (a field set to null and a missing field are the same).

* **JSON objects** are flattened to fields: nested keys are joined with ``.``,
  lists of objects or lists are indexed (``items[0].sku``), and a list of scalars
  is one field compared as a multiset (order-free: tags, ids).

Field precision/recall/F1: a predicted field is a true positive when the gold
object has the same field with an equal value; every other predicted field is a
false positive, every unmatched gold field a false negative. Two empty objects
score 1.0.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldScore",
    "accuracy",
    "exact_match",
    "field_prf",
    "flatten_json",
    "json_equal",
    "json_valid",
    "macro_f1",
    "normalize_text",
    "normalize_value",
    "normalized_match",
    "parse_json",
    "schema_errors",
    "schema_valid",
    "values_equal",
]

_WS = re.compile(r"\s+")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# ---------------------------------------------------------------- text


def normalize_text(text: str) -> str:
    """NFKC, case-folded, punctuation dropped, whitespace collapsed and stripped."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return _WS.sub(" ", text).strip()


def exact_match(predicted: str, expected: str) -> bool:
    """Byte-for-byte equality (after stripping surrounding whitespace)."""
    return predicted.strip() == expected.strip()


def normalized_match(predicted: str, expected: str) -> bool:
    """Equality after :func:`normalize_text`."""
    return normalize_text(predicted) == normalize_text(expected)


# ---------------------------------------------------------------- labels


def accuracy(predicted: Sequence[Hashable], expected: Sequence[Hashable]) -> float:
    """The share of positions where the two sequences agree (0.0 for empty input)."""
    _same_length(predicted, expected)
    if not expected:
        return 0.0
    return sum(p == e for p, e in zip(predicted, expected, strict=True)) / len(expected)


def macro_f1(
    predicted: Sequence[Hashable], expected: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> float:
    """The unweighted mean of per-label F1.

    ``labels`` defaults to every label seen in either sequence (as scikit-learn
    does), so predicting a label that never occurs costs F1. A label with no
    true positives, predictions or gold occurrences is skipped.
    """
    _same_length(predicted, expected)
    if labels is None:
        labels = sorted(set(expected) | set(predicted), key=repr)
    scores = []
    for label in labels:
        tp = sum(p == label and e == label for p, e in zip(predicted, expected, strict=True))
        fp = sum(p == label and e != label for p, e in zip(predicted, expected, strict=True))
        fn = sum(p != label and e == label for p, e in zip(predicted, expected, strict=True))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def _same_length(a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"predicted has {len(a)} items but expected has {len(b)}")


# ---------------------------------------------------------------- JSON


def parse_json(text: str) -> Any:
    """The JSON value in ``text``; raises ``ValueError`` when there is none.

    A Markdown code fence around the JSON (```json … ```) is tolerated, since
    chat models often add one.
    """
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0]
    return json.loads(s)


def json_valid(text: str | None) -> bool:
    """Whether ``text`` holds one JSON value (code fences tolerated)."""
    if text is None:
        return False
    try:
        parse_json(text)
    except ValueError:
        return False
    return True


def schema_errors(value: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every way ``value`` breaks ``schema`` (JSON Schema), as readable lines; empty when valid."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        return [f"the schema itself is invalid: {e.message}"]
    validator = validator_cls(schema)
    out = []
    for err in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        out.append(f"{where}: {err.message}")
    return out


def schema_valid(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether ``value`` is valid against ``schema``."""
    return not schema_errors(value, schema)


def normalize_value(value: Any) -> Any:
    """The comparable form of a JSON scalar under the rules in the module docstring."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return _number(float(value))
    if isinstance(value, str):
        s = value.strip()
        if _NUMBER.match(s):
            return _number(float(s))
        return normalize_text(value)
    return value


def _number(x: float) -> tuple[str, float]:
    # Tagged so a number never equals a string or bool of the same "value".
    if math.isfinite(x) and x == int(x):
        return ("num", float(int(x)))
    return ("num", x)


def values_equal(a: Any, b: Any) -> bool:
    """Type-aware equality of two JSON values (objects and lists compared field by field)."""
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return flatten_json(a) == flatten_json(b)
    return normalize_value(a) == normalize_value(b)


def flatten_json(value: Any, prefix: str = "") -> dict[str, Any]:
    """Fields of a JSON value: ``{"a.b": v, "items[0].sku": v, "tags": Counter(...)}``, normalised.

    ``null`` fields are left out (null counts as absent).
    """
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten_json(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            items = [normalize_value(v) for v in value if v is not None]
            out[prefix] = frozenset(Counter(_hashable(i) for i in items).items())
        else:
            for i, v in enumerate(value):
                out.update(flatten_json(v, f"{prefix}[{i}]"))
    elif value is not None:
        out[prefix] = normalize_value(value)
    return out


def _hashable(v: Any) -> Hashable:
    return v if isinstance(v, Hashable) else repr(v)


@dataclass(frozen=True)
class FieldScore:
    """Field-level precision, recall and F1 of a predicted JSON object against the gold one."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int

    @property
    def exact(self) -> bool:
        """Every field present and equal, nothing extra."""
        return self.fp == 0 and self.fn == 0


def field_prf(predicted: Any, expected: Any) -> FieldScore:
    """Field precision/recall/F1 (see the module docstring for how values are compared)."""
    pred = flatten_json(predicted)
    gold = flatten_json(expected)
    tp = sum(1 for k, v in pred.items() if k in gold and gold[k] == v)
    fp = len(pred) - tp
    fn = len(gold) - tp
    if not pred and not gold:
        return FieldScore(1.0, 1.0, 1.0, 0, 0, 0)
    precision = tp / len(pred) if pred else 0.0
    recall = tp / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return FieldScore(precision, recall, f1, tp, fp, fn)


def json_equal(predicted: Any, expected: Any) -> bool:
    """All fields equal under the type rules, none missing, none extra."""
    return field_prf(predicted, expected).exact
