"""Tool-call match: one hand-checked case per rule of BFCL's AST checker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from smallfleet.evals.tool_match import (
    MatchResult,
    calls_from_response,
    calls_from_tool_calls,
    match_tool_calls,
    normalise_string,
    to_possible_answers,
)
from smallfleet.types import ChatResponse, Tool

AREA_TOOL = {
    "type": "function",
    "function": {
        "name": "area",
        "parameters": {
            "type": "object",
            "properties": {
                "base": {"type": "number"},
                "height": {"type": "integer"},
                "unit": {"type": "string"},
            },
            "required": ["base", "height"],
        },
    },
}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def check(predicted: list[dict[str, Any]], expected: list[dict[str, Any]], tools: Any = None) -> MatchResult:
    return match_tool_calls(predicted, expected, tools)


# ---------------------------------------------------------------- types


def test_integer_accepted_for_a_float_parameter() -> None:
    expected = [{"area": {"base": [10.0], "height": [5]}}]
    assert check([call("area", base=10, height=5)], expected, [AREA_TOOL]).ok


def test_float_rejected_for_an_integer_parameter() -> None:
    expected = [{"area": {"base": [10.0], "height": [5]}}]
    result = check([call("area", base=10.0, height=5.0)], expected, [AREA_TOOL])
    assert not result.ok
    assert "area.height" in (result.reason or "") and "expected integer" in (result.reason or "")


def test_types_without_tools_come_from_the_expected_values() -> None:
    # No schema: an int is fine where a float is expected, a float is not where an int is.
    assert check([call("f", x=3)], [call("f", x=3.0)]).ok
    assert not check([call("f", x=3.0)], [call("f", x=3)]).ok


def test_a_boolean_is_not_a_number_and_a_number_not_a_boolean() -> None:
    assert not check([call("f", n=True)], [call("f", n=1)]).ok
    assert not check([call("f", flag=1)], [call("f", flag=True)]).ok
    assert check([call("f", flag=True)], [call("f", flag=True)]).ok


def test_a_number_written_as_a_string_is_wrong() -> None:
    result = check(
        [call("area", base="10", height=5)], [{"area": {"base": [10], "height": [5]}}], [AREA_TOOL]
    )
    assert not result.ok and "wrong type" in (result.reason or "")


# ---------------------------------------------------------------- strings


def test_strings_are_normalised_like_bfcl() -> None:
    assert normalise_string("April 1, 2024") == normalise_string("april 1 2024") == "april12024"
    assert normalise_string("New_York-City.") == "newyorkcity"
    assert check([call("f", d="APRIL 1,2024")], [call("f", d="April 1, 2024")]).ok
    assert not check([call("f", d="April 2, 2024")], [call("f", d="April 1, 2024")]).ok


def test_strings_inside_lists_are_normalised_too() -> None:
    assert check([call("f", cities=["new york", "PARIS"])], [call("f", cities=["New York", "Paris"])]).ok
    # Lists compare in order.
    assert not check([call("f", cities=["Paris", "New York"])], [call("f", cities=["New York", "Paris"])]).ok


# ---------------------------------------------------------------- acceptable values and optional arguments


def test_any_of_the_acceptable_values_is_accepted() -> None:
    expected = [{"weather": {"city": ["San Francisco", "SF"], "unit": ["celsius", "c"]}}]
    assert check([call("weather", city="sf", unit="c")], expected).ok
    assert check([call("weather", city="San Francisco", unit="celsius")], expected).ok
    result = check([call("weather", city="Oakland", unit="c")], expected)
    assert not result.ok and "weather.city" in (result.reason or "")


def test_an_optional_argument_may_be_omitted_or_given_an_acceptable_value() -> None:
    expected = [{"area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
    assert check([call("area", base=10, height=5)], expected, [AREA_TOOL]).ok
    assert check([call("area", base=10, height=5, unit="units")], expected, [AREA_TOOL]).ok
    assert not check([call("area", base=10, height=5, unit="cm")], expected, [AREA_TOOL]).ok


def test_an_empty_list_counts_as_omitted_like_bfcl() -> None:
    expected = [{"find": {"city": ["Paris"], "amenities": [["Parking"], ""]}}]
    assert check([call("find", city="Paris", amenities=[])], expected).ok
    assert not check(
        [call("find", city="Paris", amenities=[])],
        [{"find": {"city": ["Paris"], "amenities": [["Parking"]]}}],
    ).ok


def test_variable_style_answers_compare_exactly() -> None:
    # BFCL writes some answers as a variable name where the schema wants an array: then the
    # value must be that exact string, without string normalisation.
    tool = {
        "name": "fit",
        "parameters": {"type": "dict", "properties": {"x": {"type": "array", "items": {"type": "float"}}}},
    }
    expected = [{"fit": {"x": ["data['sales']"]}}]
    assert check([call("fit", x="data['sales']")], expected, [tool]).ok
    assert not check([call("fit", x="DATA['SALES']")], expected, [tool]).ok


def test_an_argument_the_answer_lists_without_empty_string_is_required() -> None:
    expected = [{"area": {"base": [10], "height": [5], "unit": ["cm"]}}]
    result = check([call("area", base=10, height=5)], expected, [AREA_TOOL])
    assert not result.ok and "missing required argument 'unit'" in (result.reason or "")


def test_missing_required_argument_fails() -> None:
    # The tool requires 'height' even though the answer marks it optional.
    expected = [{"area": {"base": [10], "height": [5, ""]}}]
    result = check([call("area", base=10)], expected, [AREA_TOOL])
    assert not result.ok and result.reason == "missing required argument 'height' of 'area'"


def test_unexpected_argument_fails() -> None:
    expected = [{"area": {"base": [10], "height": [5]}}]
    result = check([call("area", base=10, height=5, colour="red")], expected, [AREA_TOOL])
    assert not result.ok and result.reason == "unexpected argument 'colour' of 'area'"
    # Known to the schema but not to the answer: still unexpected (BFCL's rule).
    result = check([call("area", base=10, height=5, unit="cm")], expected, [AREA_TOOL])
    assert not result.ok and "unexpected argument 'unit'" in (result.reason or "")


# ---------------------------------------------------------------- functions and parallel calls


def test_wrong_function_fails() -> None:
    result = check([call("perimeter", base=10, height=5)], [call("area", base=10, height=5)])
    assert not result.ok and result.reason == "wrong function: expected 'area', got 'perimeter'"


def test_wrong_number_of_calls_fails() -> None:
    assert not check([], [call("f", x=1)]).ok
    result = check([call("f", x=1), call("f", x=1)], [call("f", x=1)])
    assert not result.ok and "expected 1 call(s), got 2" in (result.reason or "")
    # No call expected, none made: a match (nothing to do).
    assert check([], []).ok


def test_parallel_calls_match_in_any_order() -> None:
    expected = [
        {"play": {"artist": ["Taylor Swift"], "minutes": [20]}},
        {"play": {"artist": ["Maroon 5"], "minutes": [15]}},
        {"volume": {"level": [3]}},
    ]
    predicted = [
        call("volume", level=3),
        call("play", artist="maroon 5", minutes=15),
        call("play", artist="taylor swift", minutes=20),
    ]
    assert check(predicted, expected).ok


def test_each_expected_call_needs_its_own_predicted_call() -> None:
    expected = [call("play", artist="A"), call("play", artist="B")]
    result = check([call("play", artist="A"), call("play", artist="A")], expected)
    assert not result.ok and "play.artist" in (result.reason or "")


def test_matching_is_a_true_pairing_not_greedy() -> None:
    # The first expected call accepts either prediction; greedy pairing of it with the
    # first prediction would leave the second expected call without a partner.
    expected = [{"f": {"x": [1, 2]}}, {"f": {"x": [1]}}]
    assert check([call("f", x=1), call("f", x=2)], expected).ok


# ---------------------------------------------------------------- nested values


def test_nested_dicts_compare_recursively_with_their_own_acceptable_values() -> None:
    expected = [
        {
            "change_drink": {
                "drink_id": ["latte"],
                "prefs": [{"size": ["large", "l"], "milk": ["coconut"], "notes": ["", "none"]}],
            }
        }
    ]
    assert check(
        [call("change_drink", drink_id="latte", prefs={"size": "L", "milk": "coconut"})], expected
    ).ok
    result = check(
        [call("change_drink", drink_id="latte", prefs={"size": "small", "milk": "coconut"})], expected
    )
    assert not result.ok and "change_drink.prefs.size" in (result.reason or "")
    result = check([call("change_drink", drink_id="latte", prefs={"size": "large"})], expected)
    assert not result.ok and "missing key 'change_drink.prefs.milk'" in (result.reason or "")
    result = check(
        [call("change_drink", drink_id="latte", prefs={"size": "large", "milk": "coconut", "ice": 1})],
        expected,
    )
    assert not result.ok and "unexpected key" in (result.reason or "")


def test_deeply_nested_plain_values() -> None:
    expected = [
        call(
            "plan", route={"stops": [{"city": "Paris", "days": 2}, {"city": "Rome", "days": 3}], "car": False}
        )
    ]
    good = call(
        "plan", route={"car": False, "stops": [{"city": "paris", "days": 2}, {"city": "ROME", "days": 3}]}
    )
    assert check([good], expected).ok
    bad = call(
        "plan", route={"car": False, "stops": [{"city": "paris", "days": 2.5}, {"city": "rome", "days": 3}]}
    )
    assert not check([bad], expected).ok


def test_list_of_numbers_keeps_the_type_rules() -> None:
    tool = {
        "name": "f",
        "parameters": {"type": "dict", "properties": {"xs": {"type": "array", "items": {"type": "float"}}}},
    }
    assert check([call("f", xs=[1, 2.5])], [{"f": {"xs": [[1.0, 2.5]]}}], [tool]).ok
    assert not check([call("f", xs=[1.0, 2.0])], [{"f": {"xs": [[1, 2]]}}]).ok


# ---------------------------------------------------------------- input forms


def test_calls_from_an_openai_response() -> None:
    response = ChatResponse.of_tool_calls("m", [("area", {"base": 10, "height": 5}), ("f", {})])
    calls = calls_from_response(response)
    assert calls == [{"name": "area", "arguments": {"base": 10, "height": 5}}, {"name": "f", "arguments": {}}]
    assert calls_from_response(response.to_dict()) == calls
    assert calls_from_response(ChatResponse.of_text("m", "hello")) == []


def test_invalid_json_arguments_fail_with_a_reason() -> None:
    calls = calls_from_tool_calls(
        [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{x:"}}]
    )
    result = check(calls, [call("f", x=1)])
    assert not result.ok and "not valid JSON" in (result.reason or "")


def test_tools_as_pydantic_objects_and_json_string_arguments() -> None:
    tool = Tool.model_validate(AREA_TOOL)
    predicted = [{"name": "area", "arguments": json.dumps({"base": 1.5, "height": 2})}]
    assert check(predicted, [call("area", base=1.5, height=2)], [tool]).ok
    assert not check(predicted, [call("area", base=1.5, height=2, unit="cm")], [tool]).ok


def test_to_possible_answers_accepts_both_forms_and_rejects_others() -> None:
    assert to_possible_answers([call("f", x=1)]) == [("f", {"x": [1]})]
    assert to_possible_answers([{"f": {"x": [1, ""]}}]) == [("f", {"x": [1, ""]})]
    with pytest.raises(ValueError, match="expected call"):
        to_possible_answers([{"f": {}, "g": {}}])
