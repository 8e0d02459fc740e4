"""Deciding one value from the encoder's answers: shared by the tool caller and the extractor.

A parameter (or field) is taught as a span item (where its value is in the text,
or "no answer") or a choice item (which enum value / true / false / absent), and
read back into a typed value with a confidence.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from smallfleet.specialists._conversation import latest_mentions
from smallfleet.specialists._params import ABSENT, Param, coerce, coerce_item, humanise
from smallfleet.specialists._spans import ChoiceItem, SpanItem, SpanResult
from smallfleet.specialists._values import (
    find_value_spans,
    is_iso_date,
    is_iso_time,
    parse_date,
    parse_time,
    relative_date,
    snap_span,
    snap_to_quotes,
    word_ngrams,
)

__all__ = [
    "CHOICE_KINDS",
    "SPAN_KINDS",
    "Decision",
    "candidates",
    "choice_decision",
    "disjoint",
    "param_item",
    "span_decision",
]

SPAN_KINDS = ("span", "integer", "number", "date", "time", "array")
CHOICE_KINDS = ("enum", "boolean")


def candidates(param: Param, text: str) -> list[tuple[int, int]] | None:
    """The spans a typed value may take: runs of words that read as a number / a date (None: any)."""
    if param.kind in ("integer", "number"):
        spans = [(s, e) for s, e in word_ngrams(text, 3) if coerce(text[s:e], param) is not None]
    elif param.kind == "date":
        runs = word_ngrams(text, 5)
        spans = [(s, e) for s, e in runs if parse_date(text[s:e]) is not None]
        if param.default_year is not None:  # a date without a year, where no date with one says it
            spans += [
                (s, e)
                for s, e in runs
                if parse_date(text[s:e], default_year=param.default_year) is not None
                and not any(s < e2 and s2 < e for s2, e2 in spans)
            ]
        if param.today is not None:  # "tomorrow", "friday", "the 23rd", where no written date says it
            spans += [
                (s, e)
                for s, e in runs
                if relative_date(text[s:e], param.today) is not None
                and not any(s < e2 and s2 < e for s2, e2 in spans)
            ]
    elif param.kind == "time":  # the longest runs: "half past six in the evening", not "half past six"
        spans = [(s, e) for s, e in word_ngrams(text, 6) if parse_time(text[s:e]) is not None]
        inside = {(s, e) for s, e in spans for s2, e2 in spans if (s2, e2) != (s, e) and s2 <= s and e <= e2}
        return [sp for sp in spans if sp not in inside] or None
    elif param.kind == "span" and isinstance(param.schema.get("pattern"), str):
        pattern = _compiled(param.schema["pattern"])
        if pattern is None:
            return None
        # a string with a pattern (an id, a code): only the runs of words that match it
        spans = [(s, e) for s, e in word_ngrams(text, 4) if pattern.search(text[s:e])]
        return spans or None
    else:
        return None
    # the shortest runs: "10", not "10 and"
    return [
        (s, e) for s, e in spans if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in spans)
    ]


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:  # JSON Schema patterns are ECMA 262; what Python cannot read is not used
        return None


def _value_spans(text: str, value: Any, param: Param) -> list[tuple[int, int]]:
    values = value if isinstance(value, list) else [value]
    spans: list[tuple[int, int]] = []
    for v in values:
        if isinstance(v, bool) or v is None or isinstance(v, (dict, list)):
            continue
        if isinstance(v, (int, float)):
            kind = "number"
        elif param.kind == "date" and is_iso_date(v):
            kind = "date"
        elif param.kind == "time" and is_iso_time(v):
            kind = "time"
        else:
            kind = "string"
        found = find_value_spans(text, v, kind, today=param.today if kind == "date" else None)
        if not found and kind == "date":
            found = find_value_spans(text, v, "string")
        spans += latest_mentions(found, text)  # a value said twice: where it stands now
    return sorted(set(spans))


@dataclass
class Decision:
    """One argument's value(s) and how sure we are; ``values`` empty = leave it out."""

    values: list[Any] = field(default_factory=list)
    confidence: float = 1.0


def param_item(param: Param, values: list[Any], text: str) -> SpanItem | ChoiceItem | None:
    """The training item teaching ``param``'s value(s) in the teacher's calls (None: not learnable)."""
    kind = param.kind
    if kind in CHOICE_KINDS:
        choices = param.choices
        if not values:
            return ChoiceItem([param.choice_query(c) for c in choices], text, [choices.index(ABSENT)]) if (
                ABSENT in choices
            ) else None  # fmt: skip
        targets = sorted({k for v in values for k, c in enumerate(choices) if c == v and type(c) is type(v)})
        return ChoiceItem([param.choice_query(c) for c in choices], text, targets) if targets else None
    if kind not in SPAN_KINDS:
        return None
    if not values:
        return None if param.required else SpanItem(param.query(), text, [])
    spans = []
    for v in values:
        spans += _value_spans(text, v, param)
    return SpanItem(param.query(), text, sorted(set(spans))) if spans else None


