"""Agent runs end to end: a scripted orchestrator upstream over real HTTP, a skill backed by a
trained specialist, a Python tool, a real MCP server over stdio, a real SQLite trace store."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from smallfleet.agents import Agent, Limits, MCPServer, Skill, StepOutput, tool
from smallfleet.config import Settings
from smallfleet.store import TraceStore
from smallfleet.testing.upstream import Reply, ScriptedUpstream
from smallfleet.types import ChatResponse, Usage

TASK = "Hi, where is my order #12345? It has not arrived. You can reach me at jane.doe@example.com"


def settings_for(up: ScriptedUpstream, usd_per_mtok: float = 1.0) -> Settings:
    price = {"input": usd_per_mtok, "output": usd_per_mtok}
    planner = {"backend": "openai", "base_url": up.url, "model": "gpt-4o", "max_retries": 0, "price": price}
    return Settings.model_validate({"models": {"planner": planner}, "redaction": {"enabled": True}})


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up in the shop's database.

    Args:
        order_id: The order number, e.g. "#12345".
    """
    time.sleep(0.6)  # slow on purpose: the test checks that calls overlap
    return {"order_id": order_id, "status": "shipped"}


@tool
def failing_tool(x: int) -> str:
    """A tool that always raises."""
    raise RuntimeError(f"database down ({x})")


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def planner_script(request: dict[str, Any]) -> Reply:
    """The orchestrator's plan: triage → (lookup_order ‖ shipping_eta) → answer from the results."""
    results = tool_messages(request)
    if not results:
        user = next(m["content"] for m in request["messages"] if m["role"] == "user")
        return Reply.tool_call("triage", {"task": user}, model="gpt-4o")
    if len(results) == 1:
        calls = [("lookup_order", {"order_id": "#12345"}), ("shipping_eta", {"order_id": "#12345"})]
        return Reply.of(ChatResponse.of_tool_calls("gpt-4o", calls, Usage.of(80, 30)))
    return Reply.text("ANSWER | " + " | ".join(results), model="gpt-4o", prompt_tokens=120)


def triage_skill(specialist_dir: Path) -> Skill:
    return Skill(
        name="triage",
        description="Find the intent of a customer message.",
        model=specialist_dir,
        system_prompt="Answer with exactly one intent.",
        max_steps=2,
    )


async def test_agent_run_skill_python_and_mcp_tools(
    upstream: ScriptedUpstream, specialist_dir: Path, mcp_script: Path, tmp_path: Path
) -> None:
    upstream.set_responder(planner_script)
    store = TraceStore(f"sqlite:///{tmp_path / 'traces.db'}")
    seen: list[str] = []
    agent = Agent(
        "planner",
        skills=[triage_skill(specialist_dir)],
        tools=[lookup_order, MCPServer(sys.executable, [str(mcp_script)])],
        system_prompt="You run Acme's support desk.",
        name="support",
        settings=settings_for(upstream),
        store=store,
        on_step=lambda s: seen.append(f"{s.kind}:{s.name}"),
    )
    result = await agent.run(TASK)

    assert result.stopped is None, result.message
    assert result.final_answer is not None
    answer = result.final_answer.split(" | ")
    assert answer[0] == "ANSWER"
    assert answer[1] == "order_status"  # the specialist's answer went back to the orchestrator
    assert json.loads(answer[2]) == {"order_id": "#12345", "status": "shipped"}
    assert answer[3] == "order #12345 arrives in 2 days"  # from the MCP server's process

    # The orchestrator saw the skill and both kinds of tools, with their schemas.
    first = upstream.requests[0]
    tools = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(tools) == {"triage", "lookup_order", "shipping_eta", "broken"}
    assert tools["triage"]["parameters"]["required"] == ["task"]
    assert tools["lookup_order"]["parameters"]["properties"]["order_id"]["description"].startswith(
        "The order"
    )
    assert tools["shipping_eta"]["parameters"]["required"] == ["order_id"]

    # Steps: 3 orchestrator turns, 1 skill with its own model call, 2 tool calls.
    kinds = [(s.kind, s.name, s.role) for s in result.steps]
    assert kinds.count(("model", "planner", "orchestrator")) == 3
    assert ("model", "triage", "triage") in kinds
    skill_step = next(s for s in result.steps if s.kind == "skill")
    skill_model = next(s for s in result.steps if s.role == "triage")
    assert skill_model.parent == skill_step.index
    assert skill_step.output == "order_status"
    assert len(seen) == len(result.steps) == 7
    assert [s.index for s in result.steps] == sorted({s.index for s in result.steps})

    # The two independent calls of one assistant message ran at the same time.
    a = next(s for s in result.steps if s.name == "lookup_order")
    b = next(s for s in result.steps if s.name == "shipping_eta")
    assert a.parent == b.parent
    assert a.latency_ms >= 550 and b.latency_ms >= 550
    assert max(a.started_at, b.started_at) < min(
        a.started_at + a.latency_ms / 1000, b.started_at + b.latency_ms / 1000
    )

    # Cost: the priced orchestrator calls only (the specialist is local).
    final_tokens = 120 + len(result.final_answer.split())  # what the scripted upstream reports
    expected = (10 + 12 + 80 + 30 + final_tokens) / 1_000_000
    assert result.cost_usd == pytest.approx(expected)
    assert result.latency_ms > 0
    assert json.loads(result.to_json())["steps"][0]["index"] == 1

    # Every model call is a trace of this run, with its step, workload, redacted and priced.
    traces = list(store.iter_traces())
    assert len(traces) == 4
    assert {t.run_id for t in traces} == {result.run_id}
    by_step = {s.index: s for s in result.steps}
    for t in traces:
        step = by_step[t.step]
        assert step.trace_id == t.id and step.kind == "model"
        assert "jane.doe@example.com" not in json.dumps(t.request)
    orch = [t for t in traces if t.workload == "support/orchestrator"]
    triage = [t for t in traces if t.workload == "support/triage"]
    assert len(orch) == 3 and len(triage) == 1
    assert triage[0].model_served == "triage" and triage[0].cost_usd == 0.0
    assert triage[0].response["choices"][0]["message"]["content"] == "order_status"
    assert sum(t.cost_usd for t in orch) == pytest.approx(expected)
    assert "<EMAIL_1>" in json.dumps(orch[0].request)
    store.close()


