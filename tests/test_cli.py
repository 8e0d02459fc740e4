"""The ``smallfleet`` CLI, run as a real subprocess; and the package surface it stands on."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smallfleet.testing import Reply, ScriptedUpstream


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SMALLFLEET_")}
    base.update(COLUMNS="200", NO_COLOR="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "smallfleet.cli", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


def test_importing_the_cli_imports_nothing_heavy() -> None:
    code = (
        "import sys, smallfleet.cli\n"
        "heavy = ('torch', 'transformers', 'sqlalchemy', 'httpx', 'numpy', 'sklearn',"
        " 'sentence_transformers', 'peft', 'xgrammar', 'openai', 'uvicorn', 'starlette', 'ray', 'psycopg')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_init_writes_a_config_that_loads_and_models_lists(tmp_path: Path) -> None:
    r = run(tmp_path, "init")
    assert r.returncode == 0, r.stderr
    cfg = tmp_path / "smallfleet.yaml"
    assert cfg.exists() and "Wrote" in r.stdout

    from smallfleet.config import load_settings

    aliases = set(load_settings(cfg, env={}).models)
    assert aliases
    r = run(tmp_path, "models")
    assert r.returncode == 0, r.stderr
    for alias in aliases:
        assert alias in r.stdout
    assert "backend" in r.stdout and "json_schema" in r.stdout

    # init again refuses to overwrite, unless --force
    r = run(tmp_path, "init")
    assert r.returncode != 0 and "--force" in r.stderr
    assert run(tmp_path, "init", "--force").returncode == 0


def test_models_with_no_config(tmp_path: Path) -> None:
    r = run(tmp_path, "models")
    assert r.returncode == 0
    assert "smallfleet init" in r.stdout


def _config(tmp_path: Path, upstream: ScriptedUpstream, extra: str = "") -> Path:
    cfg = tmp_path / "smallfleet.yaml"
    cfg.write_text(
        f"models:\n  big:\n    backend: openai\n    base_url: {upstream.url}\n    model: upstream-model\n"
        f"    api_key_env: SF_CLI_TEST_KEY\n    max_retries: 0\n{extra}"
    )
    return cfg


def test_chat_prints_the_answer(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    upstream.push(Reply.text("Paris is the capital of France."))
    _config(tmp_path, upstream)
    r = run(
        tmp_path,
        "chat",
        "big",
        "Capital of France?",
        "--system",
        "Be terse.",
        env={"SF_CLI_TEST_KEY": "sk-c"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Paris is the capital of France."
    sent = upstream.requests[-1]
    assert sent["model"] == "upstream-model"
    assert sent["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert upstream.headers[-1]["authorization"] == "Bearer sk-c"


def test_chat_json_schema_and_config_flag(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    upstream.push(Reply.text('{"city": "Paris"}'))
    cfg = _config(tmp_path, upstream)
    other = tmp_path / "elsewhere"
    other.mkdir()
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    schema_file = tmp_path / "city.json"
    schema_file.write_text(json.dumps(schema))
    r = run(
        other,
        "--config",
        str(cfg),
        "chat",
        "big",
        "Where is the Louvre?",
        "--json-schema",
        str(schema_file),
        env={"SF_CLI_TEST_KEY": "sk-c"},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"city": "Paris"}
    assert upstream.requests[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema},
    }


def test_chat_stream(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    from smallfleet.types import ChatResponse

    upstream.reset()
    upstream.push(Reply.stream(ChatResponse.of_text("m", "one two three four"), piece=3))
    _config(tmp_path, upstream)
    r = run(tmp_path, "chat", "big", "count", "--stream", env={"SF_CLI_TEST_KEY": "k"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "one two three four"
    assert upstream.requests[-1]["stream"] is True


@pytest.mark.parametrize(
    ("yaml_extra", "args", "env", "fragment"),
    [
        ("store:\n  ulr: x\n", ["models"], {}, "unknown key 'store.ulr'; did you mean 'url'?"),
        ("", ["chat", "big", "hi"], {}, "export SF_CLI_TEST_KEY="),
        ("", ["chat", "bgi", "hi"], {"SF_CLI_TEST_KEY": "k"}, "Did you mean 'big'?"),
        (
            "",
            ["chat", "big", "hi"],
            {"SF_CLI_TEST_KEY": "k", "SMALLFLEET_GATEWAY__PORT": "x"},
            "gateway.port",
        ),
    ],
)
def test_errors_are_one_clean_line(
    tmp_path: Path,
    upstream: ScriptedUpstream,
    yaml_extra: str,
    args: list[str],
    env: dict[str, str],
    fragment: str,
) -> None:
    _config(tmp_path, upstream, yaml_extra)
    r = run(tmp_path, *args, env=env)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert fragment in lines[0]


def test_upstream_failure_is_one_clean_line(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    upstream.push(Reply.error(500, "model crashed"))
    _config(tmp_path, upstream)
    r = run(tmp_path, "chat", "big", "hi", env={"SF_CLI_TEST_KEY": "sk-secret-value"})
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "HTTP 500" in r.stderr and "model crashed" in r.stderr
    assert "sk-secret-value" not in r.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    r = run(tmp_path, "--config", "nope.yaml", "models")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "smallfleet init" in r.stderr


def test_version_and_help(tmp_path: Path) -> None:
    from smallfleet import __version__

    r = run(tmp_path, "--version")
    assert r.returncode == 0 and __version__ in r.stdout
    r = run(tmp_path, "--help")
    assert r.returncode == 0
    for command in ("init", "models", "chat"):
        assert command in r.stdout


# ---------------------------------------------------------------- the package surface


def test_error_tree_docstring_names_every_exception() -> None:
    """The tree drawn in errors.py's docstring has every class, each under its real parent."""
    import re

    import smallfleet.errors as errors

    classes = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    }
    assert classes == set(errors.__all__)
    drawn: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column, name) of the open branches
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^([\s│├└─]*)([A-Z][A-Za-z]+)\b", line)
        if not m or not (m.group(1).strip() or m.group(2) == "SmallfleetError"):
            continue
        col, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= col:
            stack.pop()
        drawn[name] = stack[-1][1] if stack else None
        stack.append((col, name))
    assert set(drawn) == classes, f"not drawn: {sorted(classes - set(drawn))}"
    for name, parent in drawn.items():
        if parent is not None:
            assert getattr(errors, parent) in getattr(errors, name).__bases__, f"{name} is not a {parent}"


def test_package_all_resolves() -> None:
    import smallfleet

    for name in smallfleet.__all__:
        assert getattr(smallfleet, name) is not None, name
    with pytest.raises(AttributeError):
        smallfleet.NotAThing  # noqa: B018
