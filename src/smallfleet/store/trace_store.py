"""``TraceStore``: where every recorded chat call is kept (SQLite by default, PostgreSQL at scale).

One class, one URL::

    store = TraceStore("sqlite:///./smallfleet.db")            # WAL, busy_timeout
    store = TraceStore("postgresql+psycopg://user@host/db")    # pip install 'smallfleet[postgres]'

Opening a store applies pending migrations; ``create=False`` refuses to create a
store that does not exist yet (what read-only commands use). The engine is
thread-safe: the gateway's background writer calls
:meth:`TraceStore.write_traces` from its own thread.

Listings are keyset-paginated on ``(created_at, id)``, which an index covers, so
a page costs the same at row 10 and at row 1,000,000.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from smallfleet.errors import ConfigError, UserError
from smallfleet.store.migrations import applied_migrations, run_migrations
from smallfleet.store.records import TRACE_FIELDS, TraceRecord
from smallfleet.store.tables import feedback, traces

__all__ = ["STATS_GROUPS", "TraceStore", "percentile"]

log = logging.getLogger("smallfleet.store")

#: What :meth:`TraceStore.stats` can group by.
STATS_GROUPS = ("workload", "model", "route", "status", "key")

_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")

#: Failures of the connection rather than of a row: the same batch may succeed later.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)
#: The longest value a label column (workload, model, route, …) holds.
LABEL_MAX = 200
_LABELS = ("workload", "key_id", "model_requested", "model_served", "route", "escalation")


def _json_dumps(obj: Any) -> str:
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN/Infinity (Python's json reads them): not JSON, and jsonb refuses them
        text = json.dumps(_finite(obj), ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate ("\ud800" in the client's JSON) cannot be encoded for the database.
    return _SURROGATE.sub("\ufffd", text)


def _finite(node: Any) -> Any:
    if isinstance(node, float):
        return node if math.isfinite(node) else None
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_finite(v) for v in node]
    return node


def _pg_json_dumps(obj: Any) -> str:
    # PostgreSQL's jsonb rejects \u0000; store U+FFFD instead of failing the whole batch.
    return _NUL_ESCAPE.sub(r"\1\\ufffd", _json_dumps(obj))


def _normalise_url(url: str) -> sa.URL:
    try:
        u = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"store.url {url!r} is not a database URL; use e.g. sqlite:///./smallfleet.db "
            "or postgresql+psycopg://user@host/db"
        ) from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values, interpolated linearly (like ``percentile_cont``)."""
    n = len(sorted_values)
    if n == 0:
        return None
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