async def test_tool_errors_become_messages(upstream: ScriptedUpstream, mcp_script: Path) -> None:
    """Invalid arguments, unknown tools, raising Python and MCP tools: messages, never a crash."""

    def script(request: dict[str, Any]) -> Reply:
        if not tool_messages(request):
            calls = [
                ("lookup_order", {"order_id": 12345}),  # wrong type
                ("lookup_order", {}),  # missing argument
                ("failing_tool", {"x": 1}),  # raises
                ("no_such_tool", {}),
                ("broken", {"reason": "strike"}),  # the MCP tool raises in the server
                ("triage", {"inputs": "no task"}),  # a skill without its required argument
            ]
            return Reply.of(ChatResponse.of_tool_calls("gpt-4o", calls, Usage.of(10, 10)))
        return Reply.text("recovered", model="gpt-4o")

    upstream.set_responder(script)
    skill = Skill("triage", "Find the intent.", model="planner")
    agent = Agent(
        "planner",
        skills=[skill],
        tools=[lookup_order, failing_tool, MCPServer(sys.executable, [str(mcp_script)])],
        settings=settings_for(upstream),
    )
    result = await agent.run("do things")
    assert result.final_answer == "recovered" and result.stopped is None
    msgs = tool_messages(upstream.requests[-1])
    assert len(msgs) == 6 and all(m.startswith("Error:") for m in msgs), msgs
    assert "order_id" in msgs[0] and "not of type 'string'" in msgs[0]
    assert "'order_id' is a required property" in msgs[1]
    assert "RuntimeError: database down (1)" in msgs[2]
    assert "no_such_tool" in msgs[3] and "lookup_order" in msgs[3]
    assert "warehouse offline: strike" in msgs[4]
    assert "'task' is a required property" in msgs[5]
    errored = [s for s in result.steps if s.kind in ("tool", "skill")]
    assert len(errored) == 6 and all(s.error for s in errored)


async def test_skill_model_failure_is_a_message(upstream: ScriptedUpstream) -> None:
    """A skill whose model answers 500 gives the orchestrator an error message; the run goes on."""

    def script(request: dict[str, Any]) -> Reply:
        if request["messages"][0]["content"] == "SKILL":
            return Reply.error(500, "teacher exploded")
        if not tool_messages(request):
            return Reply.tool_call("summarise", {"task": "summarise this"}, model="gpt-4o")
        return Reply.text("done: " + tool_messages(request)[0], model="gpt-4o")

    upstream.set_responder(script)
    skill = Skill("summarise", "Summarise a text.", model="planner", system_prompt="SKILL")
    result = await Agent("planner", skills=[skill], settings=settings_for(upstream)).run("go")
    assert result.final_answer is not None and result.final_answer.startswith("done: Error: skill summarise")
    failed = next(s for s in result.steps if s.role == "summarise")
    assert failed.error is not None and "teacher exploded" in failed.error


