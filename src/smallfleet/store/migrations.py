"""The store's schema, grown by an append-only list of named migrations.

Each migration is ``(name, fn(conn))``. They run in order, each once, and their
names are recorded in the ``_migrations`` table. Never edit or reorder a shipped
migration: append a new one (and update :mod:`smallfleet.store.tables` to match).
Migrations define their tables inline, frozen as they were when shipped, so a
later change to ``tables.py`` cannot change what an old migration does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from smallfleet.store.fleet_tables import m0002_fleet, m0003_route_checks
from smallfleet.store.tables import migrations_table

__all__ = ["MIGRATIONS", "Migration", "applied_migrations", "pending_migrations", "run_migrations"]

Migration = tuple[str, Callable[[sa.Connection], None]]

# An arbitrary constant: the PostgreSQL advisory lock that serialises migrations
# when several gateways start at once.
_PG_LOCK_KEY = 0x5F5F_534D_4C46


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _m0001_traces(conn: sa.Connection) -> None:
    md = sa.MetaData()
    traces = sa.Table(
        "traces",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("workload", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(200)),
        sa.Column("model_requested", sa.String(200), nullable=False),
        sa.Column("model_served", sa.String(200)),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("request", _json()),
        sa.Column("response", _json()),
        sa.Column("tool_names", _json()),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("cost_usd", sa.Float),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("step", sa.Integer),
        sa.Column("confidence", sa.Float),
        sa.Column("escalation", sa.String(200)),
        sa.Column("metadata", _json()),
    )
    # (created_at, id) is the keyset of every listing; the others filter then order by time.
    sa.Index("ix_traces_created", traces.c.created_at, traces.c.id)
    sa.Index("ix_traces_workload", traces.c.workload, traces.c.created_at)
    sa.Index("ix_traces_route", traces.c.route, traces.c.created_at)
    sa.Index("ix_traces_status", traces.c.status, traces.c.created_at)
    sa.Index("ix_traces_run", traces.c.run_id, traces.c.step)
    sa.Table(
        "feedback",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(64), nullable=False, index=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    md.create_all(conn)


def _m0004_budget_spend(conn: sa.Connection) -> None:
    """Per-key daily spend and reservations, shared by every gateway on the store (frozen as shipped)."""
    md = sa.MetaData()
    sa.Table(
        "budget_spend",
        md,
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("spent_usd", sa.Float, nullable=False),
        sa.Column("reserved_usd", sa.Float, nullable=False),
    )
    md.create_all(conn)


#: Every migration, in the order it runs. Append only.
MIGRATIONS: list[Migration] = [
    ("0001_traces_and_feedback", _m0001_traces),
    ("0002_fleet", m0002_fleet),
    ("0003_route_checks", m0003_route_checks),
    ("0004_budget_spend", _m0004_budget_spend),
]


def applied_migrations(conn: sa.Connection) -> list[str]:
    """Names recorded in ``_migrations`` (empty when the table does not exist yet)."""
    if not sa.inspect(conn).has_table("_migrations"):
        return []
    rows = conn.execute(sa.select(migrations_table.c.name))
    return [r[0] for r in rows]


def pending_migrations(conn: sa.Connection, migrations: list[Migration] | None = None) -> list[str]:
    done = set(applied_migrations(conn))
    return [name for name, _ in (MIGRATIONS if migrations is None else migrations) if name not in done]


def run_migrations(engine: sa.Engine, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every pending migration in one transaction; return the names applied (empty: up to date)."""
    todo = MIGRATIONS if migrations is None else migrations
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        migrations_table.create(conn, checkfirst=True)
        done = set(applied_migrations(conn))
        applied: list[str] = []
        for name, fn in todo:
            if name in done:
                continue
            fn(conn)
            conn.execute(sa.insert(migrations_table).values(name=name, applied_at=time.time()))
            applied.append(name)
        return applied
