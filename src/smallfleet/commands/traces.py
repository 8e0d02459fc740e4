"""``smallfleet traces import|export|show|list``: move traces in and out of the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from smallfleet.commands._common import console, fail, settings, store_label

traces_app = typer.Typer(
    help="Import, export, list and show recorded traces.", no_args_is_help=True, rich_markup_mode=None
)

_BATCH = 500


def _open_store(create: bool = False):  # type: ignore[no-untyped-def]
    from smallfleet.store import TraceStore

    s = settings()
    return TraceStore(s.store.url, create=create, echo=s.store.echo)


def _write(store: Any, records: list[Any], bad: list[tuple[int, str]]) -> int:
    """Write a batch; the records the store refuses are listed as bad lines (by trace id)."""
    refused = store.write_traces(records)
    bad.extend((0, f"trace {r.id} refused by the store: {why}") for r, why in refused)
    return len(records) - len(refused)


@traces_app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A JSONL file of traces."),
    workload: str | None = typer.Option(
        None, "--workload", "-w", help="Workload name for every imported trace (else each line's own)."
    ),
    batch_input: Path | None = typer.Option(
        None,
        "--batch-input",
        exists=True,
        dir_okay=False,
        help="The OpenAI Batch API input file whose requests FILE (a batch output file) answers.",
    ),
    show_bad: int = typer.Option(20, "--show-bad", help="How many bad lines to list."),
) -> None:
    """Import request/response pairs (JSONL), or an OpenAI Batch API output file.

    Each trace is redacted and priced like a live one and stored with route
    "imported". Bad lines are skipped and reported with their line numbers.
    Importing the same file twice stores each trace once.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from smallfleet.store.jsonl import iter_import_file, read_batch_input
    from smallfleet.store.pricing import PriceTable
    from smallfleet.store.redact import Redactor

    s = settings()
    redactor = Redactor(s.redaction)
    prices = PriceTable(s.pricing, s.models)
    requests = read_batch_input(batch_input) if batch_input is not None else None
    store = _open_store(create=True)
    before = store.count_traces()
    bad: list[tuple[int, str]] = []
    imported = unknown_request = 0
    pending = []
    err = console(stderr=True)
    try:
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("import", total=file.stat().st_size)
            for lineno, done, item in iter_import_file(file, batch_requests=requests, workload=workload):
                bar.update(task, completed=done)
                if isinstance(item, str):
                    bad.append((lineno, item))
                    continue
                if item.cost_usd is None:
                    model = item.model_served or item.model_requested
                    item.cost_usd = prices.cost(
                        model, item.input_tokens, item.output_tokens, item.cached_tokens
                    )
                unknown_request += item.request is None
                pending.append(redactor.redact_record(item))
                if len(pending) >= _BATCH:
                    imported += _write(store, pending, bad)
                    pending = []
            if pending:
                imported += _write(store, pending, bad)
        added = store.count_traces() - before
    finally:
        store.close()
    out = console()
    again = f" ({imported - added} were already stored)" if added < imported else ""
    out.print(
        f"Imported {added} new trace(s) from {file} into {store_label(store.url)}{again}.",
        highlight=False,
        soft_wrap=True,
    )
    if unknown_request:
        out.print(
            f"{unknown_request} trace(s) have no request (batch output without --batch-input): "
            "they count in stats but cannot train specialists.",
            highlight=False,
            soft_wrap=True,
        )
    if bad:
        err.print(f"[yellow]{len(bad)} bad line(s) skipped:[/]", highlight=False, soft_wrap=True)
        for lineno, why in bad[:show_bad]:
            where = f"line {lineno}: " if lineno else ""
            err.print(f"  {where}{why}", highlight=False, markup=False, soft_wrap=True)
        if len(bad) > show_bad:
            err.print(f"  … and {len(bad) - show_bad} more", highlight=False, soft_wrap=True)
        if imported == 0:
            fail(f"nothing imported from {file}: every line was bad (above).")


