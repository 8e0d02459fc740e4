"""``smallfleet``: the command line.

Nothing heavy is imported here: each command group lives in
``smallfleet.commands.<name>`` and imports what it needs when it runs.
"""

from __future__ import annotations

import importlib
import sys

import typer

from smallfleet.__about__ import __version__
from smallfleet.commands._common import console, set_config_path

#: Command modules, each with ``register(app)``.
COMMAND_MODULES = [
    "smallfleet.commands.core",
    "smallfleet.commands.specialists",
    "smallfleet.commands.traces",
    "smallfleet.commands.stats",
    "smallfleet.commands.routes",
    "smallfleet.commands.gateway",
    "smallfleet.commands.keys",
    "smallfleet.commands.agents",
    "smallfleet.commands.flywheel",
    "smallfleet.commands.demo",
]

app = typer.Typer(
    name="smallfleet",
    help="Large models for reasoning, small models for execution: capture an agent's LLM calls, "
    "distil its routine subtasks into small specialists, and route them there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smallfleet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    config: str | None = typer.Option(
        None, "--config", "-c", envvar="SMALLFLEET_CONFIG", help="Path of smallfleet.yaml."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    set_config_path(config)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Entry point: run the CLI, turning smallfleet's own errors into one clear line."""
    from smallfleet._runtime import configure_process
    from smallfleet.errors import SmallfleetError

    configure_process()  # this process is smallfleet's own: before any command runs torch
    try:
        app()
    except SmallfleetError as e:
        from rich.markup import escape

        # escape: messages hold brackets ("smallfleet[local]", "messages[0]") that are not markup
        line = f"[bold red]error:[/] {escape(e.message)}"
        console(stderr=True).print(line, highlight=False, soft_wrap=True)
        sys.exit(2 if not hasattr(e, "status") else 1)


if __name__ == "__main__":
    main()
