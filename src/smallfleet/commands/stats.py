"""``smallfleet stats``: calls, tokens, cost, latency and errors per workload, model or route."""

from __future__ import annotations

import typer

from smallfleet.commands._common import console, fail, settings


def stats(
    since: str = typer.Option("24h", "--since", help="Window: 30m, 24h, 7d, a date, or 'all'."),
    by: str = typer.Option("workload", "--by", help="Group by: workload, model, route, status or key."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """A table of calls, tokens, cost, p50/p95 latency and error rate from the trace store."""
    import json

    from rich.table import Table

    from smallfleet._time import parse_since
    from smallfleet.store import TraceStore
    from smallfleet.store.trace_store import STATS_GROUPS

    if by not in STATS_GROUPS:
        fail(f"--by must be one of: {', '.join(STATS_GROUPS)}", code=2)
    start = parse_since(since)
    s = settings()
    store = TraceStore(s.store.url, create=False)
    try:
        rows = store.stats(since=start, by=by)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    window = "all time" if start is None else f"last {since}"
    table = Table(title=f"smallfleet stats by {by} ({window})")
    for col in (by, "calls", "errors", "input tok", "output tok", "cost USD", "p50 ms", "p95 ms"):
        table.add_column(col, justify="left" if col == by else "right")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}"

    for r in rows:
        table.add_row(
            str(r["group"]),
            f"{r['calls']:,}",
            f"{r['errors']:,} ({r['error_rate']:.1%})",
            f"{r['input_tokens']:,}",
            f"{r['output_tokens']:,}",
            "-" if r["cost_usd"] is None else f"{r['cost_usd']:,.4f}",
            ms(r["p50_ms"]),
            ms(r["p95_ms"]),
        )
    if len(rows) > 1:
        calls = sum(r["calls"] for r in rows)
        errors = sum(r["errors"] for r in rows)
        costs = [r["cost_usd"] for r in rows if r["cost_usd"] is not None]
        table.add_section()
        table.add_row(
            "total",
            f"{calls:,}",
            f"{errors:,} ({errors / calls:.1%})",
            f"{sum(r['input_tokens'] for r in rows):,}",
            f"{sum(r['output_tokens'] for r in rows):,}",
            f"{sum(costs):,.4f}" if costs else "-",
            "",
            "",
        )
    if not rows:
        console().print(f"No traces in the {window}.", highlight=False)
        return
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(stats)