@traces_app.command("export")
def export(
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file (default: standard output)."),
    workload: str | None = typer.Option(None, "--workload", "-w", help="Only this workload."),
    since: str | None = typer.Option(
        None, "--since", help="Only traces newer than this: 24h, 7d, 2025-01-31."
    ),
    until: str | None = typer.Option(None, "--until", help="Only traces older than this."),
    status: str | None = typer.Option(None, "--status", help="Only this status: ok, error, …"),
    route: str | None = typer.Option(None, "--route", help="Only this route (e.g. direct, specialist)."),
) -> None:
    """Export traces as JSONL ({"request", "response", …} per line); `traces import` reads it back."""
    import json
    import sys

    from smallfleet._time import parse_since
    from smallfleet.store.jsonl import record_to_line

    filters = {
        "workload": workload,
        "since": parse_since(since),
        "until": parse_since(until),
        "status": status,
        "route": route,
    }
    store = _open_store()
    n = 0
    try:
        total = store.count_traces(**filters)
        f = open(out, "w", encoding="utf-8") if out is not None else sys.stdout  # noqa: SIM115
        try:
            from rich.progress import track

            rows = store.iter_traces(**filters)
            if out is not None:
                rows = track(rows, total=total, description="exporting", console=console(stderr=True))
            for rec in rows:
                f.write(json.dumps(record_to_line(rec), ensure_ascii=False) + "\n")
                n += 1
        finally:
            if out is not None:
                f.close()
    finally:
        store.close()
    if out is not None:
        console().print(f"Exported {n} trace(s) to {out}.", highlight=False, soft_wrap=True)


@traces_app.command("show")
def show(trace_id: str = typer.Argument(..., help="The trace id (x-smallfleet-trace-id).")) -> None:
    """Print one trace as JSON, with its feedback."""
    import json

    from smallfleet.store.jsonl import record_to_line

    store = _open_store()
    try:
        rec = store.get_trace(trace_id.strip())
        if rec is None:
            fail(f"no trace with id {trace_id!r} in {store_label(store.url)}.")
        data = record_to_line(rec)
        fb = store.get_feedback(rec.id)
        if fb:
            data["feedback"] = fb
    finally:
        store.close()
    console().print_json(json.dumps(data, ensure_ascii=False))


@traces_app.command("list")
def list_(
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many (newest first)."),
    workload: str | None = typer.Option(None, "--workload", "-w"),
    model: str | None = typer.Option(None, "--model", "-m"),
    route: str | None = typer.Option(None, "--route"),
    status: str | None = typer.Option(None, "--status"),
    text: str | None = typer.Option(None, "--text", "-t", help="Substring of the request or response."),
    since: str | None = typer.Option(None, "--since", help="24h, 7d, 2025-01-31, …"),
    before: str | None = typer.Option(None, "--before", help="Page on: the last id of the previous page."),
) -> None:
    """List recent traces, newest first."""
    from datetime import UTC, datetime

    from rich.table import Table

    from smallfleet._time import parse_since

    store = _open_store()
    try:
        rows = store.search_traces(
            text=text,
            workload=workload,
            model=model,
            route=route,
            status=status,
            since=parse_since(since),
            limit=limit,
            before_id=before,
        )
    finally:
        store.close()
    table = Table()
    table.add_column("id", no_wrap=True, min_width=32)  # whole, so it can be pasted into `traces show`
    for col in ("time (UTC)", "workload", "model", "route", "status", "tokens", "ms", "USD"):
        table.add_column(col, justify="right" if col in ("tokens", "ms", "USD") else "left")
    for r in rows:
        table.add_row(
            r.id,
            datetime.fromtimestamp(r.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.workload,
            r.model_served or r.model_requested,
            r.route,
            r.status,
            f"{r.input_tokens}+{r.output_tokens}",
            "-" if r.latency_ms is None else f"{r.latency_ms:.0f}",
            "-" if r.cost_usd is None else f"{r.cost_usd:.6f}",
        )
    console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(traces_app, name="traces")