class TraceStore:
    """The trace store: write, read, list, search, summarise, and take feedback on traces."""

    def __init__(self, url: str, *, create: bool = True, echo: bool = False) -> None:
        self.url = url
        u = _normalise_url(url)
        self._safe_url = u.render_as_string(hide_password=True)
        backend = u.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "json_serializer": _json_dumps}
        if backend == "sqlite":
            kwargs.update(self._sqlite_options(u, create))
        elif backend == "postgresql":
            from smallfleet._extras import require

            require("psycopg", "postgres")
            kwargs.update(json_serializer=_pg_json_dumps, pool_pre_ping=True)
        else:
            raise ConfigError(
                f"store.url {self._safe_url!r}: only sqlite:/// and postgresql+psycopg:// are supported."
            )
        try:
            self.engine: sa.Engine = sa.create_engine(u, **kwargs)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as e:
            raise ConfigError(f"store.url {self._safe_url!r}: {e}") from None
        if backend == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.dialect = backend
        try:
            if not create:
                with self.engine.connect() as conn:
                    exists = bool(applied_migrations(conn))
                if not exists:
                    raise ConfigError(
                        f"No trace store at {self._safe_url}: start the gateway or import traces "
                        "to create it (smallfleet traces import FILE.jsonl)."
                    )
            # An existing store written by an older smallfleet is brought up to date.
            run_migrations(self.engine)
        except sa.exc.OperationalError as e:
            self.engine.dispose()
            reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
            raise ConfigError(f"Cannot open the trace store at {self._safe_url}: {reason}") from None
        except BaseException:
            self.engine.dispose()
            raise

    @staticmethod
    def _sqlite_options(u: sa.URL, create: bool) -> dict[str, Any]:
        db = u.database
        if not db or db == ":memory:" or "mode=memory" in str(u):
            # One shared in-memory database for every thread.
            return {"poolclass": sa.pool.StaticPool, "connect_args": {"check_same_thread": False}}
        path = Path(db)
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise ConfigError(
                f"No trace store at {db}: start the gateway or import traces first "
                "(smallfleet traces import FILE.jsonl), or point store.url elsewhere."
            )
        return {"connect_args": {"check_same_thread": False, "timeout": 30}}

    # ------------------------------------------------------------------ writing

    def write_traces(self, records: Sequence[TraceRecord]) -> list[tuple[TraceRecord, str]]:
        """Insert ``records`` in one transaction; ids already stored are skipped (a re-sent batch is a no-op).

        Returns the records the database refused, each with the reason. If the batch
        fails for anything but a lost or busy connection, the rows are retried one by
        one and only the bad ones are refused, so one poison record never blocks the
        records behind it. A connection failure (:data:`TRANSIENT_ERRORS`) is raised:
        the caller retries the whole batch later.
        """
        if not records:
            return []
        rows: list[dict[str, Any]] = []
        refused: list[tuple[TraceRecord, str]] = []
        kept: list[TraceRecord] = []
        for r in records:
            try:
                rows.append(_to_row(r))
                kept.append(r)
            except Exception as e:  # a value no column can hold
                refused.append((r, f"{type(e).__name__}: {e}"))
        try:
            self._insert(rows)
        except TRANSIENT_ERRORS:
            raise
        except Exception as e:
            log.warning("a trace batch was rejected (%s); retrying row by row", _reason(e))
            for record, row in zip(kept, rows, strict=True):
                try:
                    self._insert([row])
                except TRANSIENT_ERRORS:
                    raise
                except Exception as e2:
                    refused.append((record, _reason(e2)))
        return refused

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(self._insert_ignore(), rows)

    def _insert_ignore(self) -> sa.Insert:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(traces).on_conflict_do_nothing(index_elements=["id"])

    def add_feedback(self, trace_id: str, score: float, comment: str | None = None) -> None:
        """Attach a score (and a comment) to a stored trace."""
        if not math.isfinite(score):
            raise UserError(f"Feedback score must be a finite number, not {score!r}.")
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(traces.c.id).where(traces.c.id == trace_id)).first()
            if exists is None:
                raise UserError(f"No trace with id {trace_id!r}.")
            conn.execute(
                sa.insert(feedback).values(
                    trace_id=trace_id,
                    score=float(score),
                    comment=None if comment is None else clean_text(comment),
                    created_at=time.time(),
                )
            )

    def get_feedback(self, trace_id: str) -> list[dict[str, Any]]:
        """The feedback given on a trace, oldest first."""
        q = (
            sa.select(feedback.c.score, feedback.c.comment, feedback.c.created_at)
            .where(feedback.c.trace_id == trace_id)
            .order_by(feedback.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # ------------------------------------------------------------------ reading

    def get_trace(self, trace_id: str) -> TraceRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(traces).where(traces.c.id == trace_id)).first()
        return None if row is None else _from_row(row)

    def iter_traces(
        self,
        *,
        workload: str | None = None,
        since: float | None = None,
        until: float | None = None,
        status: str | None = None,
        route: str | None = None,
        model: str | None = None,
        order: Literal["asc", "desc"] = "asc",
        batch_size: int = 1000,
    ) -> Iterator[TraceRecord]:
        """Every matching trace in time order, read in keyset batches (no long-held cursor)."""
        if order not in ("asc", "desc"):
            raise UserError(f"order must be 'asc' or 'desc', not {order!r}.")
        where = _filters(workload=workload, since=since, until=until, status=status, route=route, model=model)
        after: tuple[float, str] | None = None
        while True:
            q = sa.select(traces).where(*where)
            if after is not None:
                q = q.where(_keyset(after, order))
            q = q.order_by(*_ordering(order)).limit(batch_size)
            with self.engine.connect() as conn:
                batch = [_from_row(r) for r in conn.execute(q)]
            yield from batch
            if len(batch) < batch_size:
                return
            after = (batch[-1].created_at, batch[-1].id)

    def count_traces(
        self,
        *,
        workload: str | None = None,
        since: float | None = None,
        until: float | None = None,
        status: str | None = None,
        route: str | None = None,
        model: str | None = None,
    ) -> int:
        where = _filters(workload=workload, since=since, until=until, status=status, route=route, model=model)
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(traces).where(*where)).scalar_one()
            )

    def search_traces(
        self,
        *,
        text: str | None = None,
        workload: str | None = None,
        model: str | None = None,
        route: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        before_id: str | None = None,
        cursor: tuple[float, str] | None = None,
    ) -> list[TraceRecord]:
        """Newest first. Page on with ``before_id=<last id of the previous page>`` (or ``cursor``).

        ``text`` is a case-insensitive substring of the request or response JSON.
        """
        if limit < 1:
            raise UserError("limit must be at least 1.")
        where = _filters(workload=workload, since=since, until=until, status=status, route=route, model=model)
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                sa.or_(
                    sa.cast(traces.c.request, sa.Text).ilike(pattern, escape="\\"),
                    sa.cast(traces.c.response, sa.Text).ilike(pattern, escape="\\"),
                )
            )
        with self.engine.connect() as conn:
            if before_id is not None and cursor is None:
                ts = conn.execute(sa.select(traces.c.created_at).where(traces.c.id == before_id)).scalar()
                if ts is None:
                    raise UserError(f"No trace with id {before_id!r} to page from.")
                cursor = (float(ts), before_id)
            q = sa.select(traces).where(*where)
            if cursor is not None:
                q = q.where(_keyset(cursor, "desc"))
            q = q.order_by(*_ordering("desc")).limit(limit)
            return [_from_row(r) for r in conn.execute(q)]

    # ------------------------------------------------------------------ summaries

    def stats(
        self, *, since: float | None = None, until: float | None = None, by: str = "workload"
    ) -> list[dict[str, Any]]:
        """Per group: calls, errors, error_rate, input/output tokens, cost_usd, p50_ms, p95_ms.

        Groups are sorted by calls, most first. Percentiles are of ``latency_ms``,
        interpolated linearly: in SQL (``percentile_cont``) on PostgreSQL; on SQLite,
        which has no percentile function, from one scan sorted per group in Python
        (about a second per million traces in the window).
        """
        key = _group_column(by)
        where = _filters(since=since, until=until)
        errors = sa.func.sum(sa.case((traces.c.status != "ok", 1), else_=0))
        q = (
            sa.select(
                key.label("group"),
                sa.func.count().label("calls"),
                errors.label("errors"),
                sa.func.coalesce(sa.func.sum(traces.c.input_tokens), 0).label("input_tokens"),
                sa.func.coalesce(sa.func.sum(traces.c.output_tokens), 0).label("output_tokens"),
                sa.func.sum(traces.c.cost_usd).label("cost_usd"),
            )
            .where(*where)
            .group_by(key)
        )
        with self.engine.connect() as conn:
            groups = {r.group: dict(r._mapping) for r in conn.execute(q)}
            pcts = self._latency_percentiles(conn, key, where)
        out = []
        for name, g in groups.items():
            calls = int(g["calls"])
            p50, p95 = pcts.get(name, (None, None))
            out.append(
                {
                    "group": name,
                    "calls": calls,
                    "errors": int(g["errors"] or 0),
                    "error_rate": (int(g["errors"] or 0) / calls) if calls else 0.0,
                    "input_tokens": int(g["input_tokens"]),
                    "output_tokens": int(g["output_tokens"]),
                    "cost_usd": None if g["cost_usd"] is None else float(g["cost_usd"]),
                    "p50_ms": p50,
                    "p95_ms": p95,
                }
            )
        out.sort(key=lambda g: (-g["calls"], str(g["group"])))
        return out

    def _latency_percentiles(
        self, conn: sa.Connection, key: sa.ColumnElement[Any], where: list[sa.ColumnElement[bool]]
    ) -> dict[Any, tuple[float | None, float | None]]:
        has_latency = traces.c.latency_ms.is_not(None)
        if self.dialect == "postgresql":
            q = (
                sa.select(
                    key.label("group"),
                    sa.func.percentile_cont(0.5).within_group(traces.c.latency_ms).label("p50"),
                    sa.func.percentile_cont(0.95).within_group(traces.c.latency_ms).label("p95"),
                )
                .where(*where, has_latency)
                .group_by(key)
            )
            return {r.group: (_f(r.p50), _f(r.p95)) for r in conn.execute(q)}
        # SQLite: one unordered scan, sorted per group in Python (faster than ORDER BY's temp b-tree).
        q = sa.select(key.label("group"), traces.c.latency_ms).where(*where, has_latency)
        values: dict[Any, list[float]] = {}
        for group, latency in conn.execute(q):
            values.setdefault(group, []).append(latency)
        out: dict[Any, tuple[float | None, float | None]] = {}
        for group, vals in values.items():
            vals.sort()
            out[group] = (percentile(vals, 0.5), percentile(vals, 0.95))
        return out

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TraceStore({self._safe_url!r})"


