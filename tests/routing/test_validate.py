from __future__ import annotations

import json
from typing import Any

import pytest

from smallfleet.routing.validate import check_response, schema_errors
from smallfleet.types import ChatRequest, ChatResponse

REFUND = {
    "type": "function",
    "function": {
        "name": "issue_refund",
        "description": "Refund an order",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "amount": {"type": "number"},
                "reason": {"type": "string", "enum": ["damaged", "late", "other"]},
            },
            "required": ["order_id", "amount"],
            "additionalProperties": False,
        },
    },
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


def req(**kw: Any) -> ChatRequest:
    return ChatRequest.parse(
        {"model": "big", "messages": [{"role": "user", "content": "refund ORD-1"}], **kw}
    )


def call(name: str, args: Any) -> ChatResponse:
    resp = ChatResponse.of_tool_calls("small", [(name, {})])
    resp.message.tool_calls[0].function.arguments = args if isinstance(args, str) else json.dumps(args)  # type: ignore[index]
    return resp


def test_valid_tool_call_is_served() -> None:
    r = req(tools=[REFUND, LOOKUP])
    assert check_response(r, call("issue_refund", {"order_id": "ORD-1", "amount": 12.5})) is None
    # an integer is a valid JSON Schema number
    assert check_response(r, call("issue_refund", {"order_id": "ORD-1", "amount": 12})) is None


@pytest.mark.parametrize(
    ("response_args", "fragment"),
    [
        (("cancel_order", {"order_id": "ORD-1"}), "does not offer"),
        (("issue_refund", {"order_id": "ORD-1", "amount": "twelve"}), "do not validate"),
        (("issue_refund", {"order_id": "ORD-1"}), "'amount' is a required property"),
        (("issue_refund", {"order_id": "ORD-1", "amount": 1, "reason": "bored"}), "do not validate"),
        (("issue_refund", {"order_id": "ORD-1", "amount": 1, "extra": 1}), "do not validate"),
        (("issue_refund", "{not json"), "not valid JSON"),
        (("issue_refund", "[1, 2]"), "not a JSON object"),
    ],
)
def test_invalid_tool_calls_are_never_served(response_args: tuple[str, Any], fragment: str) -> None:
    problem = check_response(req(tools=[REFUND, LOOKUP]), call(*response_args))
    assert problem is not None and fragment in problem


def test_tool_choice_is_respected() -> None:
    good = call("issue_refund", {"order_id": "ORD-1", "amount": 1})
    assert "tool_choice is 'none'" in (check_response(req(tools=[REFUND], tool_choice="none"), good) or "")
    text = ChatResponse.of_text("small", "hello")
    assert check_response(req(tools=[REFUND], tool_choice="required"), text) is not None
    named = {"type": "function", "function": {"name": "lookup_order"}}
    assert "names 'lookup_order'" in (
        check_response(req(tools=[REFUND, LOOKUP], tool_choice=named), good) or ""
    )
    assert check_response(req(tools=[REFUND, LOOKUP], tool_choice="auto"), text) is None


def test_parallel_calls_only_when_allowed() -> None:
    two = ChatResponse.of_tool_calls(
        "small", [("lookup_order", {"order_id": "A"}), ("lookup_order", {"order_id": "B"})]
    )
    assert check_response(req(tools=[LOOKUP]), two) is None
    assert check_response(req(tools=[LOOKUP], parallel_tool_calls=False), two) is not None


def test_json_schema_and_labels() -> None:
    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
        "required": ["order_id"],
    }
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert (
        check_response(req(response_format=rf), ChatResponse.of_text("s", '{"order_id": "A", "amount": 3}'))
        is None
    )
    assert check_response(req(response_format=rf), ChatResponse.of_text("s", '{"amount": 3}')) is not None
    assert (
        check_response(req(response_format=rf), ChatResponse.of_text("s", "order A"))
        == "the answer is not valid JSON"
    )
    obj = {"type": "json_object"}
    assert check_response(req(response_format=obj), ChatResponse.of_text("s", "[1]")) is not None
    labels = {"refund", "shipping"}
    assert check_response(req(), ChatResponse.of_text("s", "refund"), labels) is None
    assert check_response(req(), ChatResponse.of_text("s", "Refund!"), labels) is not None


def test_schema_errors_names_the_place() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}
    assert schema_errors({"a": [1, "x"]}, schema) == "a/1: 'x' is not of type 'integer'"
    assert schema_errors({"a": [1]}, schema) is None
    assert schema_errors({"a": 1}, None) is None
