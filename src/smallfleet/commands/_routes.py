"""Renaming a route: every version, its events and its checks move to the new name in one transaction.

(:class:`~smallfleet.routing.routes.RouteStore` has no rename of its own; this is the
CLI's, written against the same tables.)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from smallfleet.routing.routes import RouteStore

__all__ = ["rename_route"]


def rename_route(store: RouteStore, old: str, new: str, actor: str = "cli") -> int:
    """Rename route ``old`` to ``new`` (all versions, events and checks); returns how many versions moved.

    Raises :class:`~smallfleet.errors.UserError` where ``old`` does not exist (with "did you
    mean") or ``new`` is taken by any version of another route.
    """
    from smallfleet.errors import UserError
    from smallfleet.store.fleet_tables import route_checks, route_events, routes

    current = store.get(old)  # UserError, with "did you mean", when there is no such route
    if new == old:
        raise UserError(f"Route {old!r} is already called that.")
    with store.engine.begin() as conn:
        taken = conn.execute(sa.select(sa.func.count()).where(routes.c.name == new)).scalar()
        if taken:
            raise UserError(
                f"A route called {new!r} exists already; choose another name (smallfleet routes list)."
            )
        moved = conn.execute(sa.update(routes).where(routes.c.name == old).values(name=new)).rowcount
        conn.execute(sa.update(route_events).where(route_events.c.route == old).values(route=new))
        conn.execute(sa.update(route_checks).where(route_checks.c.route == old).values(route=new))
        conn.execute(
            sa.insert(route_events).values(
                route=new, version=current.version, at=time.time(), actor=actor, action="rename",
                detail={"old": old, "new": new},
            )
        )  # fmt: skip
    return int(moved or 0)
