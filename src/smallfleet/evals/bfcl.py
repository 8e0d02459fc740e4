"""The Berkeley Function Calling Leaderboard's data as smallfleet requests and answers.

BFCL ships its questions and possible answers inside the ``bfcl-eval`` wheel as
JSON-lines files::

    bfcl_eval/data/BFCL_v4_live_simple.json                  questions + functions
    bfcl_eval/data/possible_answer/BFCL_v4_live_simple.json  acceptable answers

:func:`load_category` reads one category straight from the wheel (a zip), an
unpacked copy, or any folder holding files of that shape, and turns each entry
into a :class:`BFCLEntry`: an OpenAI :class:`~smallfleet.types.ChatRequest` with
the functions as tools, and the expected calls in BFCL's possible-answer form,
ready for :func:`~smallfleet.evals.tool_match.match_tool_calls`, and
:meth:`BFCLEntry.check` scores an answer as BFCL's own checker does (``mode="bfcl"``).

Functions are converted the way BFCL converts them for OpenAI-style models:
``"dict"`` → ``"object"``, ``"float"`` → ``"number"`` (with ``format: float`` and
BFCL's " This is a float type value." note), ``"tuple"`` → ``"array"``, ``"any"``
and unknown types → ``"string"``; dots in function names become underscores
(OpenAI allows ``^[a-zA-Z0-9_-]{1,64}$``), with :attr:`BFCLEntry.name_map` to go back.
"""

from __future__ import annotations

import copy
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallfleet.errors import UserError
from smallfleet.evals.tool_match import BFCL_TO_JSON_SCHEMA, MatchMode, MatchResult, match_tool_calls
from smallfleet.types import ChatRequest, ChatResponse

__all__ = [
    "BFCL_VERSION",
    "BFCLEntry",
    "BFCLSource",
    "convert_function",
    "list_categories",
    "load_category",
    "reference_calls",
    "score",
]

#: The ``bfcl-eval`` release the benchmark reads (``pip download bfcl-eval==… --no-deps``).
BFCL_VERSION = "2026.3.23"

#: Older names of categories, both ways.
_ALIASES = {"simple": "simple_python", "simple_python": "simple"}

_FILE = re.compile(r"^BFCL_v(\d+)_(.+)\.json$")


@dataclass
class BFCLEntry:
    """One BFCL question as an OpenAI request, with its acceptable answers."""

    id: str
    category: str
    request: ChatRequest
    #: ``[{openai_name: {arg: [acceptable values, "" = may be omitted]}}]``, one per expected call.
    expected: list[dict[str, dict[str, list[Any]]]]
    #: OpenAI tool name → BFCL's original function name.
    name_map: dict[str, str] = field(default_factory=dict)

    @property
    def tools(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.request.tools or []]

    def check(self, predicted: Sequence[Mapping[str, Any]], mode: MatchMode = "bfcl") -> MatchResult:
        """Match predicted calls (``[{"name", "arguments"}]``, OpenAI names) against this entry.

        ``mode="bfcl"`` (the default) decides as BFCL's own checker does; ``"default"`` is
        smallfleet's matcher (the differences are in ``docs/bfcl.md``).
        """
        return match_tool_calls(predicted, self.expected, self.tools, mode=mode)

    def reference_calls(self) -> list[dict[str, Any]]:
        """The expected calls with the first acceptable value of each argument."""
        return reference_calls(self.expected, self.tools)

    def reference_response(self, model: str = "bfcl-reference") -> ChatResponse:
        """A response making the reference calls: what a perfect teacher would answer."""
        return ChatResponse.of_tool_calls(
            model, [(c["name"], c["arguments"]) for c in self.reference_calls()]
        )


# ---------------------------------------------------------------- conversion


