"""YAML agents and ``smallfleet run``: the example agent, run for real against a scripted upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from smallfleet.agents import load_agent
from smallfleet.agents.context import FileSource, Retrieval, StaticText, StepOutput
from smallfleet.agents.tools import FunctionTool, MCPServer
from smallfleet.config import Settings
from smallfleet.errors import ConfigError, ModelNotFound
from smallfleet.store import TraceStore
from smallfleet.testing.upstream import Reply, ScriptedUpstream
from smallfleet.types import ChatResponse, Usage

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agents" / "support.yaml"


def models_for(up: ScriptedUpstream, specialist_dir: Path) -> dict[str, Any]:
    return {
        "gpt-4o-mini": {"backend": "openai", "base_url": up.url, "max_retries": 0},
        "triage": {"backend": "specialist", "path": str(specialist_dir)},
    }


def _tool_results(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def support_script(request: dict[str, Any]) -> Reply:
    """The orchestrator of examples/agents/support.yaml, and its policy skill's model."""
    first = request["messages"][0]
    if first["role"] == "system" and first["content"].startswith("Answer from the documents"):
        system = first["content"]
        seen = [name for name in ("refunds.md", "shipping.md", "accounts.md") if f"[{name}]" in system]
        order = "with order" if '"order_id": "#12345"' in system else "without order"
        return Reply.text(f"POLICY {'+'.join(seen)} {order}", model="gpt-4o-mini")
    results = _tool_results(request)
    if not results:
        user = next(m["content"] for m in request["messages"] if m["role"] == "user")
        return Reply.tool_call("triage", {"task": user}, model="gpt-4o-mini")
    if len(results) == 1:
        calls = [("lookup_order", {"order_id": "#12345"}), ("shipping_eta", {"order_id": "#12345"})]
        return Reply.of(ChatResponse.of_tool_calls("gpt-4o-mini", calls, Usage.of(50, 20)))
    if len(results) == 3:
        return Reply.tool_call(
            "policy", {"task": "How long do I have to ask for a refund?"}, model="gpt-4o-mini"
        )
    return Reply.text("FINAL " + " || ".join(results), model="gpt-4o-mini")


def test_example_yaml_loads(upstream: ScriptedUpstream, specialist_dir: Path) -> None:
    settings = Settings.model_validate({"models": models_for(upstream, specialist_dir)})
    agent = load_agent(EXAMPLE, settings)
    assert agent.name == "support" and agent.model == "gpt-4o-mini"
    assert agent.limits.max_steps == 8 and agent.limits.max_usd == 0.05
    python_tool, server = agent.tools
    assert isinstance(python_tool, FunctionTool) and python_tool.name == "lookup_order"
    assert python_tool.parameters["properties"]["order_id"]["type"] == "string"
    assert isinstance(server, MCPServer) and server.cwd == str(EXAMPLE.parent)
    triage, policy = agent.skills
    assert triage.model == "triage" and triage.max_steps == 1
    kinds = [type(c) for c in policy.context]
    assert kinds == [StaticText, Retrieval, StepOutput]
    assert policy.context[0].priority == 2
    assert Path(policy.context[1].folder) == EXAMPLE.parent / "kb"
    assert policy.tools[0].parameters["properties"]["category"]["enum"] == [
        "electronics",
        "accessories",
        "software",
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "gpt-4o-mini", "skils": []}, "unknown key 'skils'"),
        ({"model": "gpt-4o-mini", "limits": {"max_steps": 0}}, "limits.max_steps"),
        ({"model": "nope"}, "nope"),
        ({"model": "gpt-4o-mini", "tools": [{"python": "no_such_module_xyz:f"}]}, "cannot import"),
        ({"model": "gpt-4o-mini", "tools": [{"python": "json:nothing_here"}]}, "has no 'nothing_here'"),
        (
            {"model": "gpt-4o-mini", "tools": [{"python": "json:loads", "mcp": {"command": "x"}}]},
            "exactly one",
        ),
        (
            {"model": "gpt-4o-mini", "skills": [{"name": "s", "description": "d", "model": "missing"}]},
            "neither an alias",
        ),
        (
            {
                "model": "gpt-4o-mini",
                "skills": [
                    {"name": "s", "description": "d", "model": "gpt-4o-mini", "context": [{"priority": 1}]}
                ],
            },
            "exactly one of text, file, retrieval, step",
        ),
    ],
)
def test_bad_yaml_is_a_clear_error(tmp_path: Path, body: dict[str, Any], message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(body))
    settings = Settings.model_validate({"models": {"gpt-4o-mini": {"backend": "openai"}}})
    with pytest.raises((ConfigError, ModelNotFound)) as info:
        load_agent(path, settings)
    assert message in info.value.message


