"""``smallfleet train`` and ``smallfleet eval``, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smallfleet.specialists.base import Example
from smallfleet.testing.intents import support_desk_examples
from smallfleet.testing.upstream import Reply, ScriptedUpstream

pytest.importorskip("torch")


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
    env.update(COLUMNS="200", NO_COLOR="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "smallfleet.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write(path: Path, examples: list[Example]) -> Path:
    path.write_text("".join(json.dumps(ex.to_dict()) + "\n" for ex in examples))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    write(d / "train.jsonl", support_desk_examples(72, "train", seed=0))
    write(d / "val.jsonl", support_desk_examples(24, "train", seed=1))
    write(d / "test.jsonl", support_desk_examples(36, "test", seed=2))
    return d


@pytest.fixture(scope="module")
def trained(workdir: Path) -> Path:
    r = run(workdir, "train", "auto", "--data", "train.jsonl", "--validation", "val.jsonl", "--out", "intent")
    assert r.returncode == 0, r.stderr
    assert "label → classifier" in r.stdout and "refund" in r.stdout
    return workdir / "intent"


def test_train_auto_then_eval(workdir: Path, trained: Path) -> None:
    assert json.loads((trained / "specialist.json").read_text())["kind"] == "classifier"
    r = run(workdir, "eval", "intent", "--data", "test.jsonl", "--out", "report.json")
    assert r.returncode == 0, r.stderr
    for row in (
        "accuracy",
        "macro-F1",
        "latency p50",
        "coverage at 90% accuracy",
        "coverage at 99% accuracy",
    ):
        assert row in r.stdout
    report = json.loads((workdir / "report.json").read_text())
    assert report["shape"] == "label" and report["n"] == 36
    assert report["accuracy"] >= 0.85
    assert all(res["confidence"] is not None for res in report["results"])


def test_eval_a_configured_alias(workdir: Path) -> None:
    examples = support_desk_examples(6, "test", seed=3)
    with ScriptedUpstream([Reply.text(ex.response.text, prompt_tokens=50) for ex in examples]) as up:
        (workdir / "smallfleet.yaml").write_text(
            f"models:\n  teacher:\n    backend: openai\n    base_url: {up.url}\n    model: gpt-4o-mini\n"
            "    max_retries: 0\n    price: {input: 1.0, output: 4.0}\n"
        )
        write(workdir / "six.jsonl", examples)
        try:
            r = run(workdir, "eval", "teacher", "--data", "six.jsonl", "--concurrency", "1")
        finally:
            (workdir / "smallfleet.yaml").unlink()
    assert r.returncode == 0, r.stderr
    assert "1.000" in r.stdout and "$0.000" in r.stdout


def test_clear_errors(workdir: Path) -> None:
    r = run(workdir, "train", "regressor", "--data", "train.jsonl", "--out", "x")
    assert r.returncode != 0 and "Unknown specialist kind 'regressor'" in r.stderr
    assert "Traceback" not in r.stderr
    r = run(workdir, "train", "classifier", "--data", "missing.jsonl", "--out", "x")
    assert r.returncode != 0 and "missing.jsonl does not exist" in r.stderr
    r = run(workdir, "eval", "no-such-model", "--data", "test.jsonl")
    assert r.returncode != 0 and "no-such-model" in r.stderr and "Traceback" not in r.stderr
    (workdir / "bad.jsonl").write_text('{"request": 1}\n')
    r = run(workdir, "eval", "intent", "--data", "bad.jsonl")
    assert r.returncode != 0 and "bad.jsonl:1" in r.stderr
