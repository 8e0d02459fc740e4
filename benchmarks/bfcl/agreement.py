"""Does smallfleet's tool-call match agree with BFCL's own AST checker?

BFCL's ``ast_checker`` is taken from the wheel (only its pure-Python checker files,
with the model table it imports replaced by a stub: every model is an OpenAI-style
one whose dotted names become underscores). It and ``match_tool_calls``, in both
modes (``bfcl`` and ``default``), then judge the same answers: the reference answer
of every entry of the eight AST categories, and mutations of it (types, values,
strings, lists, dicts, missing / extra arguments, wrong names, shuffled or missing
parallel calls, numbers, booleans and string lists inside dicts, integers in float
arrays, and parallel answers that BFCL's greedy pairing gets wrong).

    python benchmarks/bfcl/agreement.py [--wheel PATH] [--out agreement.json]

Prints the agreement per mutation and mode, and writes the disagreements to JSON.
``mode="bfcl"`` should agree on every answer; ``default`` differs where
``docs/bfcl.md`` says it does.
"""

from __future__ import annotations

import argparse
import collections
import copy
import importlib
import json
import random
import sys
import tempfile
import types
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader import DEFAULT_CACHE, EVAL_CATEGORIES, TRAIN_CATEGORIES, ensure_wheel
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from smallfleet.evals.bfcl import BFCLEntry, BFCLSource, load_category
from smallfleet.evals.tool_match import MatchMode, match_tool_calls

#: Every category BFCL checks with ``ast_checker`` in Python.
CATEGORIES = (*TRAIN_CATEGORIES, *EVAL_CATEGORIES, "live_parallel", "live_parallel_multiple")
MODES: tuple[MatchMode, ...] = ("bfcl", "default")

CHECKER_FILES = (
    "bfcl_eval/constants/enums.py",
    "bfcl_eval/constants/type_mappings.py",
    "bfcl_eval/eval_checker/ast_eval/ast_checker.py",
    "bfcl_eval/eval_checker/ast_eval/type_convertor/java_type_converter.py",
    "bfcl_eval/eval_checker/ast_eval/type_convertor/js_type_converter.py",
)


def bfcl_checker(wheel: Path, where: Path) -> tuple[Any, Any]:
    """BFCL's ``ast_checker`` and ``Language``, loaded from the wheel's files alone."""
    with zipfile.ZipFile(wheel) as z:
        for name in CHECKER_FILES:
            target = where / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
    for package in (
        "bfcl_eval",
        "bfcl_eval/constants",
        "bfcl_eval/eval_checker",
        "bfcl_eval/eval_checker/ast_eval",
    ):
        (where / package / "__init__.py").touch()
    (where / "bfcl_eval/eval_checker/ast_eval/type_convertor/__init__.py").touch()

    class _OpenAIStyle:
        underscore_to_dot = True

    stub = types.ModuleType("bfcl_eval.constants.model_config")
    stub.MODEL_CONFIG_MAPPING = collections.defaultdict(_OpenAIStyle)  # type: ignore[attr-defined]
    sys.modules["bfcl_eval.constants.model_config"] = stub
    sys.path.insert(0, str(where))
    checker = importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")
    enums = importlib.import_module("bfcl_eval.constants.enums")
    return checker.ast_checker, enums.Language


Calls = list[dict[str, Any]]


