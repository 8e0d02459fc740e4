"""``smallfleet routes list | show | set-mode | rollback | rename``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

from smallfleet.commands._common import console, existing_store, fail, settings, store_label

if TYPE_CHECKING:
    from smallfleet.routing.routes import Route, RouteStore

routes_app = typer.Typer(
    help="Inspect and change the routes that send task types to specialists.", no_args_is_help=True
)


def _store(missing_ok: bool = False) -> RouteStore | None:
    """The routes of the configured store, never creating it: None (``missing_ok``) or an error
    where it does not exist."""
    from smallfleet.routing.routes import RouteStore

    store = existing_store()
    if store is not None:
        return RouteStore(store.engine)
    if missing_ok:
        return None
    fail(
        f"no trace store at {store_label(settings().store.url)}, so no routes: "
        "run `smallfleet flywheel run` on recorded traffic first (or point store.url at your store)."
    )


def _routes() -> RouteStore:
    store = _store()
    assert store is not None
    return store


@dataclass(frozen=True)
class _Promise:
    """What a route promised at promotion: at least ``lower`` (``point`` measured on ``kept``)."""

    lower: float
    point: float
    kept: int
    confidence: float


def _promise(route: Route) -> _Promise | None:
    """``route``'s promise; None when it has no test figures.

    Routes promoted before promises were stored get the bound recomputed from their test
    figures, at 95% confidence.
    """
    from smallfleet.evals.coverage import clopper_pearson_lower

    m = route.metrics or {}
    point, confidence = m.get("kept_accuracy"), float(m.get("confidence") or 0.95)
    if point is None:
        return None
    kept = m.get("kept")
    if kept is None:
        kept = round((m.get("coverage") or 0.0) * (m.get("n") or 0))
    right = m.get("kept_correct")
    if right is None:
        right = round(point * kept)
    lower = m.get("kept_accuracy_lower")
    if lower is None and kept:
        lower = clopper_pearson_lower(int(right), int(kept), confidence)
    return _Promise(float(lower or 0.0), float(point), int(kept), confidence)


def _delivered(store: RouteStore, route: Route) -> tuple[int, int]:
    """(agreed, checked): the gateway's checks of ``route``'s version since its promotion.

    Guard checks (answers served small, also sent to the large model) and shadow checks
    the specialist was confident enough to have served: its kept answers on live traffic.
    """
    import sqlalchemy as sa

    from smallfleet.store.fleet_tables import route_checks as rc

    agreed = sa.func.coalesce(sa.func.sum(sa.case((rc.c.agree.is_(True), 1), else_=0)), 0)
    q = sa.select(sa.func.count(), agreed).where(
        rc.c.route == route.name,
        rc.c.version == route.version,
        sa.or_(rc.c.confidence.is_(None), rc.c.confidence >= route.threshold),
    )
    with store.engine.connect() as conn:
        n, k = conn.execute(q).one()
    return int(k), int(n)


def _promised_text(promise: _Promise | None) -> str:
    return "-" if promise is None else f"≥{promise.lower:.1%} ({promise.point:.1%} of {promise.kept})"


def _delivered_text(promise: _Promise | None, agreed: int, checked: int) -> str:
    """Delivered agreement with its interval, flagged where even its upper bound is below the promise."""
    from smallfleet.evals.coverage import clopper_pearson_lower, clopper_pearson_upper

    if not checked:
        return "-"
    confidence = promise.confidence if promise else 0.95
    lo = clopper_pearson_lower(agreed, checked, confidence)
    hi = clopper_pearson_upper(agreed, checked, confidence)
    text = f"{agreed / checked:.1%} of {checked} ({lo:.1%}-{hi:.1%})"
    if promise is not None and hi < promise.lower:
        text += " [red]below the promise[/]"
    return text


def _when(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@routes_app.command("list")
def list_routes(
    all_versions: bool = typer.Option(False, "--all", help="Show every version, not only the active."),
) -> None:
    """The active route of every task type: mode, specialist, threshold, promised and delivered.

    Promised: the kept answers' accuracy on the test split, as the lower bound at the
    flywheel's confidence (the point estimate and the kept count in brackets). Delivered:
    agreement with the large model in the gateway's guard and confident shadow checks
    of that version, with its interval; "below the promise" where even its upper bound is.
    """
    from rich.table import Table

    store = _store(missing_ok=True)
    rows = [] if store is None else store.active()
    if store is not None and all_versions:
        rows = [v for r in rows for v in store.versions(r.name)]
    if store is None or not rows:
        console().print("No routes yet. Run the flywheel to promote specialists: smallfleet flywheel run")
        return
    table = Table(title="routes")
    for col in (
        "route",
        "version",
        "mode",
        "kind",
        "threshold",
        "promised",
        "delivered",
        "coverage",
        "workload",
        "created",
    ):
        table.add_column(col)
    for r in rows:
        cov = (r.metrics or {}).get("coverage")
        promise = _promise(r)
        table.add_row(
            r.name,
            str(r.version) + ("" if r.active else " (inactive)"),
            r.mode,
            r.kind,
            f"{r.threshold:.3f}",
            _promised_text(promise),
            _delivered_text(promise, *_delivered(store, r)),
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
    """One route: what it promised and delivers, its versions and its history of events.

    Promised: at least the lower bound of its kept held-out answers' accuracy, with the
    flywheel's confidence (and the point estimate). Delivered: agreement with the large
    model in the gateway's guard checks and confident shadow checks since this version
    was promoted, with its interval, flagged where even its upper bound is below the promise.
    """
    import json

    store = _routes()
    route = store.get(name)
    console().print(
        f"[bold]{route.name}[/] v{route.version} mode={route.mode} kind={route.kind} "
        f"threshold={route.threshold:.3f}"
    )
    console().print(f"specialist: {route.specialist_path}")
    promise = _promise(route)
    if promise is None:
        console().print("promised: - (no test figures)")
    else:
        console().print(
            f"promised: at least {promise.lower:.1%} with {promise.confidence:.0%} confidence "
            f"(point estimate {promise.point:.1%} on {promise.kept} kept held-out answers)"
        )
    agreed, checked = _delivered(store, route)
    if checked:
        console().print(
            f"delivered since v{route.version}: {_delivered_text(promise, agreed, checked)} "
            "(agreement with the large model in guard checks and confident shadow checks)"
        )
    else:
        console().print(f"delivered: not measured yet (no guard or shadow checks of v{route.version})")
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
    route = _routes().set_mode(name, mode, actor=actor)
    console().print(f"{route.name} v{route.version} is now {route.mode}")


@routes_app.command("rollback")
def rollback(
    name: str = typer.Argument(help="Route name."),
    actor: str = typer.Option("cli", "--as", help="Who is making the change (recorded)."),
) -> None:
    """Re-activate the version before the active one."""
    route = _routes().rollback(name, actor=actor)
    console().print(f"{route.name} is back on v{route.version} ({route.mode})")


#: A route name: what can be read aloud and typed in a shell without quotes.
_NAME = r"[a-z0-9][a-z0-9._-]{0,199}"


@routes_app.command("rename")
def rename(
    old: str = typer.Argument(help="The route's current name."),
    new: str = typer.Argument(help="Its new name: lower-case letters, digits, '-', '_' or '.'."),
    actor: str = typer.Option("cli", "--as", help="Who is making the change (recorded)."),
) -> None:
    """Rename a route, every version and its history; refused where NEW is taken.

    The gateway serves it under the new name once it reloads its routes, and the flywheel
    keeps the name in later runs (it names a task type after the route that claims its traffic).
    """
    import re

    from smallfleet.commands._routes import rename_route

    if not re.fullmatch(_NAME, new):
        fail(f"{new!r} is not a route name: use lower-case letters, digits, '-', '_' or '.' (e.g. refund).")
    versions = rename_route(_routes(), old, new, actor=actor)
    console().print(
        f"renamed {old} → {new} ({versions} version{'s' if versions != 1 else ''})", highlight=False
    )


def register(app: typer.Typer) -> None:
    app.add_typer(routes_app, name="routes")
