"""Versioned routes: which task type goes to which specialist, at what threshold, in what mode.

A route is named after the task cluster it serves. Each promotion adds a new
version and makes it the active one; ``rollback`` re-activates the version before;
``set_mode`` changes the mode of the active version in place. Every change is
recorded as a route event with who made it and when, so ``smallfleet routes show``
and the dashboard can tell the story.

Modes: ``off`` (never used), ``shadow`` (the large model answers; the specialist
answers too, off the hot path, and agreement is recorded), ``canary:P`` (a
fraction P of matched requests is served small), ``on``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from smallfleet.errors import UserError
from smallfleet.store.fleet_tables import route_checks, route_events, routes

__all__ = ["Route", "RouteEvent", "RouteStore", "parse_mode"]


def parse_mode(mode: str) -> tuple[str, float]:
    """``"on"`` → ("on", 1.0); ``"canary:0.1"`` → ("canary", 0.1); raises UserError on nonsense."""
    mode = mode.strip().lower()
    if mode in ("off", "shadow"):
        return mode, 0.0
    if mode == "on":
        return mode, 1.0
    if mode.startswith("canary"):
        _, _, frac = mode.partition(":")
        try:
            p = float(frac) if frac else 0.1
        except ValueError:
            p = -1.0
        if 0.0 <= p <= 1.0:
            return "canary", p
    raise UserError(f"Unknown route mode {mode!r}: use off, shadow, canary:P (0 ≤ P ≤ 1) or on.")


@dataclass
class Route:
    name: str
    kind: str
    specialist_path: str
    threshold: float
    mode: str = "shadow"
    version: int = 0
    workload: str | None = None
    base_model: str | None = None
    labels: list[str] | None = None
    matcher: dict[str, Any] | None = None
    active: bool = True
    created_at: float = field(default_factory=time.time)
    run_id: str | None = None
    data_hash: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Route:
        m = row._mapping
        return cls(**{k: m[k] for k in cls.__dataclass_fields__ if k in m and m[k] is not None})


@dataclass
class RouteEvent:
    route: str
    version: int | None
    at: float
    actor: str
    action: str
    detail: dict[str, Any]


class RouteStore:
    """Routes and their events, in the same database as the traces."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------ reading

    def active(self, *, serving_only: bool = False) -> list[Route]:
        """The active version of every route (``serving_only``: not in mode ``off``)."""
        q = sa.select(routes).where(routes.c.active.is_(True)).order_by(routes.c.name)
        if serving_only:
            q = q.where(routes.c.mode != "off")
        with self.engine.connect() as conn:
            return [Route.from_row(r) for r in conn.execute(q)]

    def get(self, name: str, version: int | None = None) -> Route:
        q = sa.select(routes).where(routes.c.name == name)
        q = (
            q.where(routes.c.version == version)
            if version is not None
            else q.where(routes.c.active.is_(True))
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            known = [r.name for r in self.active()]
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"No route {name!r}{'' if version is None else f' version {version}'}.{hint}")
        return Route.from_row(row)

    def versions(self, name: str) -> list[Route]:
        q = sa.select(routes).where(routes.c.name == name).order_by(routes.c.version)
        with self.engine.connect() as conn:
            return [Route.from_row(r) for r in conn.execute(q)]

    def events(self, name: str | None = None, limit: int = 200) -> list[RouteEvent]:
        q = sa.select(route_events).order_by(route_events.c.at.desc(), route_events.c.id.desc()).limit(limit)
        if name is not None:
            q = q.where(route_events.c.route == name)
        with self.engine.connect() as conn:
            return [
                RouteEvent(r.route, r.version, r.at, r.actor, r.action, r.detail or {})
                for r in conn.execute(q)
            ]

    # ------------------------------------------------------------ changing

    def _event(
        self, conn: sa.Connection, route: str, version: int | None, actor: str, action: str, **detail: Any
    ) -> None:
        conn.execute(
            sa.insert(route_events).values(
                route=route, version=version, at=time.time(), actor=actor, action=action, detail=detail
            )
        )

    def promote(self, route: Route, actor: str = "flywheel") -> Route:
        """Add ``route`` as the newest version of its name and make it the active one."""
        parse_mode(route.mode)
        with self.engine.begin() as conn:
            last = conn.execute(
                sa.select(sa.func.max(routes.c.version)).where(routes.c.name == route.name)
            ).scalar()
            route.version = int(last or 0) + 1
            route.active = True
            route.created_at = time.time()
            conn.execute(sa.update(routes).where(routes.c.name == route.name).values(active=False))
            values = {k: getattr(route, k) for k in Route.__dataclass_fields__}
            conn.execute(sa.insert(routes).values(**values))
            self._event(
                conn,
                route.name,
                route.version,
                actor,
                "promote",
                mode=route.mode,
                kind=route.kind,
                threshold=route.threshold,
                run_id=route.run_id,
            )
        return route

    def set_mode(self, name: str, mode: str, actor: str = "cli", reason: str | None = None) -> Route:
        """Change the mode of the active version of ``name``."""
        kind, p = parse_mode(mode)
        normal = f"canary:{p:g}" if kind == "canary" else kind
        current = self.get(name)
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(routes)
                .where(routes.c.name == name, routes.c.version == current.version)
                .values(mode=normal)
            )
            action = "guard-demote" if actor == "guard" else "set-mode"
            self._event(
                conn, name, current.version, actor, action, old=current.mode, new=normal, reason=reason
            )
        current.mode = normal
        return current

    def rollback(self, name: str, actor: str = "cli") -> Route:
        """Re-activate the version before the active one."""
        current = self.get(name)
        previous = [r for r in self.versions(name) if r.version < current.version]
        if not previous:
            raise UserError(f"Route {name!r} has no version before {current.version} to roll back to.")
        target = previous[-1]
        with self.engine.begin() as conn:
            conn.execute(sa.update(routes).where(routes.c.name == name).values(active=False))
            conn.execute(
                sa.update(routes)
                .where(routes.c.name == name, routes.c.version == target.version)
                .values(active=True)
            )
            self._event(conn, name, target.version, actor, "rollback", from_version=current.version)
        target.active = True
        return target

    # ------------------------------------------------------------ agreement

    def record_check(
        self,
        name: str,
        version: int | None,
        kind: str,
        agree: bool,
        confidence: float | None = None,
        trace_id: str | None = None,
    ) -> None:
        """Record one comparison of the specialist with the large model (``shadow`` or ``guard``)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(route_checks).values(
                    route=name,
                    version=version,
                    trace_id=trace_id,
                    at=time.time(),
                    kind=kind,
                    agree=bool(agree),
                    confidence=confidence,
                )
            )

    def agreement(
        self, name: str, version: int | None = None, kind: str | None = None, window: int = 200
    ) -> tuple[float | None, int]:
        """Agreement over the last ``window`` checks of ``name`` (and ``version``/``kind``): (rate, n)."""
        q = sa.select(route_checks.c.agree).where(route_checks.c.route == name)
        if version is not None:
            q = q.where(route_checks.c.version == version)
        if kind is not None:
            q = q.where(route_checks.c.kind == kind)
        q = q.order_by(route_checks.c.at.desc(), route_checks.c.id.desc()).limit(window)
        with self.engine.connect() as conn:
            flags = [bool(r[0]) for r in conn.execute(q)]
        return (sum(flags) / len(flags) if flags else None), len(flags)
