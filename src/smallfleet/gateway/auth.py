"""Gateway API keys and per-key daily budgets (both off unless ``gateway.keys`` is set).

Only the SHA-256 of each key is configured (``smallfleet keys hash KEY``). A
request then needs ``Authorization: Bearer KEY``. The keys are re-read from the
config file when it changes, at most once per ``gateway.reload_seconds``, so a
revoked key stops working without a restart; a file that no longer parses keeps
the keys in use (and logs a warning).

A key with ``daily_budget_usd`` pays in two steps. On arrival a request
*reserves* an estimate of its cost (:func:`estimate_usd`: its prompt plus its
``max_tokens`` at the model's price) and is refused with 429 ``budget_exceeded``
(type ``insufficient_quota``) unless what the key spent since 00:00 UTC plus
what requests in flight hold is under the budget; when it ends, the reservation
is *settled* with what it really cost. The ledger that holds both
(:mod:`smallfleet.store.budgets`) is the trace store's ``budget_spend`` table,
one atomic ``UPDATE`` per step, so replicas on one database share the budget:
the day's spend passes the budget by one request's estimate at most.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Unauthorized and BodyTooLarge live in the errors tree; re-exported here, where they were first.
from smallfleet.errors import BodyTooLarge, BudgetExceeded, ConfigError, Unauthorized

if TYPE_CHECKING:
    import sqlalchemy as sa

    from smallfleet.config import GatewayKey, Settings
    from smallfleet.store.budgets import Ledger
    from smallfleet.store.pricing import PriceTable
    from smallfleet.types import ChatRequest

__all__ = [
    "BodyTooLarge",
    "KeyRing",
    "Reservation",
    "Unauthorized",
    "estimate_usd",
    "hash_key",
    "new_key",
]

log = logging.getLogger("smallfleet.gateway")

#: Tokens a chat message costs besides its text (role and separators), in the estimate.
_TOKENS_PER_MESSAGE = 4


def hash_key(key: str) -> str:
    """The SHA-256 (hex) of a key, as it goes into ``gateway.keys[].sha256``."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key in the OpenAI style."""
    return "sf-" + secrets.token_urlsafe(32)