def _convert_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """One BFCL parameter schema → JSON Schema, recursively."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {name: _convert_schema(p) for name, p in value.items() if isinstance(p, Mapping)}
        elif key == "items" and isinstance(value, Mapping):
            out[key] = _convert_schema(value)
        elif key == "required" and not isinstance(value, list):
            continue  # a boolean "required" on a property is not JSON Schema; the list on the parent is
        elif key == "optional":
            continue  # BFCL's own marker; JSON Schema says this with the parent's "required"
        else:
            out[key] = copy.deepcopy(value)
    bfcl_type = schema.get("type")
    if isinstance(bfcl_type, str) or bfcl_type is None:
        out["type"] = BFCL_TO_JSON_SCHEMA.get(bfcl_type or "string", "string")
        if bfcl_type == "float":
            out["format"] = "float"
            out["description"] = (out.get("description") or "") + " This is a float type value."
    return out


def convert_function(function: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """A BFCL function → (an OpenAI tool dict, its OpenAI name)."""
    name = str(function["name"])
    openai_name = re.sub(r"\.", "_", name)
    params = _convert_schema(function.get("parameters") or {"type": "dict", "properties": {}})
    params["type"] = "object"
    params.setdefault("properties", {})
    fn: dict[str, Any] = {"name": openai_name, "parameters": params}
    if function.get("description"):
        fn["description"] = function["description"]
    return {"type": "function", "function": fn}, openai_name


# ---------------------------------------------------------------- reading


class BFCLSource:
    """BFCL data files in a wheel (zip), an unpacked wheel, or a folder of ``BFCL_v*_*.json`` files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(
                f"No BFCL data at {self.path}. Fetch it with: "
                f"pip download bfcl-eval=={BFCL_VERSION} --no-deps -d DIR (then pass DIR/bfcl_eval-*.whl)"
            )
        self._zip = zipfile.ZipFile(self.path) if self.path.is_file() else None
        self._files = self._index()

    def _index(self) -> dict[str, str]:
        """Relative file name (``BFCL_v4_x.json``, ``possible_answer/BFCL_v4_x.json``) → where it is."""
        names = (
            self._zip.namelist()
            if self._zip is not None
            else [str(p.relative_to(self.path)) for p in self.path.rglob("*.json")]
        )
        out: dict[str, str] = {}
        for full in names:
            parts = full.replace("\\", "/").split("/")
            if "unused_datasets" in parts or not _FILE.match(parts[-1]):
                continue
            rel = "/".join(parts[-2:]) if len(parts) > 1 and parts[-2] == "possible_answer" else parts[-1]
            out.setdefault(rel, full)
        if not out:
            raise UserError(f"{self.path} holds no BFCL_v*_*.json files; is it the bfcl-eval wheel?")
        return out

    def read_lines(self, rel: str) -> list[dict[str, Any]]:
        where = self._files[rel]
        if self._zip is not None:
            text = self._zip.read(where).decode("utf-8")
        else:
            text = (self.path / where).read_text(encoding="utf-8")
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as e:
                    raise UserError(f"{rel} line {n} is not valid JSON: {e}") from None
        return out

    def file_for(self, category: str, possible_answer: bool = False) -> str | None:
        """The newest-version file of ``category`` (or of its older/newer alias)."""
        prefix = "possible_answer/" if possible_answer else ""
        best: tuple[int, str] | None = None
        for rel in self._files:
            if possible_answer != rel.startswith("possible_answer/"):
                continue
            m = _FILE.match(rel.removeprefix(prefix))
            if m and m.group(2) in (category, _ALIASES.get(category)):
                version = int(m.group(1))
                if best is None or version > best[0]:
                    best = (version, rel)
        return best[1] if best else None

    def categories(self) -> list[str]:
        """Categories that have both questions and possible answers."""
        out = []
        for rel in self._files:
            m = _FILE.match(rel)
            if m and self.file_for(m.group(2), possible_answer=True):
                out.append(m.group(2))
        return sorted(set(out))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def list_categories(path: str | Path) -> list[str]:
    src = BFCLSource(path)
    try:
        return src.categories()
    finally:
        src.close()


