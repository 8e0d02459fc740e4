"""The store's tables as they are now (SQLAlchemy Core), for queries.

The schema itself is created and changed only by :mod:`smallfleet.store.migrations`;
when a migration adds a column, the table here gains it too.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["JSONType", "budget_spend", "feedback", "metadata", "migrations_table", "traces"]

#: JSON on SQLite (text), JSONB on PostgreSQL; Python None is stored as SQL NULL.
JSONType = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

metadata = sa.MetaData()

migrations_table = sa.Table(
    "_migrations",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

traces = sa.Table(
    "traces",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("workload", sa.String(200), nullable=False),
    sa.Column("key_id", sa.String(200)),
    sa.Column("model_requested", sa.String(200), nullable=False),
    sa.Column("model_served", sa.String(200)),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("request", JSONType),
    sa.Column("response", JSONType),
    sa.Column("tool_names", JSONType),
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
    sa.Column("metadata", JSONType),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.String(64), nullable=False, index=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: Per budgeted key and UTC day (unix time // 86400): what it spent (settled) and holds (reserved,
#: requests in flight). Written only by :class:`smallfleet.store.budgets.SpendLedger`.
budget_spend = sa.Table(
    "budget_spend",
    metadata,
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("day", sa.Integer, primary_key=True),
    sa.Column("spent_usd", sa.Float, nullable=False),
    sa.Column("reserved_usd", sa.Float, nullable=False),
)
