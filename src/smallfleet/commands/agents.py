"""``smallfleet run AGENT.yaml "task"``: run a hybrid agent and watch its steps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from smallfleet.commands._common import console, settings

if TYPE_CHECKING:
    from smallfleet.agents.agent import RunResult, Step


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    agent_file: Path = typer.Argument(..., help="The agent's YAML definition."),
    task: str = typer.Argument(..., help="What to ask the agent."),
    store: str | None = typer.Option(
        None, "--store", help="Trace store URL to record every model call in (default: store.url)."
    ),
    no_store: bool = typer.Option(False, "--no-store", help="Record nothing."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Override limits.max_steps."),
    max_usd: float | None = typer.Option(None, "--max-usd", min=0, help="Override limits.max_usd."),
    max_seconds: float | None = typer.Option(
        None, "--max-seconds", min=0, help="Override limits.max_seconds."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the whole run (steps included) as JSON."),
) -> None:
    """Run the agent that AGENT_FILE defines on TASK.

    Prints each step as it happens (model calls with tokens, cost and route; tool and
    skill calls with their results), then the final answer, the cost and the latency.
    Every model call is recorded as a trace (workload "<agent>/<skill or orchestrator>",
    with the run id and step) unless --no-store. Exits 1 when the run stopped at a limit.
    """
    import asyncio
    import dataclasses

    from rich.markup import escape

    from smallfleet.agents.loader import load_agent

    out = console()
    quiet = as_json

    def show(step: Step) -> None:
        if not quiet:
            out.print(_step_line(step, escape), highlight=False, soft_wrap=True)

    trace_store = None
    if not no_store:
        from smallfleet.store import TraceStore

        trace_store = TraceStore(store or settings().store.url)
    try:
        agent = load_agent(agent_file, settings(), store=trace_store, on_step=show)
        overrides = {"max_steps": max_steps, "max_usd": max_usd, "max_seconds": max_seconds}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides:
            agent.limits = dataclasses.replace(agent.limits, **overrides)

        async def go() -> RunResult:
            try:
                return await agent.run(task)
            finally:
                await agent.aclose()

        if quiet:
            result = asyncio.run(go())
        else:
            with out.status(f"[bold]{escape(agent.name)}[/] working…", spinner="dots"):
                result = asyncio.run(go())
    finally:
        if trace_store is not None:
            trace_store.close()

    if as_json:
        typer.echo(result.to_json())
    else:
        out.print()
        if result.final_answer is not None:
            out.rule("final answer")
            out.print(escape(result.final_answer), highlight=False)
        else:
            out.print(f"[bold yellow]stopped:[/] {escape(result.message or result.stopped or '')}")
        out.print(
            f"[dim]run {result.run_id} · {len(result.steps)} steps · cost ${result.cost_usd:.6f} · "
            f"latency {result.latency_ms / 1000:.2f} s"
            + (f" · traces in {escape(trace_store.url)}" if trace_store is not None else "")
            + "[/]",
            highlight=False,
        )
    if result.stopped is not None:
        raise typer.Exit(1)


def _step_line(step: Step, escape: Callable[[str], str]) -> str:
    # orchestrator turns flush left, the calls they make indented, a skill's own model calls more
    indent = "" if step.role == "orchestrator" else "    " if step.kind == "model" else "  "
    took = f"{step.latency_ms:,.0f} ms"
    if step.kind == "model":
        what = (
            "answer"
            if not step.tool_calls
            else "calls " + ", ".join(c["function"]["name"] for c in step.tool_calls)
        )
        route = f" · {step.route}" if step.route and step.route != "direct" else ""
        cost = f" · ${step.cost_usd:.6f}" if step.cost_usd else ""
        head = f"{indent}[cyan]{step.index:>3}[/] [bold]{escape(step.role or '')}[/] ({escape(step.name)})"
        tail = f"{what} · {step.input_tokens}+{step.output_tokens} tok{cost}{route} · {took}"
        if step.error:
            tail = f"[red]{escape(step.error)}[/] · {took}"
        return f"{head} {tail}"
    colour = "red" if step.error else "green"
    text = (step.output or "").replace("\n", " ")
    text = text if len(text) <= 120 else text[:117] + "..."
    head = f"{indent}[cyan]{step.index:>3}[/] [{colour}]{step.kind} {escape(step.name)}[/]"
    return f"{head} → {escape(text)} · {took}"
