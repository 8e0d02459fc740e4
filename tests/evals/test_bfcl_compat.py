"""``mode="bfcl"`` decides as BFCL's own ``ast_checker`` does, where the default mode does not.

Each case is one of the four kinds of difference between smallfleet's matcher and
BFCL's checker. The ``bfcl`` verdicts were checked against the real ``ast_checker``
of bfcl-eval 2026.3.23 (run through ``benchmarks/bfcl/agreement.py``'s loader) and are
hard-coded here, so the tests need neither the wheel nor the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smallfleet.evals.bfcl import convert_function, load_category, score
from smallfleet.evals.tool_match import match_tool_calls


@dataclass(frozen=True)
class Case:
    """BFCL's function, its ground truth, a model's answer, and both verdicts."""

    id: str
    category: str
    function: dict[str, Any]  # BFCL's own form ("dict", "float", ...)
    ground_truth: list[dict[str, Any]]  # [{name: {arg: [acceptable values]}}]
    answer: list[dict[str, Any]]  # [{name: {arg: value}}]
    bfcl: bool  # what BFCL's ast_checker says (verified against the real one)
    default: bool  # what smallfleet's default mode says


def _fn(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"name": name, "parameters": {"type": "dict", "properties": properties, "required": required}}


AREA = _fn(
    "paint.calculate",
    {
        "area": {
            "type": "dict",
            "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}},
        }
    },
    ["area"],
)
AREA_TRUTH = [{"paint.calculate": {"area": [{"width": [20], "height": [12]}]}}]

THINQ = _fn(
    "thinq_connect",
    {
        "body": {
            "type": "dict",
            "properties": {"mode": {"type": "string"}, "monitoring": {"type": "boolean"}},
        }
    },
    ["body"],
)

PEOPLE = _fn(
    "extract",
    {
        "data": {
            "type": "array",
            "items": {
                "type": "dict",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            },
        }
    },
    ["data"],
)

CURVE = _fn(
    "area_under_curve",
    {
        "function": {"type": "string"},
        "interval": {"type": "array", "items": {"type": "float"}},
        "step": {"type": "float"},
    },
    ["function", "interval"],
)
CURVE_TRUTH = [{"area_under_curve": {"function": ["x**2"], "interval": [[1.0, 3.0]], "step": ["", 2.0]}}]

POKER = _fn(
    "poker_winner",
    {
        "players": {"type": "array", "items": {"type": "string"}},
        "cards": {"type": "dict", "properties": {}},
    },
    ["players", "cards"],
)
POKER_TRUTH = [
    {"poker_winner": {"players": [["Alex", "Sam"]], "cards": [{"Alex": [["A of spades", "K of spades"]]}]}}
]

PLAY = _fn(
    "spotify.play",
    {"artist": {"type": "string"}, "duration": {"type": "integer"}},
    ["artist", "duration"],
)
#: The first expected call accepts either artist; the second only Maroon 5.
PLAY_TRUTH = [
    {"spotify.play": {"artist": ["Maroon 5", "Taylor Swift"], "duration": [15, 20]}},
    {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}},
]
MAROON = {"spotify_play": {"artist": "Maroon 5", "duration": 15}}
TAYLOR = {"spotify_play": {"artist": "Taylor Swift", "duration": 20}}

CASES = [
    # 1. Numbers and booleans inside dicts: BFCL compares with ==, so 20.0 == 20 and 0 == False.
    Case("nested float for integer", "simple_python", AREA, AREA_TRUTH,
         [{"paint_calculate": {"area": {"width": 20.0, "height": 12}}}], bfcl=True, default=False),
    Case("nested integer (control)", "simple_python", AREA, AREA_TRUTH,
         [{"paint_calculate": {"area": {"width": 20, "height": 12}}}], bfcl=True, default=True),
    Case("nested wrong integer (control)", "simple_python", AREA, AREA_TRUTH,
         [{"paint_calculate": {"area": {"width": 21, "height": 12}}}], bfcl=False, default=False),
    Case("nested 0 for false", "live_simple", THINQ,
         [{"thinq_connect": {"body": [{"mode": ["clean"], "monitoring": [False]}]}}],
         [{"thinq_connect": {"body": {"mode": "CLEAN", "monitoring": 0}}}], bfcl=True, default=False),
    Case("nested 1 for true", "live_simple", THINQ,
         [{"thinq_connect": {"body": [{"mode": ["clean"], "monitoring": [True]}]}}],
         [{"thinq_connect": {"body": {"mode": "clean", "monitoring": 1}}}], bfcl=True, default=False),
    Case("nested 1 for false (control)", "live_simple", THINQ,
         [{"thinq_connect": {"body": [{"mode": ["clean"], "monitoring": [False]}]}}],
         [{"thinq_connect": {"body": {"mode": "clean", "monitoring": 1}}}], bfcl=False, default=False),
    Case("float for integer in a list of dicts", "live_simple", PEOPLE,
         [{"extract": {"data": [[{"name": ["Li Lei"], "age": [18]}]]}}],
         [{"extract": {"data": [{"name": "li lei", "age": 18.0}]}}], bfcl=True, default=False),
    # 2. Integers in a float array: BFCL's int → float applies to the top level only.
    Case("integers in a float array", "simple_python", CURVE, CURVE_TRUTH,
         [{"area_under_curve": {"function": "x**2", "interval": [1, 3]}}], bfcl=False, default=True),
    Case("an integer among floats", "simple_python", CURVE, CURVE_TRUTH,
         [{"area_under_curve": {"function": "x**2", "interval": [1.0, 3]}}], bfcl=False, default=True),
    Case("floats in a float array (control)", "simple_python", CURVE, CURVE_TRUTH,
         [{"area_under_curve": {"function": "x**2", "interval": [1.0, 3.0]}}], bfcl=True, default=True),
    Case("an integer for a float parameter (control)", "simple_python", CURVE, CURVE_TRUTH,
         [{"area_under_curve": {"function": "x**2", "interval": [1.0, 3.0], "step": 2}}],
         bfcl=True, default=True),
    # 3. Strings in lists inside dicts: BFCL compares them exactly, not normalised.
    Case("re-cased strings in a list in a dict", "simple_python", POKER, POKER_TRUTH,
         [{"poker_winner": {"players": ["alex", "SAM"], "cards": {"Alex": ["A OF SPADES", "k of spades"]}}}],
         bfcl=False, default=True),
    Case("exact strings in a list in a dict (control)", "simple_python", POKER, POKER_TRUTH,
         [{"poker_winner": {"players": ["alex", "SAM"], "cards": {"Alex": ["A of spades", "K of spades"]}}}],
         bfcl=True, default=True),
    # 4. Parallel calls: BFCL pairs each expected call, in order, with the first free match.
    Case("greedy pairing misses a valid one", "parallel", PLAY, PLAY_TRUTH, [MAROON, TAYLOR],
         bfcl=False, default=True),
    Case("the order greedy pairing finds", "parallel", PLAY, PLAY_TRUTH, [TAYLOR, MAROON],
         bfcl=True, default=True),
]  # fmt: skip


def _plain(answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": name, "arguments": args} for call in answer for name, args in call.items()]


def _expected(case: Case) -> list[dict[str, Any]]:
    return [{name.replace(".", "_"): args} for call in case.ground_truth for name, args in call.items()]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bfcl_mode_gives_bfcls_verdict(case: Case) -> None:
    tool, _ = convert_function(case.function)
    result = match_tool_calls(_plain(case.answer), _expected(case), [tool], mode="bfcl")
    assert result.ok is case.bfcl, result.reason


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_default_mode_keeps_its_own_rules(case: Case) -> None:
    tool, _ = convert_function(case.function)
    assert match_tool_calls(_plain(case.answer), _expected(case), [tool]).ok is case.default


def test_bfcl_mode_takes_bfcls_own_function_dicts() -> None:
    case = CASES[0]
    fn = {**case.function, "name": "paint_calculate"}
    assert match_tool_calls(_plain(case.answer), _expected(case), [fn], mode="bfcl").ok


def test_bfcl_mode_explains_a_failure() -> None:
    case = next(c for c in CASES if c.id == "integers in a float array")
    tool, _ = convert_function(case.function)
    result = match_tool_calls(_plain(case.answer), _expected(case), [tool], mode="bfcl")
    want = "wrong type for 'area_under_curve.interval': expected list of float, got list [1, 3]"
    assert result.reason == want


def test_bfcl_mode_needs_the_tools_and_modes_are_checked() -> None:
    case = CASES[0]
    with pytest.raises(ValueError, match="needs the tools"):
        match_tool_calls(_plain(case.answer), _expected(case), mode="bfcl")
    with pytest.raises(ValueError, match="unknown match mode 'strict'; choose one of default, bfcl"):
        match_tool_calls(_plain(case.answer), _expected(case), mode="strict")  # type: ignore[arg-type]


def test_bfcl_entries_score_as_bfcl_by_default(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == "greedy pairing misses a valid one")
    question = {"id": "parallel_0", "question": [[{"role": "user", "content": "play"}]], "function": [PLAY]}
    (tmp_path / "possible_answer").mkdir()
    (tmp_path / "BFCL_v4_parallel.json").write_text(json.dumps(question) + "\n")
    truth = {"id": "parallel_0", "ground_truth": case.ground_truth}
    (tmp_path / "possible_answer" / "BFCL_v4_parallel.json").write_text(json.dumps(truth) + "\n")
    (entry,) = load_category(tmp_path, "parallel")
    answer = _plain(case.answer)
    assert not entry.check(answer).ok
    assert entry.check(answer, mode="default").ok
    assert [r.ok for r in score([entry], [answer])] == [False]
    assert [r.ok for r in score([entry], [answer], mode="default")] == [True]
