"""``smallfleet flywheel run`` and ``smallfleet report``."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from smallfleet.commands._common import console, existing_store, fail, settings, store_label

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
    """Curate, cluster, select, train, evaluate and promote, on the traces in the store.

    Each task type needs at least min_examples clean calls (flywheel.min_examples, 100) to
    get a specialist. With no traces at all, it exits with status 1 and says how to get some.
    """
    from smallfleet._time import parse_since
    from smallfleet.flywheel.pipeline import FlywheelOptions, run_flywheel
    from smallfleet.report.html import write_report
    from smallfleet.routing.routes import parse_mode

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
    store = existing_store()
    found = 0 if store is None else store.count_traces(workload=opts.workload, since=opts.since)
    if not found:
        _no_traces(s.store.url, workload, since, opts.min_examples)
    assert store is not None
    result = run_flywheel(store, opts)
    html, js = write_report(result.to_dict(), out)
    print_summary(result.to_dict())
    console().print(f"\nReport: {html} (numbers: {js})")


def _no_traces(url: str, workload: str | None, since: str | None, min_examples: int) -> NoReturn:
    which = " ".join(
        x for x in (f"of workload {workload!r}" if workload else "", f"since {since}" if since else "") if x
    )
    fail(
        f"no traces {which + ' ' if which else ''}in {store_label(url)}, so nothing to learn from. "
        "Record some by pointing your agent's OpenAI client at `smallfleet gateway`, or import logged "
        "calls with `smallfleet traces import FILE.jsonl` (or try the whole loop: `smallfleet demo`). "
        f"Each task type needs at least {min_examples} calls (flywheel.min_examples) to get a specialist."
    )


def print_summary(summary: dict) -> None:  # type: ignore[type-arg]
    """The terminal table of a flywheel run."""
    from rich.table import Table

    table = Table(title=f"flywheel run {summary.get('run_id', '')}", caption="task type: its route's name")
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
            c.get("key") or c["name"][:40],
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
    from smallfleet.report.outcomes import not_promoted_reasons, nothing_promoted_hint

    hint = nothing_promoted_hint(summary)
    reasons = not_promoted_reasons(summary)
    if reasons:
        console().print("not promoted:" if hint is None else "[bold]nothing promoted[/]:", highlight=False)
        for name, why in reasons[:12]:
            console().print(f"  {name}: {why}", highlight=False, soft_wrap=True)
        if len(reasons) > 12:
            console().print(f"  … and {len(reasons) - 12} more (see the report)", highlight=False)
    if hint is not None:
        console().print(f"why: {hint}", highlight=False, soft_wrap=True)
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

    store = existing_store()
    summary = None if store is None else latest_summary(store)
    if summary is None:
        fail(f"no flywheel run in {store_label(settings().store.url)} yet: run `smallfleet flywheel run`.")
    html, js = write_report(summary, out)
    print_summary(summary)
    console().print(f"\nReport: {html} (numbers: {js})")


def register(app: typer.Typer) -> None:
    app.add_typer(flywheel_app, name="flywheel")
    app.command()(report)
