"""``smallfleet keys hash|new``: gateway API keys for ``gateway.keys``."""

from __future__ import annotations

import typer

keys_app = typer.Typer(
    help="Gateway API keys: only their SHA-256 goes into smallfleet.yaml.", no_args_is_help=True
)


@keys_app.command("hash")
def hash_(
    key: str = typer.Argument(help="The key clients will send as 'Authorization: Bearer KEY'."),
) -> None:
    """Print the sha256 line to paste under gateway.keys."""
    from smallfleet.gateway.auth import hash_key

    typer.echo(f'sha256: "{hash_key(key)}"')


@keys_app.command("new")
def new(
    name: str = typer.Argument(help="A name for the key (it appears in traces as key_id)."),
    budget: float | None = typer.Option(None, "--daily-budget", help="USD the key may spend per UTC day."),
    admin: bool = typer.Option(False, "--admin", help="May read /metrics."),
) -> None:
    """Make a random key; print it (once) and the config entry that accepts it."""
    from smallfleet.gateway.auth import hash_key, new_key

    key = new_key()
    entry = f'{{name: {name}, sha256: "{hash_key(key)}"'
    if budget is not None:
        entry += f", daily_budget_usd: {budget:g}"
    if admin:
        entry += ", admin: true"
    entry += "}"
    typer.echo(f"key: {key}")
    typer.echo("add to smallfleet.yaml under gateway.keys:")
    typer.echo(f"  - {entry}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
