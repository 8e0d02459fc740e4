"""``smallfleet routes list | show | set-mode | rollback``."""

from __future__ import annotations

import typer

from smallfleet.commands._common import console, settings

routes_app = typer.Typer(
    help="Inspect and change the routes that send task types to specialists.", no_args_is_help=True
)


def _store():  # type: ignore[no-untyped-def]
    from smallfleet.routing.routes import RouteStore
    from smallfleet.store.trace_store import TraceStore

    return RouteStore(TraceStore(settings().store.url).engine)


def _when(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@routes_app.command("list")
def list_routes(
    all_versions: bool = typer.Option(False, "--all", help="Show every version, not only the active."),
) -> None:
    """The active route of every task type: mode, specialist, threshold, test figures."""
    from rich.table import Table

    store = _store()
    rows = store.active() if not all_versions else [v for r in store.active() for v in store.versions(r.name)]
    if not rows:
        console().print("No routes yet. Run the flywheel to promote specialists: smallfleet flywheel run")
        return
    table = Table(title="routes")
    for col in (
        "route",
        "version",
        "mode",
        "kind",
        "threshold",
        "kept accuracy",
        "coverage",
        "workload",
        "created",
    ):
        table.add_column(col)
    for r in rows:
        m = r.metrics or {}
        acc, cov = m.get("kept_accuracy"), m.get("coverage")
        table.add_row(
            r.name,
            str(r.version) + ("" if r.active else " (inactive)"),
            r.mode,
            r.kind,
            f"{r.threshold:.3f}",
            "-" if acc is None else f"{acc:.1%}",
            "-" if cov is None else f"{cov:.1%}",
            r.workload or "*",
            _when(r.created_at),
        )
    console().print(table)
    demotions = [e for e in store.events(limit=50) if e.action == "guard-demote"]
    for e in demotions[:5]:
        console().print(
            f"[yellow]guard[/] set {e.route} v{e.version} to {e.detail.get('new')} at {_when(e.at)}: "
            f"{e.detail.get('reason') or ''}"
        )


@routes_app.command("show")
def show(name: str = typer.Argument(help="Route name.")) -> None:
    """One route: its versions and its history of events."""
    import json

    store = _store()
    route = store.get(name)
    console().print(
        f"[bold]{route.name}[/] v{route.version} mode={route.mode} kind={route.kind} "
        f"threshold={route.threshold:.3f}"
    )
    console().print(f"specialist: {route.specialist_path}")
    if route.metrics:
        console().print("metrics: " + json.dumps(route.metrics, sort_keys=True, default=str)[:2000])
    console().print("\n[bold]versions[/]")
    for v in store.versions(name):
        console().print(
            f"  v{v.version} {'active' if v.active else '      '} {v.mode:<12} {v.kind} "
            f"threshold={v.threshold:.3f} {_when(v.created_at)}"
        )
    console().print("\n[bold]events[/]")
    for e in store.events(name):
        console().print(
            f"  {_when(e.at)} {e.action:<13} v{e.version} by {e.actor} {json.dumps(e.detail, default=str)}"
        )


@routes_app.command("set-mode")
def set_mode(
    name: str = typer.Argument(help="Route name."),
    mode: str = typer.Argument(help="off | shadow | canary:P | on"),
    actor: str = typer.Option("cli", "--as", help="Who is making the change (recorded)."),
) -> None:
    """Change the mode of a route's active version."""
    route = _store().set_mode(name, mode, actor=actor)
    console().print(f"{route.name} v{route.version} is now {route.mode}")


@routes_app.command("rollback")
def rollback(
    name: str = typer.Argument(help="Route name."),
    actor: str = typer.Option("cli", "--as", help="Who is making the change (recorded)."),
) -> None:
    """Re-activate the version before the active one."""
    route = _store().rollback(name, actor=actor)
    console().print(f"{route.name} is back on v{route.version} ({route.mode})")


def register(app: typer.Typer) -> None:
    app.add_typer(routes_app, name="routes")
