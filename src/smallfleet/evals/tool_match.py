"""Tool-call match, in the manner of the Berkeley Function Calling Leaderboard's AST checker.

A predicted list of calls matches the expected calls when:

- there are as many predicted calls as expected ones, and each expected call is
  matched to a *distinct* predicted call, in any order (parallel calls);
- a matched call has the expected function name;
- every required argument is present (required by the tool's schema, or present
  in the expected call without ``""`` among its acceptable values);
- no argument is unexpected (unknown to the tool's schema or to the expected call);
- every argument has the right type — an integer is accepted for a float (JSON
  Schema ``number``) parameter, a float is *not* accepted for an integer one, a
  boolean is never a number — and one of the acceptable values.

Values are compared as BFCL compares top-level arguments: strings after lowercasing and removing
spaces and ``,./-_*^`` (so ``"April 1, 2024"`` equals ``"april 1 2024"``), lists
element by element in order, dicts key by key (recursively, with their own
acceptable values and optional keys), numbers exactly. Where ``""`` is acceptable,
an empty string or an empty list counts as leaving the argument out. A value whose
type is not the declared one but is that of an acceptable value (BFCL's answers
that name a variable, e.g. ``"data['sales']"`` for an array) must equal it exactly.

On BFCL's own data, ``mode="bfcl"`` agrees with BFCL's checker on every answer made
by mutating the reference answers (``benchmarks/bfcl/agreement.py``; figures in
``docs/bfcl.md``).

``expected`` takes either form:

- BFCL's possible answers: ``[{"func": {"arg": [v1, v2, ""]}}]`` — a list of
  acceptable values per argument, ``""`` meaning the argument may be omitted;
  nested dicts carry their own lists: ``{"prefs": [{"size": ["large"]}]}``;
- plain calls ``[{"name": "func", "arguments": {"arg": v}}]`` — every value is
  the single acceptable one and every argument is required.

Two modes (``mode=``):

- ``"default"``: the rules above, applied the same way at every depth. Where BFCL's
  checker differs, this one is deliberately more consistent: parallel calls are
  paired with a true bipartite matching (BFCL pairs greedily, in order, and can miss
  a valid pairing); numbers and booleans inside nested dicts are type-checked like
  top-level ones (BFCL accepts ``30.0`` for ``30`` and ``0`` for ``false`` there); an
  integer is accepted inside a float array as it is for a float parameter (BFCL
  refuses it); strings inside lists inside dicts are normalised (BFCL compares them
  exactly); nested dicts are checked at any depth (BFCL one level).
- ``"bfcl"``: BFCL's ``ast_checker`` for Python, decision for decision (it needs the
  ``tools``). :class:`~smallfleet.evals.bfcl.BFCLEntry` scores with it, so BFCL
  figures are BFCL's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "MatchMode",
    "MatchResult",
    "calls_from_response",
    "calls_from_tool_calls",
    "match_tool_calls",
    "normalise_string",
    "to_possible_answers",
]

#: BFCL's own type names → JSON Schema types (the table BFCL uses for OpenAI-style models).
BFCL_TO_JSON_SCHEMA: dict[str, str] = {
    "integer": "integer",
    "number": "number",
    "float": "number",
    "double": "number",
    "string": "string",
    "any": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "dict": "object",
    "object": "object",
}

_STRIP = re.compile(r"[ ,./\-_*^]")

#: ``"default"``: smallfleet's rules at every depth; ``"bfcl"``: BFCL's ``ast_checker`` exactly.
MatchMode = Literal["default", "bfcl"]


@dataclass(frozen=True)
class MatchResult:
    """Whether the predicted calls match; if not, why, in one sentence."""

    ok: bool
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.ok


def normalise_string(s: str) -> str:
    """BFCL's ``standardize_string``: drop spaces and ``,./-_*^``, lowercase, ``'`` → ``"``."""
    return _STRIP.sub("", s).lower().replace("'", '"')


# ---------------------------------------------------------------- input forms


def calls_from_tool_calls(tool_calls: Iterable[Any] | None) -> list[dict[str, Any]]:
    """OpenAI ``tool_calls`` (objects or dicts, JSON-string arguments) → ``[{"name", "arguments"}]``.

    Arguments that are not valid JSON are kept as the raw string; :func:`match_tool_calls`
    then fails that call with a reason saying so.
    """
    out: list[dict[str, Any]] = []
    for tc in tool_calls or []:
        fn = tc.get("function", tc) if isinstance(tc, Mapping) else tc.function
        name = fn.get("name") if isinstance(fn, Mapping) else fn.name
        raw = fn.get("arguments") if isinstance(fn, Mapping) else fn.arguments
        out.append({"name": name, "arguments": _parse_arguments(raw)})
    return out


