"""The router inside the gateway: serving small, shadow comparisons, and the online quality guard.

:class:`GatewayRouter` plugs a :class:`~smallfleet.routing.router.Router` into the
gateway's routing seam (``route(request, workload)``) and its after-response hook
(``observe``):

- ``on`` / ``canary`` routes: a confident, valid specialist answer is served; the rest
  are escalated to the large model the client asked for, with the reason recorded;
- ``shadow`` routes: the large model answers; afterwards, off the hot path, the
  specialist answers the same request and its agreement is recorded;
- the guard: a fraction (``routing.guard_fraction``) of small-served requests is also
  sent to the large model in the background; when a route's agreement over the last
  ``routing.guard_window`` checks (at least ``routing.guard_min_checks`` of them) falls
  below its target, the route is set back to ``shadow`` (recorded as a ``guard-demote``
  event, shown by ``smallfleet routes``). The rule is a point estimate on purpose: a quick
  safety net errs towards the large model. Every check is kept (``route_checks``), so
  ``smallfleet routes show`` sets all of a version's delivered agreement, with its
  Clopper–Pearson interval, against what the flywheel promised at promotion.

Background work (shadow answers, guard checks) runs at most ``routing.shadow_concurrency``
at a time; beyond a backlog of ``max_background`` it is skipped, never queued without bound.

Routes are re-read from the store every ``routing.reload_seconds``, so ``smallfleet routes
set-mode`` takes effect in running gateways without a restart.

Decisions run in a pool of ``threads`` threads (``routing.max_batch`` + 4, at least 8), so that
concurrent requests to one specialist can wait for it together and be answered as one batch
(:class:`~smallfleet.routing.router.SpecialistBatcher`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smallfleet.gateway.app import RouteDecision
from smallfleet.models.base import ChatModel
from smallfleet.routing.router import Decision, Router
from smallfleet.routing.routes import Route, RouteStore
from smallfleet.types import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from smallfleet.config import Settings
    from smallfleet.models.registry import ModelRegistry

__all__ = ["GatewayRouter", "build_gateway_router"]

log = logging.getLogger("smallfleet.router")


class _Answer(ChatModel):
    """A specialist's already-computed answer, as a ChatModel the gateway can 'call'."""

    supports_tools = True
    supports_json_schema = True

    def __init__(self, response: ChatResponse, name: str) -> None:
        self.response = response
        self.name = name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return self.response


@dataclass
class _RoutedDecision(RouteDecision):
    decision: Decision | None = None


