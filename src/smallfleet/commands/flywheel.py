"""``smallfleet flywheel run`` and ``smallfleet report``."""

from __future__ import annotations

from pathlib import Path

import typer

from smallfleet.commands._common import console, settings

flywheel_app = typer.Typer(help="Turn recorded traffic into promoted specialists.", no_args_is_help=True)


@flywheel_app.command("run")
def run(
    workload: str | None = typer.Option(None, "--workload", "-w", help="Only this workload's traces."),
    since: str | None = typer.Option(None, "--since", help="Only traces newer than this, e.g. 7d, 24h."),
    target_accuracy: float | None = typer.Option(
        None, "--target-accuracy", help="Accuracy the kept answers must reach."
    ),
    min_examples: int | None = typer.Option(
        None, "--min-examples", help="Smallest task type worth a specialist."
    ),
    min_coverage: float | None = typer.Option(
        None, "--min-coverage", help="Smallest share of a task type worth routing."
    ),
    promote: str = typer.Option("shadow", "--promote", help="Mode of new routes: shadow, canary:P or on."),
    executor: str | None = typer.Option(None, "--executor", help="local (in-process) or ray."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Local executor: processes training task types at once."
    ),
    out: Path = typer.Option(Path("report.html"), "--report", help="Where to write the HTML report."),
) -> None:
    """Curate, cluster, select, train, evaluate and promote, on the traces in the store."""
    from smallfleet._time import parse_since
    from smallfleet.flywheel.pipeline import FlywheelOptions, run_flywheel
    from smallfleet.report.html import write_report
    from smallfleet.routing.routes import parse_mode
    from smallfleet.store.trace_store import TraceStore

    parse_mode(promote)
    s = settings()
    opts = FlywheelOptions.from_settings(
        s,
        workload=workload,
        since=parse_since(since) if since else None,
        target_accuracy=target_accuracy,
        min_examples=min_examples,
        min_coverage=min_coverage,
        promote_mode=promote,
        executor=executor,
        workers=workers,
    )
    store = TraceStore(s.store.url)
    result = run_flywheel(store, opts)
    html, js = write_report(result.to_dict(), out)
    print_summary(result.to_dict())
    console().print(f"\nReport: {html} (numbers: {js})")


def print_summary(summary: dict) -> None:  # type: ignore[type-arg]
    """The terminal table of a flywheel run."""
    from rich.table import Table

    table = Table(title=f"flywheel run {summary.get('run_id', '')}")
    for col in (
        "task type",
        "calls",
        "share",
        "output",
        "outcome",
        "candidate",
        "threshold",
        "kept acc.",
        "coverage",
    ):
        table.add_column(col)
    for c in summary.get("clusters", []):
        cand = next((x for x in c.get("candidates", []) if x.get("promoted")), None)
        if cand is None and c.get("candidates"):
            cand = c["candidates"][0]
        test = (cand or {}).get("test") or {}
        table.add_row(
            c["name"][:40],
            str(c["size"]),
            f"{c.get('share_calls', 0):.1%}",
            c.get("shape", ""),
            c.get("status", ""),
            (cand or {}).get("kind", "–"),
            "–" if not cand or cand.get("threshold") is None else f"{cand['threshold']:.3f}",
            "–" if test.get("kept_accuracy") is None else f"{test['kept_accuracy']:.1%}",
            "–" if test.get("coverage") is None else f"{test['coverage']:.1%}",
        )
    console().print(table)
    cur = summary.get("curation") or {}
    dropped = ", ".join(f"{k} {v}" for k, v in (cur.get("dropped") or {}).items()) or "nothing"
    console().print(f"curation: kept {cur.get('kept', 0)} of {cur.get('total', 0)}; dropped: {dropped}")
    p = summary.get("projection") or {}
    if p:
        console().print(
            f"projected: {p.get('share_small', 0):.1%} of calls served small, "
            f"${p.get('monthly_saved_usd', 0):,.2f} saved per month "
            f"of ${p.get('monthly_cost_before', 0):,.2f}"
        )


def report(
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="Where to write the HTML report."),
) -> None:
    """Write the report of the latest flywheel run (HTML with plots, and the same numbers as JSON)."""
    from smallfleet.flywheel.pipeline import latest_summary
    from smallfleet.report.html import write_report
    from smallfleet.store.trace_store import TraceStore

    summary = latest_summary(TraceStore(settings().store.url))
    if summary is None:
        console().print("No flywheel run yet: smallfleet flywheel run")
        raise typer.Exit(1)
    html, js = write_report(summary, out)
    print_summary(summary)
    console().print(f"\nReport: {html} (numbers: {js})")


def register(app: typer.Typer) -> None:
    app.add_typer(flywheel_app, name="flywheel")
    app.command()(report)