def _day(t: float) -> int:
    return int(t // 86400)


def _index(keys: Iterable[GatewayKey]) -> dict[str, GatewayKey]:
    return {k.sha256.strip().lower(): k for k in keys}


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    """What tells that a file changed (mtime, size, inode: an editor may replace it); None if absent."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def estimate_usd(
    request: ChatRequest, aliases: Iterable[str], prices: PriceTable | None, default_max_tokens: int
) -> float:
    """What a budget reserves for ``request``: the most it should cost.

    Its prompt at about four characters a token (messages, tool calls, tool
    schemas, plus a few tokens a message) and its ``max_completion_tokens`` /
    ``max_tokens`` (else ``default_max_tokens``), at the dearest of ``aliases``
    (the chain that may serve it) that has a price; 0 when none has one.
    """
    if prices is None:
        return 0.0
    out_tokens = request.output_token_limit or default_max_tokens
    in_tokens = _prompt_tokens(request)
    costs = [prices.cost(alias, in_tokens, out_tokens) for alias in aliases]
    return max((c for c in costs if c is not None), default=0.0)


def _prompt_tokens(request: ChatRequest) -> int:
    from smallfleet.types import AssistantMessage, content_text

    chars = 0
    for m in request.messages:
        chars += len(content_text(getattr(m, "content", None)))
        if isinstance(m, AssistantMessage):  # elsewhere "tool_calls" is an unknown field, of any type
            for call in m.tool_calls or []:
                chars += len(call.function.name) + len(call.function.arguments)
    for tool in request.tools or []:  # the schemas go into the prompt too
        chars += len(tool.model_dump_json(exclude_none=True))
    return (chars + 3) // 4 + _TOKENS_PER_MESSAGE * len(request.messages)


@dataclass
class Reservation:
    """Spend held for one request by :meth:`KeyRing.reserve`; settled exactly once."""

    key: str
    day: int
    estimate_usd: float
    settled: bool = False


class KeyRing:
    """The configured keys (re-read as the config file changes) and each key's daily spend.

    ``ledger`` keeps the spend (default: in this process's memory; the gateway
    passes the store's :class:`~smallfleet.store.budgets.SpendLedger`).
    ``source``: the config file to re-read ``gateway.keys`` from, checked at most
    once per ``reload_seconds``; None: the keys given stay.
    """

    def __init__(
        self,
        keys: Iterable[GatewayKey],
        *,
        ledger: Ledger | None = None,
        source: str | os.PathLike[str] | None = None,
        reload_seconds: float = 5.0,
    ) -> None:
        if ledger is None:
            from smallfleet.store.budgets import MemoryLedger

            ledger = MemoryLedger()
        self._by_hash = _index(keys)
        self._ledger: Ledger = ledger
        self._source = None if source is None else Path(source)
        self._reload_seconds = reload_seconds
        self._next_check = time.monotonic() + reload_seconds
        self._stamp = _stamp(self._source)
        self._claim_lock = threading.Lock()
        self._settling: dict[str, set[asyncio.Future[None]]] = {}  # key name → settlements being written

    @classmethod
    def from_settings(cls, settings: Settings, engine: sa.Engine | None = None) -> KeyRing:
        """The gateway's key ring: spend in the store behind ``engine`` (in memory without one),
        keys re-read from the file the settings came from."""
        from smallfleet.store.budgets import MemoryLedger, SpendLedger

        return cls(
            settings.gateway.keys,
            ledger=SpendLedger(engine) if engine is not None else MemoryLedger(),
            source=settings.source,
            reload_seconds=settings.gateway.reload_seconds,
        )

    @property
    def enabled(self) -> bool:
        self._refresh()
        return bool(self._by_hash)

    def authenticate(self, authorization: str | None) -> GatewayKey | None:
        """The key named by an ``Authorization`` header; None when keys are off."""
        self._refresh()
        if not self._by_hash:
            return None
        if not authorization:
            raise Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' "
                "(this gateway has keys configured in gateway.keys)."
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("The Authorization header must be 'Bearer YOUR_KEY'.")
        key = self._by_hash.get(hash_key(token.strip()))
        if key is None:
            raise Unauthorized("Incorrect API key provided.")
        return key

    def named(self, name: str) -> list[GatewayKey]:
        """The configured keys called ``name`` (dashboard sessions name theirs; several while one rotates)."""
        self._refresh()
        return [k for k in self._by_hash.values() if k.name == name]

    # ------------------------------------------------------------ reloading

    def _refresh(self) -> None:
        """Re-read the keys if the config file changed; the file is looked at once per reload_seconds."""
        if self._source is None:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._reload_seconds
        stamp = _stamp(self._source)
        if stamp != self._stamp:
            self._stamp = stamp
            self._reload(self._source)

    def _reload(self, source: Path) -> None:
        from smallfleet.config import load_settings

        try:  # the environment's SMALLFLEET_* overrides apply again, as they did at start
            keys = load_settings(source).gateway.keys
        except (ConfigError, OSError, ValueError) as e:
            log.warning("gateway.keys not re-read (%s); the %d keys in use stay.", e, len(self._by_hash))
            return
        self._by_hash = _index(keys)
        log.info("gateway.keys re-read from %s: %d keys.", source, len(self._by_hash))

    # ------------------------------------------------------------ budgets

    def reserve(self, key: GatewayKey | None, estimate_usd: float) -> Reservation | None:
        """Hold ``estimate_usd`` of ``key``'s budget for today; None when the key has no budget.

        Raises :class:`~smallfleet.errors.BudgetExceeded` when what the key spent
        today plus what its requests in flight hold has reached the budget.
        """
        if key is None or key.daily_budget_usd is None:
            return None
        day = _day(time.time())
        if self._ledger.reserve(key.name, day, estimate_usd, key.daily_budget_usd):
            return Reservation(key.name, day, estimate_usd)
        spent, held = self._ledger.usage(key.name, day)
        in_flight = f" (and requests in flight hold ${held:.4f})" if held > 0 else ""
        raise BudgetExceeded(
            f"Key {key.name!r} has spent ${spent:.4f}{in_flight} of its ${key.daily_budget_usd:.2f} "
            "daily budget; it resets at 00:00 UTC."
        )

    def settle(self, reservation: Reservation | None, actual_usd: float | None) -> None:
        """Release the reservation's estimate and charge ``actual_usd`` (None: 0); the first call only."""
        if reservation is not None and self._claim(reservation):
            self._charge(reservation, actual_usd)

    async def areserve(self, key: GatewayKey | None, estimate_usd: float) -> Reservation | None:
        """:meth:`reserve`, off the event loop when the ledger does I/O."""
        if key is None or key.daily_budget_usd is None or not self._ledger.blocking:
            return self.reserve(key, estimate_usd)
        # A client that sends its next request as soon as the last one answered must find that one's
        # spend settled, not still held: wait for this key's settlements in progress.
        await self._settled(key.name)
        job = asyncio.get_running_loop().run_in_executor(None, self.reserve, key, estimate_usd)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:  # the request is gone, but the reservation may still land: release it
            job.add_done_callback(self._release_orphan)
            raise

    def settle_soon(self, reservation: Reservation | None, actual_usd: float | None) -> None:
        """:meth:`settle` without blocking the event loop; :meth:`drain` waits for what is still running."""
        if reservation is None or not self._claim(reservation):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or not self._ledger.blocking:
            self._charge(reservation, actual_usd)
            return
        job = loop.run_in_executor(None, self._charge, reservation, actual_usd)
        jobs = self._settling.setdefault(reservation.key, set())
        jobs.add(job)
        job.add_done_callback(jobs.discard)

    async def drain(self) -> None:
        """Wait until every settlement :meth:`settle_soon` started is written (the gateway, on shutdown)."""
        while any(self._settling.values()):
            for name in list(self._settling):
                await self._settled(name)

    async def _settled(self, name: str) -> None:
        """Wait for the settlements of ``name`` started so far (only those: under load, more keep coming)."""
        jobs = self._settling.get(name)
        if jobs:
            await asyncio.wait(list(jobs))

    def _claim(self, reservation: Reservation) -> bool:
        with self._claim_lock:  # settle and settle_soon may race from two threads
            if reservation.settled:
                return False
            reservation.settled = True
            return True

    def _charge(self, reservation: Reservation, actual_usd: float | None) -> None:
        try:
            self._ledger.settle(reservation.key, reservation.day, reservation.estimate_usd, actual_usd or 0.0)
        except Exception:  # the answer is out already; an unsettled estimate stays held (errs to refuse)
            log.exception("Could not settle the budget reservation of key %r", reservation.key)

    def _release_orphan(self, job: asyncio.Future[Reservation | None]) -> None:
        if not job.cancelled() and job.exception() is None:
            self.settle_soon(job.result(), 0.0)
