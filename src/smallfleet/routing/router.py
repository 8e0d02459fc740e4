"""The router: send a request to a promoted specialist when it is confident and valid, else escalate.

For each routable request:

1. recognise its task type with the promoted routes' matchers (the representation the
   flywheel clustered on); no match → the large model (``no_match``);
2. by the route's mode: ``off`` → large (``mode_off``); ``shadow`` → large, and the specialist answers
   off the hot path so agreement can be recorded; ``canary:P`` → a fraction P goes on;
   ``on`` → on;
3. ask the specialist; serve its answer only if its confidence reaches the route's
   threshold **and** the answer validates (:mod:`smallfleet.routing.validate`)
   **and** the request is like the route's training traffic with that answer (the route's
   :class:`~smallfleet.routing.novelty.NoveltyGate`, when it has one and ``novelty`` is on);
   otherwise escalate, saying why (``low_confidence``, ``invalid_output: …``, ``novel``,
   ``specialist_error``).

:class:`Router` holds no connections: the gateway and the demo call :meth:`Router.decide`
and act on the :class:`Decision`.

Requests to one specialist from several threads at once (the gateway decides each request
in a thread of its own) are answered **in batches** (``max_batch``): what arrives while a
batch runs goes into the next one, so under load the specialist runs at its batched
throughput; a request alone is answered at once (no timer, nothing added to its latency).
"""

from __future__ import annotations

import fnmatch
import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smallfleet.routing.routes import Route, RouteStore, parse_mode
from smallfleet.routing.validate import check_response

if TYPE_CHECKING:
    from smallfleet.routing.novelty import NoveltyGate
    from smallfleet.specialists.base import Prediction, Specialist
    from smallfleet.types import ChatRequest, ChatResponse

__all__ = ["Decision", "Router", "SpecialistBatcher"]

log = logging.getLogger("smallfleet.router")

#: A specialist folder that failed to load is not tried again for this long (its routes escalate).
RETRY_LOAD_SECONDS = 30.0
#: A specialist's batching thread stops after this long without requests (and starts again on one).
BATCHER_IDLE_SECONDS = 60.0


class SpecialistBatcher:
    """One specialist's concurrent requests answered in batches of at most ``max_batch``.

    A thread of its own runs the batches: each takes every request waiting (up to
    ``max_batch``) when the previous one ends. A batch that fails is answered again one
    request at a time, so a request the specialist cannot handle fails alone.
    """

    def __init__(self, specialist: Specialist, max_batch: int) -> None:
        self.specialist = specialist
        self.max_batch = max(1, max_batch)
        self._cond = threading.Condition()
        self._queue: list[tuple[ChatRequest, Future[Prediction]]] = []
        self._thread: threading.Thread | None = None
        # batches run, the requests in them, the largest (for tests and benchmarks)
        self.batches = self.requests = self.largest = 0

    def predict(self, request: ChatRequest) -> Prediction:
        fut: Future[Prediction] = Future()
        with self._cond:
            self._queue.append((request, fut))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="smallfleet-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        return fut.result()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(BATCHER_IDLE_SECONDS)
                    if not self._queue:  # idle: this thread ends; the next request starts one
                        self._thread = None
                        return
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
            self.batches += 1
            self.requests += len(batch)
            self.largest = max(self.largest, len(batch))
            self._answer(batch)

    def _answer(self, batch: list[tuple[ChatRequest, Future[Prediction]]]) -> None:
        try:
            preds = self.specialist.predict([r for r, _ in batch])
        except Exception as e:
            if len(batch) == 1:
                batch[0][1].set_exception(e)
            else:
                for item in batch:
                    self._answer([item])
            return
        for (_, fut), pred in zip(batch, preds, strict=True):
            fut.set_result(pred)