# ---------------------------------------------------------------------- helpers


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip().splitlines()
    return f"{type(orig or e).__name__}: {text[0] if text else ''}"[:500]


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(s: str) -> str:
    """``s`` as every database stores it: NUL and lone surrogates (not encodable) become U+FFFD."""
    if "\x00" in s:
        s = s.replace("\x00", "\ufffd")
    return _SURROGATE.sub("\ufffd", s)


def _label(s: str | None) -> str | None:
    if s is None:
        return None
    s = clean_text(s)
    return s if len(s) <= LABEL_MAX else s[: LABEL_MAX - 1] + "…"


def _to_row(r: TraceRecord) -> dict[str, Any]:
    row = {name: getattr(r, name) for name in TRACE_FIELDS}
    row["tool_names"] = [_label(str(t)) for t in r.tool_names or []]
    row["metadata"] = {clean_text(str(k)): clean_text(str(v)) for k, v in (r.metadata or {}).items()}
    for k in _LABELS:
        row[k] = _label(row[k])
    if row["error"] is not None:
        row["error"] = clean_text(row["error"])
    row["created_at"] = float(r.created_at)
    return row


def _from_row(row: sa.Row[Any]) -> TraceRecord:
    m = row._mapping
    data = {name: m[name] for name in TRACE_FIELDS}
    data["tool_names"] = data["tool_names"] or []
    data["metadata"] = data["metadata"] or {}
    data["stream"] = bool(data["stream"])
    return TraceRecord(**data)


