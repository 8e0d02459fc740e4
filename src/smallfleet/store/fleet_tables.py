"""Tables of the fleet: flywheel runs, the task clusters they found, the candidates
they trained, and the versioned routes (with their events) the router serves.

Like :mod:`smallfleet.store.tables`, these describe the schema as it is now; the
schema itself is created by the migration :func:`m0002_fleet`, which defines its
tables inline, frozen as shipped.
"""

from __future__ import annotations

import sqlalchemy as sa

from smallfleet.store.tables import JSONType, metadata

__all__ = [
    "candidates",
    "clusters",
    "flywheel_runs",
    "m0002_fleet",
    "m0003_route_checks",
    "route_checks",
    "route_events",
    "routes",
]


def _fleet_tables(md: sa.MetaData, json: sa.types.TypeEngine[object]) -> dict[str, sa.Table]:
    runs = sa.Table(
        "flywheel_runs",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("workload", sa.String(200)),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("params", json),
        sa.Column("summary", json),
    )
    clusters = sa.Table(
        "clusters",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("workload", sa.String(200)),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("shape", sa.String(40)),
        sa.Column("status", sa.String(60), nullable=False),
        sa.Column("stats", json),
        sa.Column("profile", json),
    )
    candidates = sa.Table(
        "candidates",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("cluster_id", sa.String(64), nullable=False, index=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("base_model", sa.String(300)),
        sa.Column("path", sa.Text),
        sa.Column("data_hash", sa.String(64)),
        sa.Column("threshold", sa.Float),
        sa.Column("promoted", sa.Boolean, nullable=False),
        sa.Column("metrics", json),
    )
    routes = sa.Table(
        "routes",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("workload", sa.String(200)),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("specialist_path", sa.Text, nullable=False),
        sa.Column("base_model", sa.String(300)),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("labels", json),
        sa.Column("matcher", json),
        sa.Column("mode", sa.String(40), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("data_hash", sa.String(64)),
        sa.Column("metrics", json),
        sa.UniqueConstraint("name", "version", name="uq_routes_name_version"),
    )
    events = sa.Table(
        "route_events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("route", sa.String(200), nullable=False, index=True),
        sa.Column("version", sa.Integer),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("detail", json),
    )
    return {t.name: t for t in (runs, clusters, candidates, routes, events)}


def m0002_fleet(conn: sa.Connection) -> None:
    """Migration 0002: the fleet's tables (frozen as shipped)."""
    from sqlalchemy.dialects.postgresql import JSONB

    md = sa.MetaData()
    _fleet_tables(md, sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql"))
    md.create_all(conn)


def _route_checks(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        "route_checks",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("agree", sa.Boolean, nullable=False),
        sa.Column("confidence", sa.Float),
        sa.Index("ix_route_checks_route", "route", "at"),
    )


def m0003_route_checks(conn: sa.Connection) -> None:
    """Migration 0003: shadow and guard comparisons with the large model (frozen as shipped)."""
    md = sa.MetaData()
    _route_checks(md)
    md.create_all(conn)


_t = _fleet_tables(metadata, JSONType)
route_checks = _route_checks(metadata)
flywheel_runs = _t["flywheel_runs"]
clusters = _t["clusters"]
candidates = _t["candidates"]
routes = _t["routes"]
route_events = _t["route_events"]