def span_decision(prm: Param, res: SpanResult, text: str) -> Decision:
    """The value(s) of a span-kind parameter; numbers and dates snap to a readable run of words."""
    spans = res.spans
    if not spans:
        if not prm.required:
            return Decision([], res.null_prob)
        spans = [res.best] if res.best is not None else []
    if prm.kind == "array":
        if len(spans) == 1:
            value = coerce(spans[0].text, prm)
        else:
            items = [coerce_item(s.text, prm.item_type) for s in sorted(spans, key=lambda s: s.start)]
            value = [v for v in items if v is not None] or None
        conf = min((s.prob for s in spans), default=0.0)
        return Decision([value], conf) if value is not None else Decision([], 0.0)
    ordered = sorted(spans, key=lambda s: s.start) if len(spans) > 1 else spans
    values = [_read(s.text, s.start, s.end, prm, text) for s in ordered]
    if any(v is None for v in values):
        values = [v for v in values if v is not None]
        conf = 0.0
    else:
        conf = min((s.prob for s in spans), default=0.0)
    return Decision(values, conf)


def _read(span: str, start: int, end: int, prm: Param, text: str) -> Any:
    kind = prm.kind
    if kind == "span":
        qs, qe = snap_to_quotes(text, start, end)
        return text[qs:qe]
    if kind == "time":  # the longest run around the span that says a time ("... in the evening")
        runs = [(s, e) for s, e in word_ngrams(text, 6) if s < end and e > start and parse_time(text[s:e])]
        if runs:
            s, e = max(runs, key=lambda r: r[1] - r[0])
            return parse_time(text[s:e])
        return parse_time(span)
    value = coerce(span, prm)
    if kind in ("integer", "number", "date") and (value is None or (kind == "date" and value == span)):
        snapped = snap_span(text, start, end, "date" if kind == "date" else "number", prm.default_year)
        if snapped is not None:
            value = coerce(text[snapped[0] : snapped[1]], prm)
    return value


def choice_decision(prm: Param, probs: list[float], text: str = "") -> Decision:
    """The chosen value; a single value the text spells out (``"in French"``) gets a strong boost."""
    choices = prm.choices
    said = [k for k, c in enumerate(choices) if c != ABSENT and isinstance(c, str) and _says(text, c)]
    if len(said) == 1:
        probs = [p + (1.0 if k in said else 0.0) for k, p in enumerate(probs)]
        z = sum(probs)
        probs = [p / z for p in probs]
    best = max(range(len(choices)), key=lambda k: probs[k])
    if choices[best] == ABSENT:
        return Decision([], probs[best])
    return Decision([choices[best]], probs[best])


def _says(text: str, value: str) -> bool:
    words = {value, humanise(value)}
    return any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text, re.IGNORECASE) for w in words if w.strip())


def disjoint(results: list[SpanResult]) -> None:
    """Different parameters of one call take different parts of the text ("from Tokyo to Oslo").

    When answered parameters claim overlapping spans, each gets its best span not claimed by
    a more probable (parameter, span) pair; extra spans (several values) that another
    parameter claimed are dropped.
    """
    answered = [k for k, r in enumerate(results) if r.spans]
    firsts = [results[k].spans[0] for k in answered]
    if not any(_overlap(a, b) for i, a in enumerate(firsts) for b in firsts[i + 1 :]):
        return
    assigned = _best_assignment([(results[k].top or results[k].spans)[:5] for k in answered])
    assigned = {answered[j]: sp for j, sp in assigned.items()}
    for k in answered:
        r = results[k]
        others = [sp for j, sp in assigned.items() if j != k]
        if k not in assigned:
            r.spans = []
            continue
        extras = [s for s in r.spans[1:] if not any(_overlap(s, o) for o in [*others, assigned[k]])]
        r.spans = [assigned[k], *extras]


def _best_assignment(options: list[list[Any]]) -> dict[int, Any]:
    """One span per parameter, none overlapping, with the highest product of probabilities.

    Exhaustive over each parameter's few best spans (or leaving it out, at a cost) when
    that is small; greedy otherwise.
    """
    import itertools
    import math

    if math.prod(len(o) + 1 for o in options) > 5000:
        out: dict[int, Any] = {}
        ranked = sorted(((sp.prob, k, sp) for k, o in enumerate(options) for sp in o), key=lambda x: -x[0])
        for _, k, sp in ranked:
            if k not in out and not any(_overlap(sp, o) for o in out.values()):
                out[k] = sp
        return out
    best: tuple[float, dict[int, Any]] = (-math.inf, {})
    missing = math.log(1e-4)
    for combo in itertools.product(*[[*o, None] for o in options]):
        chosen = [(k, sp) for k, sp in enumerate(combo) if sp is not None]
        if any(_overlap(a, b) for i, (_, a) in enumerate(chosen) for _, b in chosen[i + 1 :]):
            continue
        score = sum(math.log(max(sp.prob, 1e-9)) for _, sp in chosen) + missing * (len(options) - len(chosen))
        if score > best[0]:
            best = (score, dict(chosen))
    return best[1]


def _overlap(a: Any, b: Any) -> bool:
    return a.start < b.end and b.start < a.end