def test_yaml_file_context_and_local_models(tmp_path: Path) -> None:
    (tmp_path / "rules.md").write_text("Be brief.")
    path = tmp_path / "agent.yaml"
    body = {
        "model": "local-big",
        "models": {"local-big": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "skills": [
            {
                "name": "s",
                "description": "d",
                "model": "local-big",
                "context": [{"file": "rules.md", "name": "rules"}],
            }
        ],
    }
    path.write_text(yaml.safe_dump(body))
    agent = load_agent(path)
    (source,) = agent.skills[0].context
    assert isinstance(source, FileSource) and source.render("t", {}) == "Be brief."
    assert "local-big" in agent.settings.models


def test_smallfleet_run_cli(upstream: ScriptedUpstream, specialist_dir: Path, tmp_path: Path) -> None:
    """``smallfleet run`` in a subprocess: steps live, final answer, cost, traces with the run id."""
    upstream.set_responder(support_script)
    config = tmp_path / "smallfleet.yaml"
    config.write_text(yaml.safe_dump({"models": models_for(upstream, specialist_dir)}))
    db = tmp_path / "traces.db"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(COLUMNS="200", NO_COLOR="1")
    cmd = [sys.executable, "-m", "smallfleet.cli", "--config", str(config), "run", str(EXAMPLE)]
    task = "Hello, where is my order #12345? It still has not arrived."
    proc = subprocess.run(
        [*cmd, task, "--store", f"sqlite:///{db}"], capture_output=True, text=True, env=env, timeout=240
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for expected in (
        "orchestrator",
        "skill triage",
        "tool lookup_order",
        "tool shipping_eta",
        "skill policy",
    ):
        assert expected in out, out
    assert "order_status" in out
    assert "final answer" in out and "FINAL order_status" in out
    assert "POLICY refunds.md" in out and "with order" in out  # retrieval and the earlier step's output
    assert "arrives in" in out  # the MCP server answered
    assert "cost $0.0000" in out  # gpt-4o-mini's built-in price, on the scripted token counts

    store = TraceStore(f"sqlite:///{db}", create=False)
    traces = list(store.iter_traces())
    store.close()
    workloads = sorted(t.workload for t in traces)
    assert workloads == ["support/orchestrator"] * 4 + ["support/policy", "support/triage"]
    assert len({t.run_id for t in traces}) == 1 and all(t.step for t in traces)


def test_smallfleet_run_stops_at_a_limit(
    upstream: ScriptedUpstream, specialist_dir: Path, tmp_path: Path
) -> None:
    """In-process CLI: --max-steps 1 stops the run, prints why, exits 1; --json gives the whole run."""
    from typer.testing import CliRunner

    from smallfleet.cli import app

    upstream.set_responder(support_script)
    config = tmp_path / "smallfleet.yaml"
    config.write_text(yaml.safe_dump({"models": models_for(upstream, specialist_dir)}))
    args = [
        "--config",
        str(config),
        "run",
        str(EXAMPLE),
        "where is order #5?",
        "--no-store",
        "--max-steps",
        "1",
    ]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    run = json.loads(result.stdout)
    assert run["stopped"] == "max_steps" and run["final_answer"] is None
    assert [s["kind"] for s in run["steps"]] == ["model", "skill", "model"]  # orchestrator, skill, its model
