"""``smallfleet init``, ``smallfleet models``, ``smallfleet chat``."""

from __future__ import annotations

from pathlib import Path

import typer

from smallfleet.commands._common import console, fail, settings


def init(
    path: Path = typer.Argument(Path("smallfleet.yaml"), help="Where to write the example config."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented example smallfleet.yaml."""
    from smallfleet.config import EXAMPLE_CONFIG

    if path.exists() and not force:
        fail(f"{path} exists; use --force to overwrite it.")
    path.write_text(EXAMPLE_CONFIG)
    console().print(f"Wrote {path}. Edit the models section, then try: smallfleet models")


def models() -> None:
    """List the configured model aliases and what each can do."""
    from rich.table import Table

    from smallfleet.models.registry import ModelRegistry

    s = settings()
    reg = ModelRegistry(s)
    table = Table(title=f"models ({s.source or 'no config file'})")
    for col in ("alias", "backend", "target", "streams", "tools", "json_schema", "fallbacks"):
        table.add_column(col)
    for alias in reg.aliases():
        cfg = reg.config(alias)
        assert cfg is not None
        caps = reg.capabilities(alias)
        target = getattr(cfg, "base_url", None) or getattr(cfg, "model", None) or getattr(cfg, "path", "")
        if cfg.backend == "openai":
            target = f"{cfg.model or alias} @ {cfg.base_url}"  # type: ignore[union-attr]
        table.add_row(
            alias,
            cfg.backend,
            str(target),
            *("yes" if caps[k] else "no" for k in ("streams", "tools", "json_schema")),
            ", ".join(cfg.fallbacks),
        )
    if not reg.aliases():
        console().print("No models configured. Write a config with: smallfleet init")
        return
    console().print(table)


def chat(
    alias: str = typer.Argument(help="Model alias from the config."),
    prompt: str = typer.Argument(help="The user message."),
    system: str | None = typer.Option(None, "--system", help="A system message."),
    json_schema: Path | None = typer.Option(
        None,
        "--json-schema",
        exists=True,
        dir_okay=False,
        help="Answer as JSON valid against this schema file.",
    ),
    stream: bool = typer.Option(False, "--stream", help="Print tokens as they arrive."),
    max_tokens: int | None = typer.Option(None, "--max-tokens"),
) -> None:
    """Send one chat request to a model and print the answer."""
    import asyncio
    import json

    from smallfleet.models.registry import ModelRegistry
    from smallfleet.types import ChatRequest

    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    body: dict[str, object] = {"model": alias, "messages": messages}
    if json_schema is not None:
        schema = json.loads(json_schema.read_text())
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": json_schema.stem, "schema": schema},
        }
    if max_tokens:
        body["max_tokens"] = max_tokens
    request = ChatRequest.parse(body)
    reg = ModelRegistry(settings())

    async def run() -> None:
        model = reg.get(alias)
        try:
            if stream:
                async for chunk in model.stream(request):
                    for c in chunk.choices:
                        if c.delta.content:
                            typer.echo(c.delta.content, nl=False)
                typer.echo()
                return
            resp = await model.complete(request)
            msg = resp.message
            if msg.tool_calls:
                for call in msg.tool_calls:
                    typer.echo(f"{call.function.name}({call.function.arguments})")
            else:
                typer.echo(msg.content or "")
            if resp.usage:
                console(stderr=True).print(
                    f"[dim]{resp.usage.prompt_tokens} in, {resp.usage.completion_tokens} out[/]"
                )
        finally:
            await reg.aclose()

    asyncio.run(run())


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(models)
    app.command()(chat)
