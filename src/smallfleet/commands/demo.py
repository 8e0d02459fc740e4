"""``smallfleet demo``: the whole loop on a simulated agent, offline, on this CPU."""

from __future__ import annotations

from pathlib import Path

import typer

from smallfleet.commands._common import console

#: The demo's promises are made at 50% confidence, not the product's 95%: its simulated teacher
#: is wrong on about 2% of calls, so kept answers plateau near 97-98%, and a task type's 200-550
#: held-out answers cannot certify 95% at 95% confidence (docs/demo-workload.md).
DEMO_CONFIDENCE = 0.5


def demo(
    workdir: Path = typer.Option(
        Path("smallfleet-demo"), "--workdir", help="Where the store, specialists and report go."
    ),
    calls: int = typer.Option(10_000, "--calls", min=200, help="How many large-model calls to simulate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated workload."),
    target_accuracy: float = typer.Option(
        0.95, "--target-accuracy", help="Accuracy the kept answers must reach."
    ),
    confidence: float = typer.Option(
        DEMO_CONFIDENCE,
        "--confidence",
        min=0.01,
        max=0.99,
        help="How sure a promotion must be that the kept answers reach the target (flywheel.confidence).",
    ),
) -> None:
    """Simulate a week of a support agent's LLM calls, distil specialists, replay, and show the difference."""
    from rich.table import Table

    from smallfleet.demo.run import run_demo

    r = run_demo(workdir, calls=calls, seed=seed, target_accuracy=target_accuracy, confidence=confidence)
    out = console()
    table = Table(title="Routes promoted")
    for col in ("route", "kind", "mode", "threshold"):
        table.add_column(col)
    for route in r.routes:
        table.add_row(route["name"], route["kind"], route["mode"], f"{route['threshold']:.3f}")
    out.print(table)
    tasks = Table(title="Held-out traffic by (true) task type")
    for col in ("task type", "calls", "served small", "agreement"):
        tasks.add_column(col)
    for name, s in sorted(r.by_task.items(), key=lambda kv: -kv[1]["calls"]):
        agree = f"{s['agree'] / s['small']:.1%}" if s["small"] else "–"
        tasks.add_row(name, str(s["calls"]), f"{s['small'] / s['calls']:.0%}", agree)
    out.print(tasks)
    agreement = "–" if r.agreement is None else f"{r.agreement:.1%}"
    saved = 1 - r.cost_after_usd / r.cost_before_usd if r.cost_before_usd else 0.0
    speed = r.latency_p50_before_ms / r.latency_p50_after_ms if r.latency_p50_after_ms else float("inf")
    out.print(
        f"\nReplayed the newest {r.replayed:,} held-out calls. Requests that stayed on the large model "
        "were answered from the recording (no large model runs in this demo); the specialists "
        "answered theirs live on this CPU.\n"
    )
    out.print(f"  served small:        {r.share_small:.1%} of calls ({r.served_small:,})")
    out.print(f"  agreement on those:  {agreement} with the large model's recorded answers")
    out.print(
        f"  cost:                ${r.cost_before_usd:,.2f} → ${r.cost_after_usd:,.2f} ({saved:.0%} less)"
    )
    out.print(
        f"  median latency:      {r.latency_p50_before_ms:,.0f} ms → "
        f"{r.latency_p50_after_ms:,.1f} ms ({speed:.1f}x faster)"
    )
    if r.escalations:
        out.print("  stayed large:        " + ", ".join(f"{k} {v}" for k, v in sorted(r.escalations.items())))
    out.print(f"\nReport: {r.report}   (took {r.seconds:.0f} s)")


def register(app: typer.Typer) -> None:
    app.command()(demo)