def load_category(
    source: str | Path | BFCLSource, category: str, model: str = "bfcl", limit: int | None = None
) -> list[BFCLEntry]:
    """Every entry of one category with its possible answers, in file order."""
    src = source if isinstance(source, BFCLSource) else BFCLSource(source)
    try:
        q_file = src.file_for(category)
        a_file = src.file_for(category, possible_answer=True)
        if q_file is None or a_file is None:
            raise UserError(
                f"BFCL category {category!r} not found (questions and possible answers); "
                f"available: {', '.join(src.categories())}"
            )
        answers = {a["id"]: a["ground_truth"] for a in src.read_lines(a_file)}
        entries = []
        for q in src.read_lines(q_file):
            if limit is not None and len(entries) >= limit:
                break
            if q["id"] in answers:
                entries.append(_entry(q, answers[q["id"]], category, model))
        return entries
    finally:
        if not isinstance(source, BFCLSource):
            src.close()


def _entry(question: Mapping[str, Any], ground_truth: Sequence[Any], category: str, model: str) -> BFCLEntry:
    turns = question["question"]
    messages = turns[0] if turns and isinstance(turns[0], list) else turns
    tools, name_map = [], {}
    for fn in question.get("function") or []:
        tool, openai_name = convert_function(fn)
        tools.append(tool)
        name_map[openai_name] = fn["name"]
    to_openai = {orig: new for new, orig in name_map.items()}
    expected = []
    for call in ground_truth:
        ((name, args),) = call.items()
        expected.append({to_openai.get(name, re.sub(r"\.", "_", name)): args})
    request = ChatRequest.parse({"model": model, "messages": list(messages), "tools": tools or None})
    return BFCLEntry(
        id=question["id"], category=category, request=request, expected=expected, name_map=name_map
    )


# ---------------------------------------------------------------- answers and scores


def _first_value(alternatives: Sequence[Any], required: bool = False) -> tuple[bool, Any]:
    """The first acceptable value as a plain value; (False, None) when it is "may be omitted".

    A ``required`` argument takes the first value that is not ``""`` (BFCL lists a few
    arguments its own schema requires as omittable).
    """
    values = list(alternatives)
    if required:
        values = [a for a in values if not (isinstance(a, str) and a == "")] or values
    if not values:
        return False, None
    first = values[0]
    if isinstance(first, str) and first == "":
        return False, None
    return True, _plain(first)


def _plain(pattern: Any) -> Any:
    if isinstance(pattern, Mapping):
        out = {}
        for k, alts in pattern.items():
            present, value = _first_value(alts if isinstance(alts, list) else [alts])
            if present:
                out[k] = value
        return out
    if isinstance(pattern, list):
        return [_plain(v) for v in pattern]
    return pattern


def reference_calls(
    expected: Iterable[Mapping[str, Mapping[str, Sequence[Any]]]], tools: Iterable[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Plain calls made of the first acceptable value of every argument.

    An argument whose first acceptable value is ``""`` is left out, unless ``tools``
    (OpenAI tool dicts) say it is required; one the tool does not have is left out when
    it may be.
    """
    params = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}
    out = []
    for call in expected:
        ((name, args),) = call.items()
        schema = params.get(name)
        required = set(schema.get("required") or []) if schema else set()
        arguments = {}
        for k, alts in args.items():
            if schema is not None and k not in (schema.get("properties") or {}) and "" in alts:
                continue  # BFCL's answer allows an argument its schema does not have: leave it out
            present, value = _first_value(alts, required=k in required)
            if present:
                arguments[k] = value
        out.append({"name": name, "arguments": arguments})
    return out


def score(
    entries: Sequence[BFCLEntry],
    predicted: Sequence[Sequence[Mapping[str, Any]]],
    mode: MatchMode = "bfcl",
) -> list[MatchResult]:
    """Each entry matched against its predicted calls, in order (as BFCL decides, by default)."""
    if len(entries) != len(predicted):
        raise ValueError(f"{len(entries)} entries but {len(predicted)} predictions")
    return [e.check(p, mode) for e, p in zip(entries, predicted, strict=True)]