def calls_from_response(response: Any) -> list[dict[str, Any]]:
    """The calls of a ``ChatResponse`` (or its wire dict); ``[]`` when it answered with text."""
    if isinstance(response, Mapping):
        choices = response.get("choices") or []
        msg = choices[0].get("message", {}) if choices else {}
        return calls_from_tool_calls(msg.get("tool_calls"))
    if not response.choices:
        return []
    return calls_from_tool_calls(response.message.tool_calls)


def _parse_arguments(raw: Any) -> Any:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _is_plain_call(call: Mapping[str, Any]) -> bool:
    return isinstance(call.get("name"), str) and set(call) <= {"name", "arguments", "id", "type"}


def _pattern(value: Any) -> Any:
    """A plain value as a pattern: dicts become ``{key: [pattern]}``, lists element-wise."""
    if isinstance(value, Mapping):
        return {k: [_pattern(v)] for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_pattern(v) for v in value]
    return value


def to_possible_answers(expected: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, list[Any]]]]:
    """Either accepted ``expected`` form → ``[(name, {arg: [acceptable values]})]``."""
    out: list[tuple[str, dict[str, list[Any]]]] = []
    for call in expected:
        if not isinstance(call, Mapping):
            raise TypeError(f"an expected call must be a dict, got {type(call).__name__}")
        if _is_plain_call(call):
            args = _parse_arguments(call.get("arguments"))
            if not isinstance(args, Mapping):
                raise ValueError(f"expected call {call['name']!r} has arguments that are not an object")
            out.append((call["name"], {k: [_pattern(v)] for k, v in args.items()}))
            continue
        if len(call) != 1:
            raise ValueError(
                'an expected call is {"name", "arguments"} or BFCL\'s {"func": {"arg": [values]}}, '
                f"got keys {sorted(call)}"
            )
        ((name, args),) = call.items()
        out.append((name, {k: v if isinstance(v, list) else [v] for k, v in dict(args).items()}))
    return out


def _schemas(tools: Iterable[Any] | None) -> dict[str, dict[str, Any]]:
    """name → parameters schema, from OpenAI tools (objects or dicts) or BFCL function dicts."""
    out: dict[str, dict[str, Any]] = {}
    for t in tools or []:
        if not isinstance(t, Mapping):
            t = t.to_dict() if hasattr(t, "to_dict") else dict(t)
        fn = t.get("function", t)
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            out[fn["name"]] = dict(fn.get("parameters") or {})
    return out


# ---------------------------------------------------------------- types and values


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "array"
    if isinstance(v, Mapping):
        return "object"
    return "null" if v is None else type(v).__name__


def _schema_type(schema: Mapping[str, Any] | None) -> str | None:
    if not schema:
        return None
    t = schema.get("type")
    if isinstance(t, list):  # ["integer", "null"]: the first non-null type
        t = next((x for x in t if x != "null"), None)
    return BFCL_TO_JSON_SCHEMA.get(t, t) if isinstance(t, str) else None


def _fits_declared(value: Any, declared: str) -> bool:
    kind = _kind(value)
    return kind == declared or (declared == "number" and kind == "integer")


def _type_fits(value: Any, declared: str | None, alternatives: Sequence[Any]) -> bool:
    """The declared type, or (as BFCL allows for variables) the type of an acceptable value."""
    kind = _kind(value)
    if declared is not None and _fits_declared(value, declared):
        return True
    kinds = {_kind(a) for a in alternatives if not (isinstance(a, str) and a == "")}
    if declared is None and not kinds:
        return True
    return kind in kinds or (kind == "integer" and "number" in kinds and declared != "integer")


