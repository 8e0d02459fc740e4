"""Does smallfleet's tool-call match agree with BFCL's own AST checker?

BFCL's ``ast_checker`` is taken from the wheel (only its pure-Python checker files,
with the model table it imports replaced by a stub: every model is an OpenAI-style
one whose dotted names become underscores). Both checkers then judge the same
answers: the reference answer of every entry of the six AST categories, and
mutations of it (types, values, strings, lists, dicts, missing / extra arguments,
wrong names, shuffled or missing parallel calls).

    python benchmarks/bfcl/agreement.py [--wheel PATH] [--out agreement.json]

Prints the agreement per mutation and writes the disagreements (if any) to JSON.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader import DEFAULT_CACHE, EVAL_CATEGORIES, TRAIN_CATEGORIES, ensure_wheel
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from smallfleet.evals.bfcl import BFCLSource, load_category

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


def mutations(
    calls: list[dict[str, Any]], tools: list[dict[str, Any]], rng: random.Random
) -> Iterator[tuple]:
    """(kind, calls): the reference answer and answers a model might give instead."""
    yield "reference", calls
    shuffled = copy.deepcopy(calls)
    rng.shuffle(shuffled)
    yield "parallel shuffled", shuffled

    def changed(i: int, key: str, value: Any) -> list[dict[str, Any]]:
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
            elif isinstance(v, dict) and v:
                first = next(iter(v))
                yield "dict key dropped", changed(i, k, {x: y for x, y in v.items() if x != first})
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="the bfcl-eval wheel (else fetched)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "agreement.json")
    args = parser.parse_args(argv)
    wheel = args.wheel or ensure_wheel(args.cache)
    rng = random.Random(0)
    agree: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    disagreements: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ast_checker, language = bfcl_checker(wheel, Path(tmp))
        source = BFCLSource(wheel)
        categories = TRAIN_CATEGORIES + EVAL_CATEGORIES
        with Progress(console=Console(stderr=True)) as bar:
            task = bar.add_task("checking", total=len(categories))
            for category in categories:
                questions = {q["id"]: q for q in source.read_lines(source.file_for(category) or "")}
                answers = {a["id"]: a for a in source.read_lines(source.file_for(category, True) or "")}
                for entry in load_category(source, category):
                    q, a = questions[entry.id], answers[entry.id]
                    for kind, calls in mutations(entry.reference_calls(), entry.tools, rng):
                        theirs = ast_checker(
                            copy.deepcopy(q["function"]),
                            [{c["name"]: copy.deepcopy(c["arguments"])} for c in calls],
                            copy.deepcopy(a["ground_truth"]),
                            language.PYTHON,
                            category,
                            "gpt-4o",
                        )["valid"]
                        ours = entry.check(calls)
                        total[kind] += 1
                        if theirs == ours.ok:
                            agree[kind] += 1
                        else:
                            disagreements.append(
                                {
                                    "id": entry.id,
                                    "kind": kind,
                                    "bfcl": theirs,
                                    "ours": ours.ok,
                                    "reason": ours.reason,
                                }
                            )
                bar.advance(task)
        source.close()
    table = Table(title="smallfleet match_tool_calls vs BFCL ast_checker")
    table.add_column("answer")
    table.add_column("n", justify="right")
    table.add_column("agree", justify="right")
    for kind, n in total.most_common():
        table.add_row(kind, str(n), f"{100 * agree[kind] / n:.2f}%")
    all_n, all_agree = sum(total.values()), sum(agree.values())
    table.add_row("all", str(all_n), f"{100 * all_agree / all_n:.2f}%")
    Console().print(table)
    args.out.write_text(
        json.dumps(
            {"n": all_n, "agree": all_agree, "per_kind": dict(total), "disagreements": disagreements},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