def _nested(value: Any) -> Iterator[tuple[str, Any]]:
    """Mutations inside a dict argument (or the first dict of a list of dicts), one key at a time."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        for label, first in _nested(value[0]):
            yield f"in list: {label}", [first, *copy.deepcopy(value[1:])]
        return
    if not isinstance(value, dict):
        return
    for key, v in value.items():

        def with_(new: Any, key: str = key) -> dict[str, Any]:
            return {**copy.deepcopy(value), key: new}

        if isinstance(v, bool):
            yield f"nested boolean as {int(v)}", with_(int(v))
            yield "nested boolean flipped", with_(not v)
        elif isinstance(v, int):
            yield "nested integer as float", with_(float(v))
            yield "nested integer + 1", with_(v + 1)
        elif isinstance(v, float):
            if v == int(v):
                yield "nested float as integer", with_(int(v))
            yield "nested float + 0.5", with_(v + 0.5)
        elif isinstance(v, str):
            yield "nested string re-cased, punctuated", with_(v.upper() + " .")
        elif isinstance(v, list) and any(isinstance(x, str) for x in v):
            recased = [x.upper() + " ." if isinstance(x, str) else x for x in v]
            yield "nested list of strings re-cased, punctuated", with_(recased)


def _list_items(v: list[Any]) -> Iterator[tuple[str, list[Any]]]:
    """Mutations of the items of a list argument."""
    whole = [int(x) if type(x) is float and x == int(x) else x for x in v]
    if any(type(x) is float and x == int(x) for x in v):
        yield "float array items as integers", whole
    if any(type(x) is int for x in v):
        yield "integer array items as floats", [float(x) if type(x) is int else x for x in v]
    if any(isinstance(x, str) for x in v):
        yield (
            "list of strings re-cased, punctuated",
            [x.upper() + " ." if isinstance(x, str) else x for x in v],
        )


def mutations(calls: Calls, tools: list[dict[str, Any]], rng: random.Random) -> Iterator[tuple[str, Calls]]:
    """(kind, calls): the reference answer and answers a model might give instead."""
    yield "reference", calls
    shuffled = copy.deepcopy(calls)
    rng.shuffle(shuffled)
    yield "parallel shuffled", shuffled

    def changed(i: int, key: str, value: Any) -> Calls:
        out = copy.deepcopy(calls)
        out[i]["arguments"][key] = value
        return out

    for i, call in enumerate(calls):
        for k, v in call["arguments"].items():
            if isinstance(v, bool):
                yield "boolean flipped", changed(i, k, not v)
            elif isinstance(v, int):
                yield "integer as float", changed(i, k, float(v))
                yield "integer + 1", changed(i, k, v + 1)
                yield "integer as string", changed(i, k, str(v))
            elif isinstance(v, float):
                yield "float as integer", changed(i, k, int(v) if v == int(v) else v)
                yield "float + 0.5", changed(i, k, v + 0.5)
            elif isinstance(v, str):
                yield "string re-cased, punctuated", changed(i, k, v.upper() + " .")
                yield "string changed", changed(i, k, v + "x")
            elif isinstance(v, list):
                yield "list reversed", changed(i, k, list(reversed(v)))
                yield "list shortened", changed(i, k, v[:-1])
                for kind, items in _list_items(v):
                    yield kind, changed(i, k, items)
            elif isinstance(v, dict) and v:
                first = next(iter(v))
                yield "dict key dropped", changed(i, k, {x: y for x, y in v.items() if x != first})
            for kind, nested in _nested(v):
                yield kind, changed(i, k, nested)
            dropped = copy.deepcopy(calls)
            del dropped[i]["arguments"][k]
            yield "argument dropped", dropped
        yield "argument added", changed(i, "zz_extra", 1)
        renamed = copy.deepcopy(calls)
        renamed[i]["name"] += "x"
        yield "function renamed", renamed
        fn = next((t["function"] for t in tools if t["function"]["name"] == call["name"]), None)
        for key, schema in ((fn or {}).get("parameters", {}).get("properties") or {}).items():
            if key not in call["arguments"] and "default" in schema:
                yield "default added", changed(i, key, schema["default"])
    if len(calls) > 1:
        yield "a parallel call missing", copy.deepcopy(calls[:-1])
        yield "parallel reversed", copy.deepcopy(calls[::-1])
        for k in range(1, len(calls)):
            yield "parallel: a later call first", copy.deepcopy([calls[k], *calls[:k], *calls[k + 1 :]])


def _widened(a: Mapping[str, list[Any]], b: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """An answer accepting the values of both ``a`` and ``b`` (an argument only one has may be left out)."""
    out: dict[str, list[Any]] = {}
    for key in [*a, *(k for k in b if k not in a)]:
        alts = copy.deepcopy(list(a.get(key, [""])))
        alts += [x for x in copy.deepcopy(list(b.get(key, [""]))) if x not in alts]
        out[key] = alts
    return out


def greedy_traps(
    calls: Calls, expected: list[dict[str, Any]], truth: list[dict[str, Any]]
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]], Calls]]:
    """(expected, ground truth, calls) where a one-to-one pairing exists but BFCL's greedy one fails.

    Expected call ``i`` is widened to accept call ``k``'s values too (``k > i``, same function),
    and the answer puts call ``k`` first: taken greedily by ``i``, it leaves nothing for ``k``.
    """
    for i in range(len(calls)):
        for k in range(i + 1, len(calls)):
            if calls[i]["name"] != calls[k]["name"]:
                continue
            exp, gt = copy.deepcopy(expected), copy.deepcopy(truth)
            ((name, args_i),), ((_, args_k),) = expected[i].items(), expected[k].items()
            exp[i] = {name: _widened(args_i, args_k)}
            ((gt_name, gt_i),), ((_, gt_k),) = truth[i].items(), truth[k].items()
            gt[i] = {gt_name: _widened(gt_i, gt_k)}
            yield exp, gt, copy.deepcopy([calls[k], *calls[:k], *calls[k + 1 :]])


def cases(
    calls: Calls, entry: BFCLEntry, truth: list[dict[str, Any]], rng: random.Random
) -> Iterator[tuple[str, list[dict[str, Any]], list[dict[str, Any]], Calls]]:
    """(kind, expected, BFCL's ground truth, answer): every pair both checkers judge for one entry."""
    for kind, answer in mutations(calls, entry.tools, rng):
        yield kind, entry.expected, truth, answer
    for expected, gt, answer in greedy_traps(calls, entry.expected, truth):
        yield "parallel greedy trap", expected, gt, answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="the bfcl-eval wheel (else fetched)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "agreement.json")
    args = parser.parse_args(argv)
    wheel = args.wheel or ensure_wheel(args.cache)
    rng = random.Random(0)
    agree = {mode: collections.Counter[str]() for mode in MODES}
    total: collections.Counter[str] = collections.Counter()
    disagreements: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        ast_checker, language = bfcl_checker(wheel, Path(tmp))
        source = BFCLSource(wheel)
        with Progress(console=Console(stderr=True)) as bar:
            task = bar.add_task("checking", total=len(CATEGORIES))
            for category in CATEGORIES:
                questions = {q["id"]: q for q in source.read_lines(source.file_for(category) or "")}
                answers = {a["id"]: a for a in source.read_lines(source.file_for(category, True) or "")}
                for entry in load_category(source, category):
                    q, truth = questions[entry.id], answers[entry.id]["ground_truth"]
                    for kind, expected, gt, answer in cases(entry.reference_calls(), entry, truth, rng):
                        theirs = ast_checker(
                            copy.deepcopy(q["function"]),
                            [{c["name"]: copy.deepcopy(c["arguments"])} for c in answer],
                            copy.deepcopy(gt),
                            language.PYTHON,
                            category,
                            "gpt-4o",
                        )["valid"]
                        total[kind] += 1
                        for mode in MODES:
                            ours = match_tool_calls(answer, expected, entry.tools, mode=mode)
                            if theirs == ours.ok:
                                agree[mode][kind] += 1
                                continue
                            disagreements[mode].append(
                                {"id": entry.id, "kind": kind, "bfcl": theirs, "ours": ours.ok}
                                | {"reason": ours.reason, "answer": answer}
                            )
                bar.advance(task)
        source.close()
    table = Table(title="smallfleet match_tool_calls vs BFCL ast_checker: answers on which they agree")
    table.add_column("answer")
    table.add_column("n", justify="right")
    for mode in MODES:
        table.add_column(f'mode="{mode}"', justify="right")
    for kind, n in sorted(total.items()):
        table.add_row(kind, str(n), *(_agreed(agree[mode][kind], n) for mode in MODES))
    all_n = sum(total.values())
    table.add_row("all", str(all_n), *(_agreed(sum(agree[mode].values()), all_n) for mode in MODES))
    Console().print(table)
    summary = {
        "n": all_n,
        "agree": {mode: sum(agree[mode].values()) for mode in MODES},
        "per_kind": dict(sorted(total.items())),
        "disagreements_per_kind": {
            mode: dict(collections.Counter(d["kind"] for d in disagreements[mode])) for mode in MODES
        },
        "disagreements": disagreements,
    }
    args.out.write_text(json.dumps(summary, indent=1))
    return 0


def _agreed(n_agree: int, n: int) -> str:
    return str(n_agree) if n_agree == n else f"{n_agree} ({n - n_agree} differ)"


if __name__ == "__main__":
    raise SystemExit(main())