@dataclass
class Decision:
    """What the router decided for one request."""

    route: Route | None
    #: "small": serve ``response``; "large": forward to the large model; "shadow": forward, then compare.
    action: str
    reason: str | None = None
    prediction: Prediction | None = None
    match_ms: float = 0.0
    specialist_ms: float = 0.0
    validate_ms: float = 0.0
    #: the novelty gate's score (similarity to the training traffic with that answer), when asked
    novelty: float | None = None
    novelty_ms: float = 0.0

    @property
    def response(self) -> ChatResponse | None:
        return self.prediction.response if self.prediction is not None and self.action == "small" else None

    @property
    def confidence(self) -> float | None:
        return None if self.prediction is None else self.prediction.confidence

    @property
    def label(self) -> str:
        """The route label for traces and headers."""
        if self.action == "small" and self.route is not None:
            return f"specialist:{self.route.name}"
        if self.action == "shadow" and self.route is not None:
            return f"shadow:{self.route.name}"
        if self.reason:
            return f"escalated:{self.reason.split(':')[0]}"
        return "direct"


class Router:
    """Chooses between the promoted specialists and the large model."""

    def __init__(
        self,
        routes: Sequence[Route] = (),
        *,
        workloads: Sequence[str] = ("*",),
        aliases: Sequence[str] = ("*",),
        encoder: str | None = None,
        seed: int | None = None,
        max_batch: int = 32,
        novelty: bool = True,
    ) -> None:
        self.workloads = list(workloads)
        #: whether routes' novelty gates are applied (off: served on confidence and validity alone)
        self.novelty = novelty
        self._gates: dict[str, NoveltyGate] = {}
        self.aliases = list(aliases)
        self.encoder = encoder
        self._rng = random.Random(seed)
        self._specialists: dict[str, Specialist] = {}
        #: concurrent requests to one specialist answered together, at most this many (1: one by one)
        self.max_batch = max_batch
        self._batchers: dict[str, SpecialistBatcher] = {}
        self._failed: dict[str, tuple[float, Exception]] = {}  # path → (when, why) it failed to load
        self._lock = threading.Lock()
        # (route by name, matcher), swapped as one so a reload never splits them
        self._state: tuple[dict[str, Route], Any] = ({}, None)
        self.set_routes(routes)

    @classmethod
    def from_store(cls, store: RouteStore, **kw: Any) -> Router:
        router = cls(store.active(), **kw)
        router._store = store  # type: ignore[attr-defined]
        return router

    def reload(self) -> None:
        """Re-read the active routes from the store this router was built from."""
        store: RouteStore | None = getattr(self, "_store", None)
        if store is not None:
            self.set_routes(store.active())

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Serve these routes from now on (routes in mode ``off`` are matched, to say so, never asked)."""
        from smallfleet.routing.matcher import RouteMatcher

        known = [r for r in routes if r.active and r.matcher]
        matcher = RouteMatcher([(r.name, r.matcher) for r in known], encoder=self.encoder) if known else None
        self._state = ({r.name: r for r in known}, matcher)

    @property
    def routes(self) -> list[Route]:
        return list(self._state[0].values())

    # ------------------------------------------------------------ deciding

    def routable(self, workload: str, alias: str) -> bool:
        return any(fnmatch.fnmatchcase(workload, p) for p in self.workloads) and any(
            fnmatch.fnmatchcase(alias, p) for p in self.aliases
        )

    def match(self, request: ChatRequest) -> Route | None:
        routes, matcher = self._state
        if matcher is None:
            return None
        name = matcher.match(request)
        return None if name is None else routes.get(name)

    def specialist(self, route: Route) -> Specialist:
        """The route's specialist, loaded once; a folder that failed to load is retried after a while."""
        path = route.specialist_path
        spec = self._specialists.get(path)
        if spec is None:
            from smallfleet.specialists.base import load_specialist

            with self._lock:
                spec = self._specialists.get(path)
                if spec is None:
                    failed = self._failed.get(path)
                    if failed is not None and time.monotonic() - failed[0] < RETRY_LOAD_SECONDS:
                        raise failed[1]
                    try:
                        spec = load_specialist(path)
                    except Exception as e:
                        self._failed[path] = (time.monotonic(), e)
                        raise
                    self._failed.pop(path, None)
                    self._specialists[path] = spec
        return spec

    def gate(self, route: Route) -> NoveltyGate | None:
        """The route's novelty gate (loaded once), or None: the route has none, or ``novelty`` is off."""
        info = (route.metrics or {}).get("novelty")
        if not self.novelty or not info:
            return None
        from pathlib import Path

        from smallfleet.routing.novelty import NoveltyGate

        path = str(Path(route.specialist_path) / info.get("file", "novelty.npz"))
        gate = self._gates.get(path)
        if gate is None:
            gate = self._gates[path] = NoveltyGate.load(path)  # a racing thread loads it too: harmless
        return gate

    def predict(self, route: Route, request: ChatRequest) -> Prediction:
        """The route's specialist's answer; batched with other threads' requests to it (``max_batch``)."""
        spec = self.specialist(route)
        if self.max_batch > 1:
            batcher = self._batchers.get(route.specialist_path)
            if batcher is None:  # one per folder, as its specialist is loaded once
                with self._lock:
                    batcher = self._batchers.setdefault(
                        route.specialist_path, SpecialistBatcher(spec, self.max_batch)
                    )
            pred = batcher.predict(request)
        else:
            (pred,) = spec.predict([request])
        pred.response.model = f"smallfleet:{route.name}"
        return pred

    def decide(self, request: ChatRequest, workload: str = "default") -> Decision:
        """Match, ask the specialist if the mode says so, and validate."""
        t0 = time.perf_counter()
        if not self.routable(workload, request.model) or request.passthrough_reason() is not None:
            return Decision(route=None, action="large", reason=None)  # custom tools: passed through as sent
        route = self.match(request)
        t1 = time.perf_counter()
        if route is None:
            return Decision(route=None, action="large", reason="no_match", match_ms=(t1 - t0) * 1000)
        mode, share = parse_mode(route.mode)
        if mode == "off":
            return Decision(route=route, action="large", reason="mode_off", match_ms=(t1 - t0) * 1000)
        if mode == "shadow":
            return Decision(route=route, action="shadow", match_ms=(t1 - t0) * 1000)
        if mode == "canary" and self._rng.random() >= share:
            return Decision(route=route, action="large", reason="canary_holdout", match_ms=(t1 - t0) * 1000)
        return self._ask(route, request, t0, t1)

    def _ask(self, route: Route, request: ChatRequest, t0: float, t1: float) -> Decision:
        try:
            pred = self.predict(route, request)
        except Exception as e:
            log.warning("specialist for route %s failed: %s", route.name, e)
            return Decision(route=route, action="large", reason="specialist_error", match_ms=(t1 - t0) * 1000)
        t2 = time.perf_counter()
        decision = Decision(
            route=route,
            action="large",
            prediction=pred,
            match_ms=(t1 - t0) * 1000,
            specialist_ms=(t2 - t1) * 1000,
        )
        if pred.confidence < route.threshold:
            decision.reason = "low_confidence"
            return decision
        if route.kind == "tool_caller" and not pred.response.message.tool_calls:
            # the step's answer here is a text reply (it asks the user first): the large model's to write
            decision.reason = "specialist_replied"
            return decision
        problem = check_response(request, pred.response, route.labels)
        decision.validate_ms = (time.perf_counter() - t2) * 1000
        if problem is not None:
            decision.reason = f"invalid_output: {problem}"
            return decision
        if not self._familiar(route, request, decision):
            return decision
        decision.action = "small"
        return decision

    def _familiar(self, route: Route, request: ChatRequest, decision: Decision) -> bool:
        """Whether the route's novelty gate (if any) lets the answer be served; sets the reason if not."""
        t = time.perf_counter()
        try:
            gate = self.gate(route)
            if gate is None:
                return True
            assert decision.prediction is not None
            novel, decision.novelty = gate.check(request, decision.prediction.response)
        except Exception as e:
            log.warning("novelty gate of route %s failed: %s", route.name, e)
            decision.reason = "specialist_error"
            return False
        decision.novelty_ms = (time.perf_counter() - t) * 1000
        if novel:
            decision.reason = "novel"
        return not novel

    def agree(self, request: ChatRequest, small: ChatResponse, large: ChatResponse) -> bool:
        """Whether the specialist's answer matches the large model's (the same metric as evaluation)."""
        from smallfleet.evals.evaluate import score, shape_of

        return bool(score(small, large, request, shape_of(large)).correct)
