"""``smallfleet train`` and ``smallfleet eval``: build a specialist from examples, and measure any model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from smallfleet.commands._common import console, settings

if TYPE_CHECKING:
    from smallfleet.evals.evaluate import Report
    from smallfleet.specialists.base import Example

KIND_HELP = "classifier, extractor, tool_caller, generator, or auto (picked from the examples' output shape)."


def train(
    kind: str = typer.Argument(help=KIND_HELP),
    data: Path = typer.Option(..., "--data", help="examples.jsonl: one {request, response} per line."),
    out: Path = typer.Option(..., "--out", help="The specialist folder to write."),
    base: str | None = typer.Option(
        None, "--base", help="Base model: Hugging Face id or path (default: the bundled encoder)."
    ),
    validation: Path | None = typer.Option(
        None, "--validation", help="Held-out examples.jsonl, used to calibrate confidences."
    ),
) -> None:
    """Train a specialist on the large model's answers and save it to a folder."""
    from smallfleet.errors import UserError
    from smallfleet.specialists.base import specialist_class
    from smallfleet.specialists.catalog import Budget, profile_task, select

    examples = _read(data)
    val = _read(validation) if validation is not None else None
    if kind == "auto":
        profile = profile_task(examples)
        candidates = select(profile, Budget.from_settings(settings()))
        if not candidates:
            raise UserError(
                f"The examples' output is {profile.shape}; no specialist fits it within the budget "
                "(free text needs a generator: set flywheel.cpu_only: false and flywheel.gpu_memory_gb)."
            )
        kind = candidates[0].kind
        console().print(f"output shape: {profile.shape} → {kind} ({candidates[0].reason})")
    cls = specialist_class(kind)
    specialist = cls(base) if base else cls()  # type: ignore[call-arg]
    specialist.fit(examples, val)
    specialist.save(out)
    meta = specialist.meta
    console().print(f"[bold]{kind}[/] trained on {len(examples)} examples → {out}")
    if meta.labels:
        console().print(f"labels: {', '.join(meta.labels)}")
    for k, v in sorted(meta.metrics.items()):
        if isinstance(v, (int, float)):
            console().print(f"  {k}: {v:.4g}")
    console().print(f"Measure it with: smallfleet eval {out} --data <held-out examples.jsonl>")


def _read(path: Path) -> list[Example]:
    from smallfleet.errors import UserError
    from smallfleet.specialists.base import read_examples

    if not path.is_file():
        raise UserError(
            f"{path} does not exist (expected examples.jsonl: one {{request, response}} per line)."
        )
    examples = read_examples(path)
    if not examples:
        raise UserError(f"{path} holds no examples.")
    return examples


def eval_(
    model: str = typer.Argument(help="A configured model alias, or a specialist folder."),
    data: Path = typer.Option(..., "--data", help="examples.jsonl with the reference answers."),
    out: Path | None = typer.Option(None, "--out", help="Write the full report here as JSON."),
    shape: str | None = typer.Option(
        None, "--shape", help="label, json, tool_call or text (default: read from the examples)."
    ),
    judge: str | None = typer.Option(None, "--judge", help="Model alias that grades free-text answers."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Parallel requests to a remote model."),
) -> None:
    """Score a model on examples: accuracy, latency, cost, and coverage at 90/95/99% accuracy."""
    import asyncio

    from rich.table import Table

    from smallfleet.errors import UserError
    from smallfleet.evals.evaluate import evaluate, summary_rows
    from smallfleet.evals.judge import Judge
    from smallfleet.models.registry import ModelRegistry

    if shape not in (None, "label", "json", "tool_call", "text"):
        raise UserError(f"--shape must be label, json, tool_call or text, not {shape!r}.")
    examples = _read(data)
    s = settings()
    registry = ModelRegistry(s)
    price = None
    path = Path(model)
    if (path / "specialist.json").is_file():
        from smallfleet.specialists.base import SpecialistChatModel, load_specialist

        chat_model = SpecialistChatModel(load_specialist(path), name=path.name)
        usd_per_hour = s.pricing.local_usd_per_hour or None
    else:
        from smallfleet.store.pricing import PriceTable

        chat_model = registry.get(model)  # unknown alias: ModelNotFound with "did you mean"
        price = PriceTable(s.pricing, s.models).price(model)
        usd_per_hour = None
    judge_obj = Judge(registry.get(judge)) if judge else None

    async def run() -> Report:
        try:
            with console().status(f"evaluating {model} on {len(examples)} examples"):
                return await evaluate(
                    chat_model,
                    examples,
                    shape=shape,  # type: ignore[arg-type]
                    judge=judge_obj,
                    concurrency=concurrency,
                    price=price,
                    usd_per_hour=usd_per_hour,
                )
        finally:
            await registry.aclose()

    report = asyncio.run(run())
    table = Table(title=f"eval: {report.model}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary_rows(report):
        table.add_row(name, value)
    console().print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.to_json())
        console().print(f"report: {out}")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command(name="eval")(eval_)
