"""Is a small model's answer fit to serve for this request?

The router serves a specialist's answer only if it is confident *and* the answer
validates against what the client asked for. Validation is strict and cheap:

- a tool call must name a tool the request offers, its arguments must be a JSON
  object valid against that tool's parameters schema, and ``tool_choice`` must
  be respected (``none`` forbids calls, ``required`` demands one, a named choice
  demands that tool, ``parallel_tool_calls: false`` allows one call);
- JSON output must parse and validate against the ``json_schema`` response
  format (or be a JSON object for ``json_object``);
- a label must be in the route's label set.

:func:`check_response` returns ``None`` when the answer is fit to serve, else the
reason it is not.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from functools import lru_cache
from typing import Any

from smallfleet.types import ChatRequest, ChatResponse, NamedToolChoice

__all__ = ["check_response", "schema_errors"]


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def schema_errors(instance: Any, schema: dict[str, Any] | None) -> str | None:
    """The first way ``instance`` fails ``schema`` (None when it validates or there is no schema)."""
    if not schema:
        return None
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except Exception as e:  # an invalid schema from the client: we cannot vouch for the answer
        return f"schema is not usable: {e}"
    error = next(iter(validator.iter_errors(instance)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


def _check_tool_calls(request: ChatRequest, response: ChatResponse) -> str | None:
    calls = response.message.tool_calls or []
    choice = request.tool_choice
    if choice == "none" and calls:
        return "tool_choice is 'none' but the answer calls a tool"
    if not calls:
        if choice == "required" or isinstance(choice, NamedToolChoice):
            return "tool_choice requires a tool call but the answer has none"
        return None
    if request.parallel_tool_calls is False and len(calls) > 1:
        return "parallel_tool_calls is false but the answer makes several calls"
    tools = {t.function.name: t.function for t in request.tools or []}
    for call in calls:
        fn = tools.get(call.function.name)
        if fn is None:
            return f"the answer calls {call.function.name!r}, which the request does not offer"
        if isinstance(choice, NamedToolChoice) and call.function.name != choice.function.name:
            return f"tool_choice names {choice.function.name!r} but the answer calls {call.function.name!r}"
        try:
            args = json.loads(call.function.arguments or "{}")
        except ValueError:
            return f"arguments of {call.function.name!r} are not valid JSON"
        if not isinstance(args, dict):
            return f"arguments of {call.function.name!r} are not a JSON object"
        problem = schema_errors(args, fn.parameters)
        if problem:
            return f"arguments of {call.function.name!r} do not validate: {problem}"
    return None


def check_response(
    request: ChatRequest, response: ChatResponse, labels: Collection[str] | None = None
) -> str | None:
    """``None`` if ``response`` may be served for ``request``; otherwise why not."""
    if not response.choices:
        return "the answer has no choices"
    problem = _check_tool_calls(request, response)
    if problem or response.message.tool_calls:
        return problem
    text = response.message.content
    if text is None:
        return "the answer is empty"
    rf = request.response_format
    if rf is not None and rf.type in ("json_object", "json_schema"):
        try:
            value = json.loads(text)
        except ValueError:
            return "the answer is not valid JSON"
        if rf.type == "json_object" and not isinstance(value, dict):
            return "the answer is not a JSON object"
        problem = schema_errors(value, request.json_schema)
        if problem:
            return f"the answer does not validate against the response format: {problem}"
    if labels is not None and text not in labels:
        return f"the answer {text[:40]!r} is not one of the route's labels"
    return None