def _equal(value: Any, alt: Any, schema: Mapping[str, Any] | None) -> bool:
    """Does ``value`` equal the pattern ``alt`` (one acceptable value)?"""
    declared = _schema_type(schema)
    if isinstance(alt, str):
        return isinstance(value, str) and normalise_string(value) == normalise_string(alt)
    if isinstance(alt, bool) or alt is None:
        return type(value) is type(alt) and value == alt
    if isinstance(alt, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(value, float) and declared != "number" and not isinstance(alt, float):
            return False  # a float is not an integer, even 5.0
        return float(value) == float(alt)
    if isinstance(alt, list | tuple):
        if not isinstance(value, list | tuple) or len(value) != len(alt):
            return False
        items = schema.get("items") if schema else None
        return all(_equal(v, a, items) for v, a in zip(value, alt, strict=True))
    if isinstance(alt, Mapping):
        return isinstance(value, Mapping) and _dict_problem(value, alt, schema, "") is None
    return bool(value == alt)


def _fmt(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _dict_problem(
    value: Mapping[str, Any], pattern: Mapping[str, Any], schema: Mapping[str, Any] | None, where: str
) -> str | None:
    """Why ``value`` does not match a dict pattern ``{key: [acceptable values]}``, or None."""
    props = (schema or {}).get("properties") or {}
    for key, v in value.items():
        if key not in pattern:
            return f"unexpected key '{where}{key}'"
        alts = pattern[key] if isinstance(pattern[key], list) else [pattern[key]]
        problem = _value_problem(v, alts, props.get(key), f"{where}{key}")
        if problem:
            return problem
    for key, alts in pattern.items():
        alts = alts if isinstance(alts, list) else [alts]
        if key not in value and "" not in alts:
            return f"missing key '{where}{key}'"
    return None


def _value_problem(
    value: Any, alternatives: Sequence[Any], schema: Mapping[str, Any] | None, where: str
) -> str | None:
    declared = _schema_type(schema)
    if not _type_fits(value, declared, alternatives):
        want = declared or "/".join(sorted({_kind(a) for a in alternatives if a != ""}))
        return f"wrong type for '{where}': expected {want}, got {_kind(value)} {_fmt(value)}"
    candidates = [a for a in alternatives if not (isinstance(a, str) and a == "")] or alternatives
    if "" in alternatives and (value == "" or (isinstance(value, list) and not value)):
        return None  # "may be omitted": BFCL also accepts an empty string, or an empty list
    if declared is not None and not _fits_declared(value, declared):
        # BFCL's "variable" answers (a string where the schema says array, say) compare exactly.
        if value in candidates:
            return None
    elif isinstance(value, Mapping):
        dicts = [a for a in candidates if isinstance(a, Mapping)]
        problems = [_dict_problem(value, a, schema, f"{where}.") for a in dicts]
        if any(p is None for p in problems):
            return None
        if problems:
            return problems[0]
    elif any(_equal(value, a, schema) for a in candidates):
        return None
    shown = ", ".join(_fmt(a) for a in list(alternatives)[:4]) + (", ..." if len(alternatives) > 4 else "")
    return f"wrong value for '{where}': {_fmt(value)} not among [{shown}]"


# ---------------------------------------------------------------- calls


def _call_problem(
    predicted: Mapping[str, Any],
    name: str,
    expected_args: Mapping[str, list[Any]],
    schemas: Mapping[str, Mapping[str, Any]],
) -> str | None:
    """Why one predicted call does not match one expected call, or None."""
    got_name = predicted.get("name")
    if got_name != name:
        return f"wrong function: expected '{name}', got '{got_name}'"
    args = predicted.get("arguments")
    if isinstance(args, str):
        args = _parse_arguments(args)
    if isinstance(args, str):
        return f"the arguments of '{name}' are not valid JSON: {_fmt(args)}"
    if not isinstance(args, Mapping):
        return f"the arguments of '{name}' are not a JSON object: {_fmt(args)}"
    schema = schemas.get(name)
    props: Mapping[str, Any] = (schema or {}).get("properties") or {}
    required = list((schema or {}).get("required") or [])
    required += [k for k, alts in expected_args.items() if "" not in alts and k not in required]
    for key in required:
        if key not in args:
            return f"missing required argument '{key}' of '{name}'"
    for key, value in args.items():
        if key not in expected_args or (schema is not None and key not in props):
            return f"unexpected argument '{key}' of '{name}'"
        problem = _value_problem(value, expected_args[key], props.get(key), f"{name}.{key}")
        if problem:
            return problem
    return None


def _perfect_matching(ok: list[list[bool]]) -> list[int] | None:
    """Kuhn's augmenting paths: expected i → predicted j, all distinct, or None."""
    n = len(ok)
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in range(len(ok[i])):
            if ok[i][j] and j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(n):
        if not augment(i, set()):
            return None
    result = [0] * n
    for j, i in owner.items():
        result[i] = j
    return result


def match_tool_calls(
    predicted: Sequence[Mapping[str, Any]],
    expected: Sequence[Mapping[str, Any]],
    tools: Iterable[Any] | None = None,
    mode: MatchMode = "default",
) -> MatchResult:
    """Do the ``predicted`` calls (``[{"name", "arguments": dict}]``) match the ``expected`` ones?

    ``tools`` (OpenAI tools, as objects or dicts, or BFCL function dicts) adds each
    parameter's declared type and the required list to what ``expected`` says.
    ``mode="bfcl"`` reproduces BFCL's own checker (see the module docstring); it needs ``tools``.
    """
    if mode not in get_args(MatchMode):
        raise ValueError(f"unknown match mode {mode!r}; choose one of {', '.join(get_args(MatchMode))}")
    want = to_possible_answers(expected)
    schemas = _schemas(tools)
    if mode == "bfcl":
        if tools is None:
            raise ValueError('mode="bfcl" needs the tools: BFCL types every argument by its schema')
        return _bfcl_match(predicted, want, schemas)
    if len(predicted) != len(want):
        names = ", ".join(str(p.get("name")) for p in predicted) or "none"
        return MatchResult(False, f"expected {len(want)} call(s), got {len(predicted)} ({names})")
    problems = [[_call_problem(p, name, args, schemas) for p in predicted] for name, args in want]
    ok = [[p is None for p in row] for row in problems]
    if _perfect_matching(ok) is not None:
        return MatchResult(True)
    # Explain with the first expected call that has no partner, preferring a same-name candidate.
    for (name, _), row in zip(want, problems, strict=True):
        if all(p is not None for p in row):
            same = [p for p, call in zip(row, predicted, strict=True) if call.get("name") == name]
            return MatchResult(False, (same or row)[0])
    return MatchResult(False, "no one-to-one pairing of predicted and expected calls matches")


# ---------------------------------------------------------------- BFCL's checker, exactly
#
# A port of ``ast_checker`` (bfcl-eval 2026.3.23, Python) for JSON values. It keeps
# BFCL's quirks on purpose: exact Python types (``type(v) is int``), ``==`` and ``in``
# for values (so ``30.0 == 30`` and ``0 == False`` inside dicts), one level of nesting.

_BFCL_PYTHON_TYPE: dict[str, type] = {
    "integer": int,
    "number": float,
    "string": str,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def _bfcl_type(schema: Mapping[str, Any] | None) -> type:
    """The Python type BFCL expects (its ``any`` and unknown types convert to string)."""
    return _BFCL_PYTHON_TYPE.get(_schema_type(schema) or "string", str)


def _bfcl_answer_type(alternatives: Sequence[Any]) -> type | None:
    """BFCL's ``get_possible_answer_type``: the type of the first acceptable value but ``""``."""
    return next((type(a) for a in alternatives if a != ""), None)


def _bfcl_type_ok(value: Any, alternatives: Sequence[Any], expected: type, item_type: type | None) -> bool:
    """BFCL's ``type_checker``: the declared type, or that of an acceptable value (a variable)."""
    if type(value) is expected:
        if item_type is None:
            return True
        # Array items: one acceptable list whose item types fit; an acceptable value that is
        # not a list ("" or a variable) passes. No int → float here, unlike the top level.
        return any(
            type(alt) is not list or all(_bfcl_type_ok(v, alt, item_type, None) for v in value)
            for alt in alternatives
        )
    return type(value) is _bfcl_answer_type(alternatives)


def _bfcl_std(v: Any) -> Any:
    return normalise_string(v) if type(v) is str else v


def _bfcl_options(alternatives: Any) -> list[Any]:
    """Acceptable values, strings normalised (a string is read as its characters, as BFCL does)."""
    items = list(alternatives) if isinstance(alternatives, list | str) else [alternatives]
    return [_bfcl_std(a) for a in items]


def _bfcl_dict_equal(value: Mapping[str, Any], pattern: Any) -> bool:
    """One dict against one pattern: top-level strings normalised, everything else ``==``."""
    if not isinstance(pattern, Mapping):
        return False
    for key, v in value.items():
        if key not in pattern or _bfcl_std(v) not in _bfcl_options(pattern[key]):
            return False
    return all(key in value or "" in alts for key, alts in pattern.items())


def _bfcl_dict_ok(value: Any, alternatives: Sequence[Any]) -> bool:
    """BFCL's ``dict_checker``."""
    if not isinstance(value, Mapping):
        return False
    return any(_bfcl_dict_equal(value, alt) for alt in alternatives if alt != "")


def _bfcl_list_of_dicts_ok(value: list[Any], alternatives: Sequence[Any]) -> bool:
    """BFCL's ``list_dict_checker``: dict by dict, in order (``""`` accepts an empty list)."""
    return any(
        isinstance(alt, list | str)
        and len(alt) == len(value)
        and all(_bfcl_dict_ok(v, [a]) for v, a in zip(value, alt, strict=True))
        for alt in alternatives
    )


def _bfcl_list_ok(value: list[Any], alternatives: Sequence[Any]) -> bool:
    """BFCL's ``list_checker``: strings among the items normalised, the rest ``==``."""
    got = [_bfcl_std(v) for v in value]
    return any(got == _bfcl_options(alt) for alt in alternatives if isinstance(alt, list | str))


def _bfcl_value_problem(
    value: Any, alternatives: Sequence[Any], schema: Mapping[str, Any] | None, where: str
) -> str | None:
    """One argument, as BFCL's ``simple_function_checker`` checks it."""
    expected = _bfcl_type(schema)
    items = (schema or {}).get("items")
    item_type = _bfcl_type(items) if expected is list and isinstance(items, Mapping) else None
    if expected is float and type(value) is int:
        value = float(value)  # Python's int → float, at the top level only
    if not _bfcl_type_ok(value, alternatives, expected, item_type):
        inner = f" of {item_type.__name__}" if item_type is not None and type(value) is list else ""
        return (
            f"wrong type for '{where}': expected {expected.__name__}{inner}, "
            f"got {type(value).__name__} {_fmt(value)}"
        )
    answer_type = _bfcl_answer_type(alternatives)
    if answer_type is not None and answer_type is not expected:
        ok = value in alternatives  # a variable: compared exactly
    elif expected is dict:
        ok = _bfcl_dict_ok(value, alternatives)
    elif expected is list and item_type is dict:
        ok = _bfcl_list_of_dicts_ok(value, alternatives)
    elif expected is str:
        ok = normalise_string(value) in [normalise_string(a) for a in alternatives if type(a) is str]
    elif expected is list:
        ok = _bfcl_list_ok(value, alternatives)
    else:
        ok = value in alternatives
    if ok:
        return None
    shown = ", ".join(_fmt(a) for a in list(alternatives)[:4]) + (", ..." if len(alternatives) > 4 else "")
    return f"wrong value for '{where}': {_fmt(value)} not among [{shown}]"


def _bfcl_call_problem(
    predicted: Mapping[str, Any], name: str, expected_args: Mapping[str, list[Any]], schema: Mapping[str, Any]
) -> str | None:
    """BFCL's ``simple_function_checker``: why one predicted call fails one expected call."""
    got_name = predicted.get("name")
    if got_name != name:
        return f"wrong function: expected '{name}', got '{got_name}'"
    args = _parse_arguments(predicted.get("arguments"))
    if not isinstance(args, Mapping):
        return f"the arguments of '{name}' are not a JSON object: {_fmt(args)}"
    props: Mapping[str, Any] = schema.get("properties") or {}
    for key in schema.get("required") or []:
        if key not in args:
            return f"missing required argument '{key}' of '{name}'"
    for key, value in args.items():
        if key not in props or key not in expected_args:
            return f"unexpected argument '{key}' of '{name}'"
        problem = _bfcl_value_problem(value, expected_args[key], props[key], f"{name}.{key}")
        if problem:
            return problem
    for key, alts in expected_args.items():
        if key not in args and "" not in alts:
            return f"missing required argument '{key}' of '{name}' (the answer requires it)"
    return None


def _bfcl_match(
    predicted: Sequence[Mapping[str, Any]],
    want: Sequence[tuple[str, dict[str, list[Any]]]],
    schemas: Mapping[str, Mapping[str, Any]],
) -> MatchResult:
    """BFCL's ``parallel_function_checker_no_order``: expected calls in order, each taking the
    first predicted call still free that matches it (greedy; it can miss a valid pairing)."""
    if len(predicted) != len(want):
        names = ", ".join(str(p.get("name")) for p in predicted) or "none"
        return MatchResult(False, f"expected {len(want)} call(s), got {len(predicted)} ({names})")
    taken: set[int] = set()
    for name, args in want:
        schema = schemas.get(name)
        if schema is None:
            return MatchResult(False, f"wrong function: no tool '{name}' to check the expected call against")
        problems: list[tuple[bool, str]] = []  # (same name?, why)
        for j, call in enumerate(predicted):
            if j in taken:
                continue
            problem = _bfcl_call_problem(call, name, args, schema)
            if problem is None:
                taken.add(j)
                break
            problems.append((call.get("name") == name, problem))
        else:
            same = [why for same_name, why in problems if same_name]
            return MatchResult(False, (same or [why for _, why in problems])[0])
    return MatchResult(True)
