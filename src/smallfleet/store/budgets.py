"""Spend ledgers: what each budgeted key spent and holds in reserve, per UTC day.

A request is admitted by :meth:`reserve`, which holds an estimate of its cost,
and closed by :meth:`settle`, which releases the estimate and charges what it
really cost. A reservation is admitted only while ``spent + reserved < budget``,
so however many requests race for the last slot, at most one of them gets it:
the day's spend can pass the budget by one request's estimate at most (as long
as no request costs more than its estimate).

Two ledgers with the same semantics:

* :class:`SpendLedger` keeps the ``budget_spend`` table of the trace store. Each
  operation is one conditional ``UPDATE``, atomic on SQLite (one writer at a
  time) and on PostgreSQL (row lock; the condition is re-checked on the row as
  the previous writer committed it), so gateways that share the store share the
  budget. A day's row starts from that day's traces of the key, so a store
  written before ledgers existed keeps its spend.
* :class:`MemoryLedger` is the same in one process, behind a lock (a gateway
  without a store).

Reservations held by a gateway that dies stay held until the day ends: the
budget errs on the side of refusing.
"""

from __future__ import annotations

import math
import threading
from typing import Protocol

import sqlalchemy as sa

from smallfleet.store.tables import budget_spend, traces

__all__ = ["Ledger", "MemoryLedger", "SpendLedger"]

_DAY = 86400.0


class Ledger(Protocol):
    """What :class:`~smallfleet.gateway.auth.KeyRing` needs of a ledger."""

    #: True when calls do I/O (the gateway then makes them off its event loop).
    blocking: bool

    def reserve(self, key: str, day: int, estimate_usd: float, budget_usd: float) -> bool: ...

    def settle(self, key: str, day: int, estimate_usd: float, actual_usd: float) -> None: ...

    def usage(self, key: str, day: int) -> tuple[float, float]: ...


def _usd(value: float | None) -> float:
    """A usable amount: NaN, infinities, negatives and None count as 0 (a NaN row would refuse forever)."""
    if value is None or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


class SpendLedger:
    """The ledger in the store's ``budget_spend`` table (SQLite or PostgreSQL); thread-safe."""

    blocking = True

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        # (key, day) rows this process knows exist: the seeding INSERT runs once per row, not per request.
        self._rows: set[tuple[str, int]] = set()

    def reserve(self, key: str, day: int, estimate_usd: float, budget_usd: float) -> bool:
        """Hold ``estimate_usd`` when ``spent + reserved < budget_usd``; False (nothing held) otherwise."""
        row = (budget_spend.c.key_id == key) & (budget_spend.c.day == day)
        held = budget_spend.c.spent_usd + budget_spend.c.reserved_usd
        admit = (
            sa.update(budget_spend)
            .where(row, held < float(budget_usd))
            .values(reserved_usd=budget_spend.c.reserved_usd + _usd(estimate_usd))
        )
        with self.engine.begin() as conn:
            if (key, day) not in self._rows:
                conn.execute(self._seed(key, day))
            admitted = conn.execute(admit).rowcount == 1
        self._rows.add((key, day))
        return admitted

    def settle(self, key: str, day: int, estimate_usd: float, actual_usd: float) -> None:
        """Release a reservation of ``estimate_usd`` and charge ``actual_usd`` in its place."""
        left = budget_spend.c.reserved_usd - _usd(estimate_usd)
        stmt = (
            sa.update(budget_spend)
            .where(budget_spend.c.key_id == key, budget_spend.c.day == day)
            .values(
                reserved_usd=sa.case((left > 0, left), else_=0.0),  # float dust never goes negative
                spent_usd=budget_spend.c.spent_usd + _usd(actual_usd),
            )
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def usage(self, key: str, day: int) -> tuple[float, float]:
        """(spent, reserved) of ``key`` on ``day``; zeros when it has no row yet."""
        query = sa.select(budget_spend.c.spent_usd, budget_spend.c.reserved_usd).where(
            budget_spend.c.key_id == key, budget_spend.c.day == day
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).first()
        return (0.0, 0.0) if found is None else (float(found[0]), float(found[1]))

    def spent(self, key: str, day: int) -> float:
        return self.usage(key, day)[0]

    def _seed(self, key: str, day: int) -> sa.Insert:
        """Create the day's row (if no one has), its spend summed from the day's traces of the key."""
        start = day * _DAY
        seed = sa.select(
            sa.literal(key, sa.Text),
            sa.literal(day, sa.Integer),
            sa.func.coalesce(sa.func.sum(traces.c.cost_usd), 0.0),
            sa.literal(0.0, sa.Float),
        ).where(traces.c.key_id == key, traces.c.created_at >= start, traces.c.created_at < start + _DAY)
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        columns = ["key_id", "day", "spent_usd", "reserved_usd"]
        return insert(budget_spend).from_select(columns, seed).on_conflict_do_nothing()


class MemoryLedger:
    """The same ledger in memory, for one process (a gateway without a trace store)."""

    blocking = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, int], list[float]] = {}  # [spent, reserved]

    def reserve(self, key: str, day: int, estimate_usd: float, budget_usd: float) -> bool:
        with self._lock:
            row = self._rows.setdefault((key, day), [0.0, 0.0])
            if row[0] + row[1] >= budget_usd:
                return False
            row[1] += _usd(estimate_usd)
            return True

    def settle(self, key: str, day: int, estimate_usd: float, actual_usd: float) -> None:
        with self._lock:
            row = self._rows.setdefault((key, day), [0.0, 0.0])
            row[1] = max(0.0, row[1] - _usd(estimate_usd))
            row[0] += _usd(actual_usd)

    def usage(self, key: str, day: int) -> tuple[float, float]:
        with self._lock:
            spent, reserved = self._rows.get((key, day), (0.0, 0.0))
            return spent, reserved

    def spent(self, key: str, day: int) -> float:
        return self.usage(key, day)[0]