def _always_calls_tool(request: dict[str, Any]) -> Reply:
    return Reply.tool_call("lookup_order", {"order_id": "#1"}, model="gpt-4o")


@tool
def quick(order_id: str) -> str:
    """Instant lookup."""
    return f"{order_id}: ok"


async def test_budget_stop_max_usd(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    upstream.set_responder(_always_calls_tool)
    store = TraceStore(f"sqlite:///{tmp_path / 'traces.db'}")
    # 10 prompt + 12 completion tokens at $1000 per 1M tokens: $0.022 per orchestrator call.
    agent = Agent(
        "planner",
        tools=[tool(quick.fn, name="lookup_order")],
        settings=settings_for(upstream, usd_per_mtok=1000.0),
        limits=Limits(max_steps=50, max_usd=0.05),
        store=store,
    )
    result = await agent.run("loop forever")
    assert result.stopped == "max_usd"
    assert result.final_answer is None
    assert "max_usd" in (result.message or "") and "0.05" in (result.message or "")
    assert len(upstream.requests) == 3  # 0.022, 0.044, 0.066 ≥ 0.05 → no fourth call
    assert result.cost_usd == pytest.approx(0.066)
    assert store.count_traces(workload="agent/orchestrator") == 3
    store.close()


async def test_budget_stop_max_steps_and_seconds(upstream: ScriptedUpstream) -> None:
    upstream.set_responder(_always_calls_tool)
    tools = [tool(quick.fn, name="lookup_order")]
    agent = Agent("planner", tools=tools, settings=settings_for(upstream), limits=Limits(max_steps=2))
    result = await agent.run("loop forever")
    assert result.stopped == "max_steps" and result.final_answer is None
    assert len(upstream.requests) == 2
    assert [s.kind for s in result.steps] == ["model", "tool", "model", "tool"]

    upstream.reset()
    upstream.set_responder(lambda r: Reply.text("too late", model="gpt-4o", delay=3.0))
    agent = Agent("planner", settings=settings_for(upstream), limits=Limits(max_seconds=0.5))
    t0 = time.perf_counter()
    result = await agent.run("slow")
    assert result.stopped == "max_seconds" and result.final_answer is None
    assert time.perf_counter() - t0 < 2.5


async def test_step_outputs_feed_later_skills(upstream: ScriptedUpstream) -> None:
    """A skill's StepOutput context carries an earlier tool's result into the skill's system prompt."""

    def script(request: dict[str, Any]) -> Reply:
        system = request["messages"][0]["content"] if request["messages"][0]["role"] == "system" else ""
        if system.startswith("WRITER"):
            return Reply.text("wrote reply using: " + system.split("\n")[-1], model="gpt-4o")
        n = len(tool_messages(request))
        if n == 0:
            return Reply.tool_call("lookup_order", {"order_id": "#77"}, model="gpt-4o")
        if n == 1:
            return Reply.tool_call("writer", {"task": "write the reply"}, model="gpt-4o")
        return Reply.text(tool_messages(request)[-1], model="gpt-4o")

    upstream.set_responder(script)
    writer = Skill(
        "writer",
        "Write the customer reply.",
        model="planner",
        system_prompt="WRITER",
        context=[StepOutput("lookup_order")],
    )
    tools = [tool(quick.fn, name="lookup_order")]
    agent = Agent("planner", skills=[writer], tools=tools, settings=settings_for(upstream))
    result = await agent.run("answer the customer")
    assert result.final_answer == "wrote reply using: #77: ok"


async def test_router_serves_skill_calls_small(
    upstream: ScriptedUpstream, specialist_dir: Path, tmp_path: Path
) -> None:
    """With a Router, a skill's call goes to the promoted specialist when it is confident and valid,
    else to the skill's own (large) model; the trace says which, with the confidence."""
    from smallfleet.routing.matcher import static_key
    from smallfleet.routing.router import Router
    from smallfleet.routing.routes import Route
    from smallfleet.testing.intents import INTENTS, SYSTEM_PROMPT

    def script(request: dict[str, Any]) -> Reply:
        if request["messages"][0]["content"] == SYSTEM_PROMPT:
            return Reply.text("LARGE-MODEL-LABEL", model="gpt-4o")  # the triage skill's large model
        results = tool_messages(request)
        if not results:
            return Reply.tool_call("triage", {"task": "Where is my order #12345?"}, model="gpt-4o")
        return Reply.text(f"intent={results[0]}", model="gpt-4o")

    upstream.set_responder(script)
    skill = Skill("triage", "Find the intent.", model="planner", system_prompt=SYSTEM_PROMPT)
    key = static_key(skill.request(skill.messages("any", {}, {}), []))

    def route(threshold: float) -> Route:
        return Route(
            name="support-triage",
            kind="classifier",
            specialist_path=str(specialist_dir),
            threshold=threshold,
            mode="on",
            labels=INTENTS,
            matcher={"keys": [key]},
        )

    store = TraceStore(f"sqlite:///{tmp_path / 'traces.db'}")
    settings = settings_for(upstream)
    router = Router([route(0.0)], workloads=["support/*"])
    agent = Agent("planner", skills=[skill], name="support", settings=settings, store=store, router=router)
    small = await agent.run("help the customer")
    assert small.final_answer == "intent=order_status"
    assert not any(r["messages"][0]["content"] == SYSTEM_PROMPT for r in upstream.requests)
    step = next(s for s in small.steps if s.role == "triage")
    assert step.route == "specialist:support-triage" and step.cost_usd == 0.0
    assert step.confidence is not None and 0.0 < step.confidence <= 1.0

    router.set_routes([route(1.01)])  # no answer is that sure: escalate to the skill's model
    large = await agent.run("help the customer")
    assert large.final_answer == "intent=LARGE-MODEL-LABEL"
    step = next(s for s in large.steps if s.role == "triage")
    assert step.route == "escalated:low_confidence" and step.cost_usd > 0

    traces = {t.run_id: t for t in store.iter_traces(workload="support/triage")}
    assert traces[small.run_id].route == "specialist:support-triage"
    assert traces[small.run_id].response["choices"][0]["message"]["content"] == "order_status"
    assert traces[large.run_id].escalation == "low_confidence"
    assert traces[large.run_id].confidence == pytest.approx(step.confidence)
    store.close()


async def test_started_mcp_server_is_shared_by_runs_and_skills(
    upstream: ScriptedUpstream, mcp_script: Path
) -> None:
    """A server the caller started stays up across runs; a skill can use MCP tools too."""

    def script(request: dict[str, Any]) -> Reply:
        results = tool_messages(request)
        is_skill = request["messages"][0]["content"] == "SHIPPING"
        if results:
            return Reply.text(("skill: " if is_skill else "orchestrator: ") + results[-1], model="gpt-4o")
        if is_skill:
            return Reply.tool_call("shipping_eta", {"order_id": "#9"}, model="gpt-4o")
        return Reply.tool_call("shipping", {"task": "when does #9 arrive?"}, model="gpt-4o")

    upstream.set_responder(script)
    async with MCPServer(sys.executable, [str(mcp_script)]) as server:
        skill = Skill(
            "shipping", "Shipping questions.", model="planner", system_prompt="SHIPPING", tools=[server]
        )
        agent = Agent("planner", skills=[skill], settings=settings_for(upstream))
        for _ in range(2):
            result = await agent.run("when does my order arrive?")
            assert result.final_answer == "orchestrator: skill: order #9 arrives in 2 days"
            assert server.started
        tool_step = next(s for s in result.steps if s.kind == "tool")
        skill_step = next(s for s in result.steps if s.kind == "skill")
        assert tool_step.parent == skill_step.index
    assert not server.started


@pytest.mark.postgres
async def test_run_traces_in_postgres(upstream: ScriptedUpstream, pg_url: str) -> None:
    """The same per-step traces on the real PostgreSQL."""
    import uuid

    upstream.set_responder(planner_script_without_skill)
    name = f"agent-{uuid.uuid4().hex[:8]}"
    store = TraceStore(pg_url)
    tools = [tool(quick.fn, name="lookup_order")]
    agent = Agent("planner", tools=tools, name=name, settings=settings_for(upstream), store=store)
    result = await agent.run("where is #3?")
    assert result.final_answer == "done: #3: ok"
    traces = list(store.iter_traces(workload=f"{name}/orchestrator"))
    store.close()
    assert [t.step for t in traces] == [1, 3] and {t.run_id for t in traces} == {result.run_id}
    assert traces[1].response["choices"][0]["message"]["content"] == "done: #3: ok"


def planner_script_without_skill(request: dict[str, Any]) -> Reply:
    results = tool_messages(request)
    if not results:
        return Reply.tool_call("lookup_order", {"order_id": "#3"}, model="gpt-4o")
    return Reply.text(f"done: {results[0]}", model="gpt-4o")