def _filters(
    *,
    workload: str | None = None,
    since: float | None = None,
    until: float | None = None,
    status: str | None = None,
    route: str | None = None,
    model: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if workload is not None:
        where.append(traces.c.workload == workload)
    if since is not None:
        where.append(traces.c.created_at >= since)
    if until is not None:
        where.append(traces.c.created_at < until)
    if status is not None:
        where.append(traces.c.status == status)
    if route is not None:
        # "specialist" matches every "specialist:<route>"; a full route matches itself.
        if ":" in route:
            where.append(traces.c.route == route)
        else:
            where.append(sa.or_(traces.c.route == route, traces.c.route.startswith(route + ":")))
    if model is not None:
        where.append(sa.or_(traces.c.model_served == model, traces.c.model_requested == model))
    return where


def _keyset(after: tuple[float, str], order: str) -> sa.ColumnElement[bool]:
    # A row-value comparison: both SQLite and PostgreSQL seek it on the (created_at, id) index.
    key = sa.tuple_(traces.c.created_at, traces.c.id)
    bound = sa.tuple_(sa.literal(after[0], sa.Float), sa.literal(after[1], sa.String))
    return key > bound if order == "asc" else key < bound


def _ordering(order: str) -> tuple[sa.ColumnElement[Any], ...]:
    if order == "asc":
        return (traces.c.created_at.asc(), traces.c.id.asc())
    return (traces.c.created_at.desc(), traces.c.id.desc())


def _group_column(by: str) -> sa.ColumnElement[Any]:
    # Wrapped in coalesce() on purpose: grouping on a bare indexed column makes SQLite walk that
    # index and fetch every row at random, several times slower than one scan (or a time range).
    if by == "workload":
        return sa.func.coalesce(traces.c.workload, "")
    if by == "model":
        return sa.func.coalesce(traces.c.model_served, traces.c.model_requested)
    if by == "route":
        return sa.func.coalesce(traces.c.route, "")
    if by == "status":
        return sa.func.coalesce(traces.c.status, "")
    if by == "key":
        return sa.func.coalesce(traces.c.key_id, "-")
    raise UserError(f"Cannot group stats by {by!r}; choose one of: {', '.join(STATS_GROUPS)}.")