class GatewayRouter:
    """The gateway's router: decide, serve or escalate, shadow, guard."""

    def __init__(
        self,
        router: Router,
        routes: RouteStore,
        registry: ModelRegistry,
        *,
        guard_fraction: float = 0.05,
        guard_window: int = 200,
        guard_min_checks: int = 20,
        target_accuracy: float = 0.95,
        reload_seconds: float = 5.0,
        max_background: int = 64,
        concurrency: int = 4,
        seed: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.router = router
        self.routes = routes
        self.registry = registry
        self.guard_fraction = guard_fraction
        self.guard_window = guard_window
        self.guard_min_checks = min(guard_min_checks, guard_window)
        self.target_accuracy = target_accuracy
        self.reload_seconds = reload_seconds
        self.max_background = max_background
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None  # made on first use, in the serving loop
        self.concurrency = concurrency
        #: threads deciding requests at once: enough for a full batch to gather at a specialist
        self.threads = threads or max(8, router.max_batch + 4)
        self._pool: ThreadPoolExecutor | None = None
        self._last_reload = time.monotonic()
        self._signature = self._route_signature(router.routes)

    async def _in_pool(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the deciding threads (not the loop's default pool, which is small)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="smallfleet-router")
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    # ------------------------------------------------------------ the seam

    async def route(self, request: ChatRequest, workload: str) -> RouteDecision | None:
        await self._maybe_reload()
        decision = await self._in_pool(self.router.decide, request, workload)
        if decision.route is None and decision.reason is None:
            return None  # not a routable workload or alias
        if decision.action == "small" and decision.response is not None:
            if self.guard_fraction and self._rng.random() < self.guard_fraction:
                self._background(self._guard(request, decision))
            return _RoutedDecision(
                model=_Answer(decision.response, decision.response.model),
                route=decision.label,
                confidence=decision.confidence,
                decision=decision,
            )
        escalation = "shadow" if decision.action == "shadow" else decision.reason
        return _RoutedDecision(
            model=None, confidence=decision.confidence, escalation=escalation, decision=decision
        )

    def observe(
        self, request: ChatRequest, decision: RouteDecision | None, response: dict[str, Any], trace_id: str
    ) -> None:
        """After the large model answered: in shadow mode, compare the specialist off the hot path."""
        inner = getattr(decision, "decision", None)
        if inner is None or inner.action != "shadow" or inner.route is None:
            return
        self._background(self._shadow(request, inner.route, response, trace_id))

    # ------------------------------------------------------------ background work

    def _background(self, coro: Any) -> None:
        if len(self._tasks) >= self.max_background:
            log.info("router backlog full (%d): a background comparison is skipped", len(self._tasks))
            coro.close()
            return
        task = asyncio.ensure_future(self._limited(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _limited(self, coro: Any) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            await coro

    async def _shadow(
        self, request: ChatRequest, route: Route, response: dict[str, Any], trace_id: str
    ) -> None:
        try:
            large = ChatResponse.model_validate(response)
            pred = await self._in_pool(self.router.predict, route, request)
            agree = pred.confidence >= route.threshold and self.router.agree(request, pred.response, large)
            await asyncio.to_thread(
                self.routes.record_check,
                route.name,
                route.version,
                "shadow",
                agree,
                pred.confidence,
                trace_id,
            )
        except Exception as e:
            log.warning("shadow comparison for route %s failed: %s", route.name, e)

    async def _guard(self, request: ChatRequest, decision: Decision) -> None:
        route = decision.route
        assert route is not None and decision.response is not None
        try:
            alias = request.model if request.model in self.registry else None
            if alias is None:
                return
            large = await self.registry.get(alias).complete(request)
            agree = self.router.agree(request, decision.response, large)
            await asyncio.to_thread(
                self.routes.record_check, route.name, route.version, "guard", agree, decision.confidence
            )
            rate, n = await asyncio.to_thread(
                self.routes.agreement, route.name, route.version, "guard", self.guard_window
            )
            metrics = route.metrics or {}
            target = float(metrics.get("target_accuracy") or self.target_accuracy)
            if rate is not None and n >= self.guard_min_checks and rate < target:
                reason = f"guard agreement {rate:.1%} over the last {n} checks < target {target:.0%}"
                if metrics.get("kept_accuracy_lower") is not None:
                    reason += f" (promised at least {metrics['kept_accuracy_lower']:.1%})"
                if await asyncio.to_thread(self._demote, route, reason):
                    log.warning("route %s v%s set back to shadow: %s", route.name, route.version, reason)
                await self._reload()
        except Exception as e:
            log.warning("guard check for route %s failed: %s", route.name, e)

    def _demote(self, route: Route, reason: str) -> bool:
        """Set ``route`` back to shadow unless someone changed it since (other checks, the CLI)."""
        from smallfleet.routing.routes import parse_mode

        current = self.routes.get(route.name)
        if current.version != route.version or parse_mode(current.mode)[0] not in ("on", "canary"):
            return False
        self.routes.set_mode(route.name, "shadow", actor="guard", reason=reason)
        return True

    # ------------------------------------------------------------ reloading

    @staticmethod
    def _route_signature(routes: list[Route]) -> tuple[tuple[str, int, str], ...]:
        return tuple(sorted((r.name, r.version, r.mode) for r in routes))

    async def _maybe_reload(self) -> None:
        if time.monotonic() - self._last_reload >= self.reload_seconds:
            await self._reload()

    async def _reload(self) -> None:
        self._last_reload = time.monotonic()
        try:
            active = await asyncio.to_thread(self.routes.active)
        except Exception as e:
            log.warning("could not re-read routes: %s", e)
            return
        sig = self._route_signature(active)
        if sig != self._signature:
            await asyncio.to_thread(self.router.set_routes, active)
            self._signature = sig

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for background comparisons (at shutdown, in tests)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def aclose(self) -> None:
        """Let the deciding threads go (at shutdown, after :meth:`drain`); a later request starts new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def build_gateway_router(settings: Settings, registry: ModelRegistry, engine: Any) -> GatewayRouter:
    """The gateway router the config asks for (``routing.enabled``)."""
    cfg = settings.routing
    store = RouteStore(engine)
    router = Router.from_store(
        store,
        workloads=cfg.workloads,
        aliases=cfg.aliases,
        encoder=settings.flywheel.encoder,
        seed=cfg.seed,
        max_batch=cfg.max_batch,
        novelty=cfg.novelty,
    )
    return GatewayRouter(
        router,
        store,
        registry,
        guard_fraction=cfg.guard_fraction,
        guard_window=cfg.guard_window,
        guard_min_checks=cfg.guard_min_checks,
        target_accuracy=settings.flywheel.target_accuracy,
        reload_seconds=cfg.reload_seconds,
        concurrency=cfg.shadow_concurrency,
        seed=None if cfg.seed is None else cfg.seed + 1,
    )
