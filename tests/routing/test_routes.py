from __future__ import annotations

from pathlib import Path

import pytest

from smallfleet.errors import UserError
from smallfleet.routing.routes import Route, RouteStore, parse_mode
from smallfleet.store.trace_store import TraceStore


@pytest.fixture(params=["sqlite", "postgres"])
def route_store(request: pytest.FixtureRequest, tmp_path: Path) -> RouteStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        url = request.getfixturevalue("pg_url")
        import sqlalchemy as sa

        eng = sa.create_engine(url)
        with eng.begin() as conn:
            for t in ("routes", "route_events"):
                conn.execute(
                    sa.text(f"DELETE FROM {t}") if sa.inspect(conn).has_table(t) else sa.text("SELECT 1")
                )
        eng.dispose()
    store = TraceStore(url)
    return RouteStore(store.engine)


def _route(name: str = "lookup_order", threshold: float = 0.8, mode: str = "shadow") -> Route:
    return Route(name=name, kind="tool_caller", specialist_path="/tmp/x", threshold=threshold, mode=mode)


def test_parse_mode() -> None:
    assert parse_mode("ON") == ("on", 1.0)
    assert parse_mode("canary:0.25") == ("canary", 0.25)
    assert parse_mode("shadow") == ("shadow", 0.0)
    for bad in ("canary:2", "canary:x", "maybe"):
        with pytest.raises(UserError):
            parse_mode(bad)


def test_promote_versions_mode_and_rollback(route_store: RouteStore) -> None:
    first = route_store.promote(_route(threshold=0.8))
    assert first.version == 1
    second = route_store.promote(_route(threshold=0.7, mode="on"), actor="flywheel")
    assert second.version == 2
    (active,) = route_store.active()
    assert (active.version, active.threshold, active.mode) == (2, 0.7, "on")

    route_store.set_mode("lookup_order", "canary:0.1", actor="alice")
    assert route_store.get("lookup_order").mode == "canary:0.1"
    route_store.set_mode("lookup_order", "off", actor="alice")
    assert route_store.active(serving_only=True) == []

    back = route_store.rollback("lookup_order", actor="bob")
    assert back.version == 1 and route_store.get("lookup_order").threshold == 0.8
    with pytest.raises(UserError, match="no version before 1"):
        route_store.rollback("lookup_order")

    actions = [(e.action, e.actor) for e in route_store.events("lookup_order")]
    assert actions == [
        ("rollback", "bob"),
        ("set-mode", "alice"),
        ("set-mode", "alice"),
        ("promote", "flywheel"),
        ("promote", "flywheel"),
    ]


def test_unknown_route_suggests(route_store: RouteStore) -> None:
    route_store.promote(_route(name="track_shipment"))
    with pytest.raises(UserError, match="Did you mean 'track_shipment'"):
        route_store.get("track_shipmnt")
    with pytest.raises(UserError):
        route_store.set_mode("track_shipment", "sometimes")
