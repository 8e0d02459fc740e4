"""The gateway: an OpenAI-compatible ASGI app that records every call.

A hand-written ASGI core (no framework on the hot path: the gateway's own
overhead is what the benchmark measures)::

    POST /v1/chat/completions   forwarded to the alias's model, with its fallback chain
    POST /v1/responses          the Responses API, translated to and from the chat path (an :class:`Edge`)
    POST /v1/messages           Anthropic's Messages API, translated the same way (x-api-key taken too)
    GET  /v1/models             the configured aliases, in the OpenAI list shape
    POST /v1/feedback           {trace_id, score, comment}: a user's verdict on an answer
    GET  /healthz               liveness, with the trace queue depth
    GET  /metrics               Prometheus text (an admin key when keys are configured)
    GET  /ui ...                the web dashboard (smallfleet.dashboard; its own key and CSRF checks)

Every response, errors included, carries ``x-smallfleet-trace-id`` and
``x-smallfleet-route``; every chat request leaves exactly one
:class:`~smallfleet.store.records.TraceRecord`, handed to the
:class:`~smallfleet.gateway.recorder.Recorder` after the last byte is sent.

Routing seam: ``create_app(..., router=...)`` takes anything with
``async route(request, workload) -> RouteDecision | None``, called before the
request is forwarded. A decision with a ``model`` answers with that model (a
specialist); when it fails, the request goes on to the asked alias's chain with
route ``escalated:error``. ``None`` means "forward as asked". With
``routing.enabled``, :func:`create_app` builds the router from the config
(:func:`smallfleet.routing.gateway.build_gateway_router`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING, Any, Protocol

from smallfleet.errors import (
    BodyTooLarge,
    InternalError,
    MethodNotAllowed,
    ModelError,
    ModelNotFound,
    RateLimited,
    RequestInvalid,
    SmallfleetError,
    Unauthorized,
    Unavailable,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from smallfleet.gateway.auth import KeyRing, Reservation, estimate_usd
from smallfleet.gateway.intake import Intake, cut_label, raw_body_record
from smallfleet.gateway.metrics import Metrics
from smallfleet.gateway.recorder import Recorder
from smallfleet.store.records import TraceRecord

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from smallfleet.config import GatewayKey, Settings
    from smallfleet.models.base import ChatModel
    from smallfleet.models.registry import ModelRegistry
    from smallfleet.types import ChatRequest

__all__ = ["Edge", "Gateway", "RouteDecision", "Router", "create_app"]

log = logging.getLogger("smallfleet.gateway")

#: Failures after which the next alias of the chain is tried.
FALLBACK_ERRORS = (UpstreamError, UpstreamTimeout, RateLimited)

_JSON = b"application/json"
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_DONE = b"data: [DONE]\n\n"


@dataclass
class RouteDecision:
    """What a router decided for one request.

    ``model`` set: answer with it (e.g. a promoted specialist) under ``route``
    (``specialist:<name>``), recording ``confidence``. ``model`` unset: forward
    to the asked alias, recording ``escalation`` as why the router did not answer.
    """

    model: ChatModel | None = None
    route: str = "direct"
    confidence: float | None = None
    escalation: str | None = None


class Router(Protocol):
    """The seam a router plugs into: called once per request, before forwarding.

    Optional, found with ``getattr``: ``observe(request, decision, response, trace_id)``,
    called after a successful answer (e.g. to compare a shadow specialist off the
    request path; it must not block), and ``async drain()`` then ``async aclose()``, awaited
    at shutdown.
    """

    async def route(self, request: ChatRequest, workload: str) -> RouteDecision | None: ...


class Edge(Protocol):
    """Another API's wire format, translated at the gateway's edge (one object per request).

    Its body becomes a chat completions body (``chat_body``, which raises
    :class:`~smallfleet.errors.RequestInvalid` for bad input) that takes the chat path (route,
    serve, guard, price, budget, record); the chat answer, chunks and errors go back through
    the other methods. ``stream_event``/``stream_end`` return the bytes to send (``b""``: none).
    """

    def chat_body(self, data: Any, trace_id: str) -> dict[str, Any]: ...
    def response_body(self, out: dict[str, Any]) -> bytes: ...
    def error_body(self, e: SmallfleetError) -> bytes: ...
    def stream_event(self, chunk: dict[str, Any]) -> bytes: ...
    def stream_end(self) -> bytes: ...
    def stream_error(self, e: SmallfleetError) -> bytes: ...


class _ClientGone(Exception):
    """The client went away before its request body arrived.

    A control-flow signal, not an error: raised by ``_read_body`` and caught in this module
    (the request is recorded as ``client_disconnected``; nothing is sent to anyone).
    """


#: The gateway's own generator, seeded from the OS: code that seeds the global ``random`` (training
#: code, test frameworks) must never make two traces share an id (the store would keep one).
_IDS = Random()


def _trace_id() -> str:
    """A uuid4 in hex, from the fast PRNG (os.urandom costs a syscall per request; ids are not secrets)."""
    n = _IDS.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48)
    return f"{n | (0x4000 << 64) | (0x8000 << 48):032x}"


def _dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate from upstream: only an escape can carry it
        return json.dumps(obj, separators=(",", ":")).encode()


def _error_body(e: SmallfleetError) -> bytes:
    return _dumps(e.to_openai())


def _stream_error(state: _State, e: SmallfleetError) -> bytes:
    """The in-band event that ends a stream with an error, in the API's own shape."""
    if state.edge is not None:
        return state.edge.stream_error(e)
    return b"data: " + _error_body(e) + b"\n\n"


#: The one method each API path (other than the chat path) takes; another gets 405 with ``Allow``.
_METHOD_OF = {
    "/v1/feedback": "POST",
    "/feedback": "POST",
    "/v1/models": "GET",
    "/models": "GET",
    "/healthz": "GET",
    "/metrics": "GET",
    "/openapi.json": "GET",
}

_OPENAPI: bytes | None = None


def _openapi_bytes() -> bytes:
    """The API's OpenAPI document (built on first request, then kept)."""
    global _OPENAPI
    if _OPENAPI is None:
        from smallfleet.gateway.openapi import openapi_document

        _OPENAPI = _dumps(openapi_document())
    return _OPENAPI


class Gateway:
    """The ASGI application. Build it with :func:`create_app`."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        recorder: Recorder,
        *,
        prices: Any = None,
        router: Router | None = None,
        metrics: Metrics | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        store: Any = None,
        fast_transport: bool = True,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.recorder = recorder
        self.prices = prices
        self.router = router
        self.metrics = metrics or Metrics()
        self.metrics.queue_depth = recorder.depth
        self.keys = KeyRing.from_settings(settings, getattr(store, "engine", None))  # spend in the store
        self.store = store
        self.max_body = settings.gateway.max_body_bytes
        self.intake = Intake(settings.gateway)
        self.default_model = settings.gateway.default_model
        self._on_close = on_close
        self._started = False
        self._closed = False
        self._tuned = False
        self._fast_transport: Any = None
        if fast_transport:
            from smallfleet.gateway import transport

            self._fast_transport = transport.FastTransport if transport.available() else None
        self._local_aliases = {
            alias for alias, cfg in settings.models.items() if cfg.backend in ("local", "specialist")
        }

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the trace writer (idempotent)."""
        if self._started:
            return
        self._started = True
        self.recorder.start()

    def tune_for_serving(self, offload: bool = False) -> None:
        """Tune the process for this gateway's tail latency; for a process that serves it alone.

        Process-wide, so :func:`~smallfleet.gateway.server.serve` calls it and an app in a
        thread of someone's program (tests, notebooks) does not. At start-up what is alive is
        frozen out of the garbage collector (``gc.freeze``), so that no full collection walks
        the imported modules while requests wait. ``offload``: traces are also
        redacted in a child process (:meth:`Recorder.offload`): for a machine with a core to
        spare for it; on a loaded 2-core machine it cost throughput (docs/benchmarks.md).
        """
        self._tuned = True
        if offload:
            self.recorder.offload(self.settings.redaction)

    @staticmethod
    def _freeze() -> None:
        # Measured and not kept (issue 20, benchmarks/gateway_overhead.py --rounds 4 --variants
        # ...,switch1ms, 2 loaded cores): a 1 ms interpreter switch interval (default 5 ms) cost 16%
        # of the requests/s at concurrency 64 against gc.freeze alone (1,112 vs 1,325); on top of the
        # writer's sleep(0) it gave 10% more but twice the open-loop added p99 (34 vs 15 ms). A higher
        # first-generation gc threshold gave fewer, longer pauses, the same time in all.
        import gc

        gc.collect()
        gc.freeze()  # modules, settings, models: never garbage, never walked again

    async def aclose(self) -> None:
        """Drain the trace queue, then release models and the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for name in ("drain", "aclose"):  # background comparisons the router started, its threads
            step = getattr(self.router, name, None)
            if step is not None:
                try:
                    await step()
                except Exception:
                    log.exception("router.%s failed", name)
        await self.keys.drain()  # budget settlements still being written
        await asyncio.get_running_loop().run_in_executor(None, self.recorder.close)
        try:
            await self.registry.aclose()
        finally:
            if self._on_close is not None:
                await self._on_close()

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            if not self._started:
                self.start()
            path = scope["path"]
            method = scope["method"]
            if path == "/v1/chat/completions" or path == "/chat/completions":
                await self._chat(scope, receive, send)  # every request here is traced, refusals too
                return
            if path == "/v1/responses" or path == "/responses":
                from smallfleet.gateway.responses_api import ResponsesEdge

                await self._chat(scope, receive, send, ResponsesEdge())  # the chat path, translated
                return
            if path == "/v1/messages":  # Anthropic's Messages API: the chat path, translated
                from smallfleet.gateway.messages_api import MessagesEdge, with_api_key

                await self._chat(with_api_key(scope), receive, send, MessagesEdge())
                return
            try:
                self.intake.check_source(method, _header(scope, b"host"), _header(scope, b"origin"))
            except SmallfleetError as e:
                await _send(send, e.status_code, _error_body(e), _JSON)
                return
            allowed = _METHOD_OF.get(path)
            if allowed is not None and method != allowed:
                await self._plain_error(
                    send, 405, f"Use {allowed} for {path}.", code="method_not_allowed", allow=allowed
                )
            elif path in ("/v1/feedback", "/feedback"):
                await self._feedback(scope, receive, send)
            elif path in ("/v1/models", "/models"):
                await self._models(scope, send)
            elif path == "/healthz":
                await self._health(send)
            elif path == "/metrics":
                await self._metrics(scope, send)
            elif path == "/openapi.json":
                await _send(send, 200, _openapi_bytes(), _JSON)
            elif path == "/ui" or path.startswith("/ui/"):
                await self._dashboard(scope, receive, send)
            else:
                await self._plain_error(send, 404, f"No route {method} {path}.", code="not_found")
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                if self._tuned:
                    self._freeze()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                try:
                    await self.aclose()
                except Exception as e:
                    log.exception("Gateway shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health(self, send: Any) -> None:
        """200 while traces are being written; 503 while the store keeps refusing or failing."""
        depth = self.recorder.depth()
        if self.recorder.healthy():
            await _send(send, 200, _dumps({"status": "ok", "trace_queue_depth": depth}), _JSON)
            return
        body = {
            "status": "unhealthy",
            "reason": "traces are not being written: the store keeps failing (see the gateway log)",
            "trace_queue_depth": depth,
        }
        await _send(send, 503, _dumps(body), _JSON)

    async def _plain_error(
        self, send: Any, status: int, message: str, code: str | None = None, allow: str | None = None
    ) -> None:
        body = _dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        )
        await _send(send, status, body, _JSON, extra=[(b"allow", allow.encode())] if allow else None)

    async def _dashboard(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The web dashboard (:mod:`smallfleet.dashboard`), built on first use so jinja2 loads only then."""
        ui = getattr(self, "_ui", None)
        if ui is None:
            if self.store is None:
                await self._plain_error(send, 404, "The dashboard needs a trace store.", code="not_found")
                return
            from smallfleet.dashboard import create_dashboard

            ui = self._ui = create_dashboard(
                self.store,
                self.keys,
                metrics=self.metrics,
                session_secret=self.settings.gateway.session_secret,
            )
        await ui(scope, receive, send)

    def _admin_check(self, scope: dict[str, Any], *, admin: bool) -> None:
        if not self.keys.enabled:
            return
        key = self.keys.authenticate(_header(scope, b"authorization"))
        if admin and key is not None and not key.admin:
            raise Unauthorized(f"Key {key.name!r} is not an admin key; /metrics needs one.")

    async def _models(self, scope: dict[str, Any], send: Any) -> None:
        try:
            self._admin_check(scope, admin=False)
        except SmallfleetError as e:
            await _send(send, e.status_code, _error_body(e), _JSON)
            return
        data = [
            {"id": alias, "object": "model", "created": 0, "owned_by": "smallfleet"}
            for alias in self.registry.aliases()
        ]
        await _send(send, 200, _dumps({"object": "list", "data": data}), _JSON)

    async def _feedback(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``POST /v1/feedback {trace_id, score, comment?}``: a user's verdict on an answer (for curation).

        The recorder writes traces in the background, so an id the store does not hold yet is
        looked up again after this gateway's recorder has flushed; still unknown → 404.
        """
        try:
            self._admin_check(scope, admin=False)
            if self.store is None:
                await self._plain_error(send, 404, "Feedback needs a trace store.", code="not_found")
                return
            try:
                body = await self._read_body(receive, _header_bytes(scope, b"content-length"))
            except _ClientGone:
                return
            self.intake.check_content_type(_header(scope, b"content-type"))
            trace_id, score, comment = _parse_feedback(self.intake.parse_json(body)[0])
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(None, self.store.get_trace, trace_id) is None:
                await loop.run_in_executor(None, self.recorder.flush, 5.0)
                if await loop.run_in_executor(None, self.store.get_trace, trace_id) is None:
                    message = (
                        f"No trace {trace_id!r}. Use the x-smallfleet-trace-id header of a response; "
                        "a trace answered by another gateway may take a moment to be stored."
                    )
                    await self._plain_error(send, 404, message, code="trace_not_found")
                    return
            redactor = self.recorder.redactor
            if comment is not None and redactor is not None:  # stored like every other string: redacted
                comment = redactor.redact_text(comment)
            await loop.run_in_executor(None, self.store.add_feedback, trace_id, score, comment)
        except SmallfleetError as e:
            await _send(send, e.status_code, _error_body(e), _JSON)
            return
        except Exception as e:  # e.g. the store is down: an OpenAI-style 500, never a bare one
            log.exception("Feedback failed")
            internal = InternalError(f"Internal error in the gateway ({type(e).__name__}) storing feedback.")
            await _send(send, 500, _error_body(internal), _JSON)
            return
        out = {"object": "feedback", "trace_id": trace_id, "score": score, "comment": comment}
        await _send(send, 200, _dumps(out), _JSON)

    async def _metrics(self, scope: dict[str, Any], send: Any) -> None:
        try:
            self._admin_check(scope, admin=True)
        except SmallfleetError as e:
            await _send(send, e.status_code, _error_body(e), _JSON)
            return
        await _send(send, 200, self.metrics.render().encode(), b"text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------ chat completions

    async def _chat(self, scope: dict[str, Any], receive: Any, send: Any, edge: Edge | None = None) -> None:
        t0 = time.perf_counter()
        rec = TraceRecord(
            id=_trace_id(), created_at=time.time(), route="rejected", status="error", http_status=500
        )
        state = _State()
        state.edge = edge
        self.metrics.in_flight += 1
        try:
            await self._handle(scope, receive, send, rec, state, t0)
        except _ClientGone:
            rec.status, rec.http_status, rec.error = "client_disconnected", 499, "client left before the body"
        except SmallfleetError as e:
            await self._fail(send, rec, state, e)
        except Exception as e:
            log.exception("Unexpected error in trace %s", rec.id)
            internal = InternalError(
                f"Internal error in the gateway ({type(e).__name__}); trace id {rec.id}."
            )
            await self._fail(send, rec, state, internal)
        finally:
            try:
                self._finish(rec, state, t0)
            finally:
                self.metrics.in_flight -= 1

    async def _handle(
        self, scope: dict[str, Any], receive: Any, send: Any, rec: TraceRecord, state: _State, t0: float
    ) -> None:
        from smallfleet.types import ChatRequest

        workload = length = authorization = ctype = host = origin = None
        for name, value in scope["headers"]:
            if name == b"x-smallfleet-workload":
                workload = value.decode("latin-1").strip() or None
            elif name == b"content-length":
                length = value
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                ctype = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        limit = self.intake.max_label
        if workload:
            rec.workload = cut_label(workload, limit)
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"Use POST for {scope['path']}, not {scope['method']}.")
        self.intake.check_source("POST", host, origin)
        key = self.keys.authenticate(authorization) if self.keys.enabled else None
        if key is not None:
            rec.key_id = key.name
            state.key = key
        body = await self._read_body(receive, length)
        try:
            self.intake.check_content_type(ctype)
            data, body = self.intake.parse_json(body)
            if state.edge is not None:  # another API's body: from here on, a chat completions body
                data = state.edge.chat_body(data, rec.id)
                body = _dumps(data)
        except SmallfleetError:
            rec.request = raw_body_record(body)  # what was received, for the record
            raise
        if not isinstance(data, dict):
            rec.request = raw_body_record(body)
        else:
            rec.request = data
            model = data.get("model")
            rec.model_requested = cut_label(model, limit) if isinstance(model, str) else ""
            meta = data.get("metadata")
            if workload is None and isinstance(meta, dict) and isinstance(meta.get("workload"), str):
                rec.workload = cut_label(meta["workload"], limit) or "default"
                workload = meta["workload"]
            if isinstance(model, str):
                self.intake.check_label(model, "model")
        if workload:
            self.intake.check_label(workload, "workload")
        request = ChatRequest.parse(data)
        rec.tool_names = request.tool_names()
        rec.stream = bool(request.stream)
        alias = self._resolve(request.model)
        chain = self.registry.chain(alias)
        if key is not None and key.daily_budget_usd is not None:  # held now, settled in _finish
            budget_tokens = self.settings.gateway.budget_max_tokens
            estimate = estimate_usd(request, chain, self.prices, budget_tokens)
            try:
                state.reservation = await self.keys.areserve(key, estimate)
            except SmallfleetError:
                raise
            except Exception as e:  # the ledger's database: a budget that cannot be checked is not spent
                log.error("Trace %s: the budget ledger failed (%s: %s)", rec.id, type(e).__name__, e)
                raise Unavailable("This key's budget cannot be checked right now; retry shortly.") from None
        first: tuple[ChatModel, str] | None = None
        escalation: str | None = None
        if self.router is not None:
            decision = await self.router.route(request, rec.workload)
            state.request, state.decision = request, decision
            if decision is not None:
                rec.confidence = decision.confidence
                rec.escalation = escalation = decision.escalation
                if decision.model is not None:
                    first = (decision.model, decision.route)
        attempts = self._attempts(chain, first, escalation)
        if request.stream:
            await self._stream(receive, send, rec, state, request, data, attempts, t0)
        else:
            await self._complete(send, rec, state, request, data, body, attempts)

    async def _read_body(self, receive: Any, length: bytes | None) -> bytes:
        limit = self.max_body
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise RequestInvalid(
                    "The Content-Length header is not a number.", code="invalid_header"
                ) from None
            if declared > limit:
                raise BodyTooLarge(
                    f"The request body is {declared} bytes; this gateway takes at most {limit}."
                )
        parts: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(
                        f"The request body is over {limit} bytes, the most this gateway takes."
                    )
                parts.append(chunk)
            if not msg.get("more_body"):
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _model(self, alias: str) -> ChatModel:
        model = self.registry.get(alias)
        # An OpenAI-compatible backend not yet connected: give it the lean plain-HTTP pool.
        if self._fast_transport is not None and getattr(model, "transport_factory", False) is None:
            model.transport_factory = self._fast_transport  # type: ignore[attr-defined]
        return model

    def _resolve(self, model: str) -> str:
        if model in self.registry:
            return model
        if self.default_model:
            return self.default_model
        raise ModelNotFound(model, self.registry.aliases())

    @staticmethod
    def _attempts(
        chain: list[str], first: tuple[ChatModel, str] | None, escalation: str | None = None
    ) -> list[tuple[ChatModel | None, str, str]]:
        """(model, or None to look it up; alias; route) in the order to try them.

        Routes: ``direct`` / ``fallback:<alias>``; ``escalated:<reason>`` when a router
        sent a routable request to the asked model, ``escalated:error`` when the
        router's own model failed.
        """
        out: list[tuple[ChatModel | None, str, str]] = []
        if first is not None:
            out.append((first[0], first[0].name, first[1]))
            escalation = "error"
        for i, alias in enumerate(chain):
            if i:
                route = f"fallback:{alias}"
            elif escalation:  # the reason's code only ("invalid_output: <detail>" → invalid_output)
                route = f"escalated:{escalation.split(':')[0]}"
            else:
                route = "direct"
            out.append((None, alias, route))
        return out

    async def _complete(
        self,
        send: Any,
        rec: TraceRecord,
        state: _State,
        request: ChatRequest,
        data: dict[str, Any],
        body: bytes,
        attempts: list[tuple[ChatModel | None, str, str]],
    ) -> None:
        error: Exception | None = None
        for model, alias, route in attempts:
            rec.route, rec.model_served = route, alias
            try:
                if model is None:
                    model = self._model(alias)
                out = await _complete_dict(model, request, data, body)
            except UpstreamRejected:
                raise  # the client's own error: another model would refuse it too
            except FALLBACK_ERRORS as e:
                error = e
                log.info("Trace %s: %s failed (%s)", rec.id, alias, e.message)
                continue
            except ModelError as e:  # e.g. a specialist's output did not validate
                if route.startswith("specialist:"):
                    error = e
                    continue
                raise
            payload = _dumps(out) if state.edge is None else state.edge.response_body(out)
            await _send(send, 200, payload, _JSON, rec.id, route, _confidence_header(rec))
            state.sent = True
            rec.response = out
            rec.status, rec.http_status, rec.error = "ok", 200, None
            _usage_into(rec, out.get("usage"))
            return
        assert error is not None
        raise error

    async def _stream(
        self,
        receive: Any,
        send: Any,
        rec: TraceRecord,
        state: _State,
        request: ChatRequest,
        data: dict[str, Any],
        attempts: list[tuple[ChatModel | None, str, str]],
        t0: float,
    ) -> None:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        edge = state.edge
        error: Exception | None = None
        chunks: AsyncIterator[dict[str, Any]] | None = None
        first: dict[str, Any] | None = None
        for model, alias, route in attempts:
            rec.route, rec.model_served = route, alias
            try:
                if model is None:
                    model = self._model(alias)
                chunks = _stream_dicts(model, request, data)
                first = await anext(chunks, None)
            except UpstreamRejected:
                if chunks is not None:
                    await chunks.aclose()  # type: ignore[attr-defined]
                raise  # the client's own error: another model would refuse it too
            except FALLBACK_ERRORS as e:
                error = e
                log.info("Trace %s: %s failed before streaming (%s)", rec.id, alias, e.message)
                if chunks is not None:
                    await chunks.aclose()  # type: ignore[attr-defined]
                chunks = None
                continue
            break
        if chunks is None:
            assert error is not None
            raise error
        headers = [
            *_SSE_HEADERS,
            (b"x-smallfleet-trace-id", rec.id.encode()),
            (b"x-smallfleet-route", rec.route.encode()),
            *_confidence_header(rec),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        state.sent = state.open_stream = True
        first_sent = time.perf_counter() - t0
        rec.http_status = 200
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        kept: list[dict[str, Any]] = []
        usage: dict[str, Any] | None = None
        try:
            chunk = first
            while chunk is not None:
                u = chunk.get("usage")
                if u:
                    usage = u
                kept.append(chunk)
                choices = chunk.get("choices")
                if choices or include_usage:
                    if state.ttft is None and choices and _has_content(choices):
                        state.ttft = time.perf_counter() - t0
                    event = b"data: " + _dumps(chunk) + b"\n\n" if edge is None else edge.stream_event(chunk)
                    if event:
                        await send({"type": "http.response.body", "body": event, "more_body": True})
                if gone.done():
                    rec.status, rec.error = "client_disconnected", "the client disconnected mid-stream"
                    return
                chunk = await anext(chunks, None)
            state.open_stream = False
            end = _DONE if edge is None else edge.stream_end()
            await send({"type": "http.response.body", "body": end, "more_body": False})
            rec.status, rec.error = "ok", None
        except ModelError as e:
            # Bytes are out already: no fallback now; tell the client in-band and end the stream.
            rec.status, rec.error = "error", e.message
            rec.http_status = e.status_code
            self._log_failure(rec, e)
            event = _stream_error(state, e)
            state.open_stream = False
            await send({"type": "http.response.body", "body": event, "more_body": False})
        finally:
            gone.cancel()
            await chunks.aclose()  # type: ignore[attr-defined]
            state.latency = time.perf_counter() - t0
            if state.ttft is None:
                state.ttft = first_sent
            rec.ttft_ms = state.ttft * 1000
            rec.response = _assemble(kept)
            if usage is not None:
                _usage_into(rec, usage)
            else:
                _estimate_usage(rec, request, rec.response)
            if rec.status == "client_disconnected":
                rec.http_status = 499

    async def _fail(self, send: Any, rec: TraceRecord, state: _State, e: SmallfleetError) -> None:
        rec.status = "error"
        rec.error = e.message
        rec.http_status = e.status_code
        if not isinstance(e, InternalError):  # logged with its traceback where it was caught
            self._log_failure(rec, e)
        if state.open_stream:  # a stream had started: say it in-band and end it
            event = _stream_error(state, e)
            state.open_stream = False
            await send({"type": "http.response.body", "body": event, "more_body": False})
            return
        if state.sent:
            return
        if not isinstance(e, ModelError | InternalError):
            rec.route = "rejected"
        extra: list[tuple[bytes, bytes]] = []
        if isinstance(e, MethodNotAllowed):
            extra.append((b"allow", b"POST"))
        retry_after = getattr(e, "retry_after", None)
        if isinstance(e, RateLimited) and retry_after:
            extra.append((b"retry-after", str(int(retry_after + 0.999)).encode()))
        body = _error_body(e) if state.edge is None else state.edge.error_body(e)
        await _send(send, e.status_code, body, _JSON, rec.id, rec.route, extra)
        state.sent = True

    def _log_failure(self, rec: TraceRecord, e: SmallfleetError) -> None:
        """One line in the gateway's log for a request it failed, redacted like its trace.

        A refusal of the client's own request (4xx) at DEBUG; an upstream failure or
        another 5xx at WARNING.
        """
        level = logging.WARNING if e.status_code >= 500 or isinstance(e, FALLBACK_ERRORS) else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        message = e.message
        redactor = self.recorder.redactor
        if redactor is not None:  # the log's own redaction may be off (another log record factory)
            message = redactor.redact_text(message)
        model = rec.model_served or rec.model_requested or "-"
        log.log(
            level,
            "Trace %s failed: %d %s (model %s, route %s): %s",
            rec.id,
            e.status_code,
            e.code or e.error_type,
            model,
            rec.route,
            message,
        )

    def _finish(self, rec: TraceRecord, state: _State, t0: float) -> None:
        latency = state.latency if state.latency is not None else time.perf_counter() - t0
        rec.latency_ms = latency * 1000
        if rec.status != "error" or rec.input_tokens or rec.output_tokens:
            rec.cost_usd = self._cost(rec, latency)
        self.keys.settle_soon(state.reservation, rec.cost_usd)  # whatever happened, exactly once
        model = rec.model_served or (
            rec.model_requested if rec.model_requested in self.registry else "unknown"
        )
        self.metrics.observe(
            rec.workload,
            model,
            rec.route,
            rec.status,
            duration_s=latency,
            input_tokens=rec.input_tokens,
            output_tokens=rec.output_tokens,
            cost_usd=rec.cost_usd,
            ttft_s=state.ttft,
        )
        observe = getattr(self.router, "observe", None)
        if observe is not None and state.request is not None and rec.status == "ok" and rec.response:
            try:  # e.g. a shadow comparison, scheduled off the request path by the router
                observe(state.request, state.decision, rec.response, rec.id)
            except Exception:
                log.exception("router.observe failed for trace %s", rec.id)
        self.recorder.submit(rec)  # last: the writer thread replaces the bodies with redacted ones

    def _cost(self, rec: TraceRecord, latency: float) -> float | None:
        alias = rec.model_served
        if alias is None or self.prices is None:
            return None
        if alias in self._local_aliases or rec.route.startswith("specialist:"):
            return self.prices.local_cost(latency)  # priced by compute time
        cost = self.prices.cost(alias, rec.input_tokens, rec.output_tokens, rec.cached_tokens)
        if cost is None and isinstance(rec.response, dict) and isinstance(rec.response.get("model"), str):
            cost = self.prices.cost(
                rec.response["model"], rec.input_tokens, rec.output_tokens, rec.cached_tokens
            )
        return cost


class _State:
    """What the request path knows about its own response."""

    __slots__ = (
        "decision",
        "edge",
        "key",
        "latency",
        "open_stream",
        "request",
        "reservation",
        "sent",
        "ttft",
    )

    def __init__(self) -> None:
        self.edge: Edge | None = None
        self.request: ChatRequest | None = None
        self.decision: RouteDecision | None = None
        self.sent = False
        self.open_stream = False
        self.latency: float | None = None
        self.ttft: float | None = None
        self.key: GatewayKey | None = None
        self.reservation: Reservation | None = None


# ---------------------------------------------------------------- helpers


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


def _confidence_header(rec: TraceRecord) -> list[tuple[bytes, bytes]]:
    """``x-smallfleet-confidence`` when a router scored the request (a specialist's confidence)."""
    if rec.confidence is None:
        return []
    return [(b"x-smallfleet-confidence", f"{rec.confidence:.4f}".encode())]


def _header_bytes(scope: dict[str, Any], name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return v
    return None


_TRACE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _parse_feedback(data: Any) -> tuple[str, float, str | None]:
    """(trace_id, score, comment) from a parsed feedback body, or RequestInvalid naming the field."""
    import math

    if not isinstance(data, dict):
        raise RequestInvalid("The body must be a JSON object {trace_id, score, comment}.")
    unknown = sorted(set(data) - {"trace_id", "score", "comment"})
    if unknown:
        message = f"Unknown field {unknown[0]!r}; feedback takes trace_id, score, comment."
        raise RequestInvalid(message, unknown[0])
    trace_id = data.get("trace_id")
    if not isinstance(trace_id, str) or _TRACE_ID.fullmatch(trace_id.strip()) is None:
        raise RequestInvalid("'trace_id' must be the x-smallfleet-trace-id of a response.", "trace_id")
    score = data.get("score")
    try:
        finite = not isinstance(score, bool) and isinstance(score, int | float) and math.isfinite(score)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise RequestInvalid("'score' must be a finite number (negative: a bad answer).", "score")
    comment = data.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 10_000):
        raise RequestInvalid("'comment' must be a string of at most 10000 characters.", "comment")
    return trace_id.strip(), float(score), comment


async def _send(
    send: Any,
    status: int,
    body: bytes,
    ctype: bytes,
    trace_id: str | None = None,
    route: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    if trace_id is not None:
        headers.append((b"x-smallfleet-trace-id", trace_id.encode()))
    if route is not None:
        headers.append((b"x-smallfleet-route", route.encode()))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _wait_disconnect(receive: Any) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


def _has_content(choices: list[Any]) -> bool:
    for c in choices:
        d = c.get("delta") if isinstance(c, dict) else None
        if d and (d.get("content") or d.get("tool_calls") or d.get("refusal")):
            return True
    return False


def _usage_into(rec: TraceRecord, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    rec.input_tokens = int(usage.get("prompt_tokens") or 0)
    rec.output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        rec.cached_tokens = int(details.get("cached_tokens") or 0)


def _estimate_usage(rec: TraceRecord, request: ChatRequest, response: dict[str, Any] | None) -> None:
    """No usage from the upstream: about four characters a token."""
    from smallfleet.types import content_text

    prompt = sum(len(content_text(m.content)) for m in request.messages if hasattr(m, "content"))
    rec.input_tokens = (prompt + 3) // 4
    if response:
        msg = (response.get("choices") or [{}])[0].get("message") or {}
        out = len(msg.get("content") or "")
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") or {}
            out += len(fn.get("name") or "") + len(fn.get("arguments") or "")
        rec.output_tokens = (out + 3) // 4


def _assemble(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The response a stream adds up to (for the trace)."""
    from pydantic import ValidationError

    from smallfleet.types import ChatChunk, chunks_to_response

    if not chunks:
        return None
    try:
        return chunks_to_response(ChatChunk.model_validate(c) for c in chunks).to_dict()
    except ValidationError:
        return {"chunks": chunks}


async def _complete_dict(
    model: ChatModel, request: ChatRequest, data: dict[str, Any], raw_body: bytes
) -> dict[str, Any]:
    """The model's answer as a wire dict; raw (no pydantic round trip) when the model offers it."""
    raw = getattr(model, "complete_raw", None)
    body_for = getattr(model, "body_for", None)
    if raw is not None and body_for is not None:
        if getattr(model, "model", None) == data.get("model") and "stream" not in data:
            return await raw(raw_body)  # the client's bytes are already what the upstream needs
        body = body_for(data)
        body.pop("stream", None)
        body.pop("stream_options", None)
        return await raw(body)
    return (await model.complete(request)).to_dict()


async def _stream_dicts(
    model: ChatModel, request: ChatRequest, data: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """The model's stream as wire dicts, always asking for usage (hidden again if the client did not)."""
    raw = getattr(model, "stream_raw", None)
    body_for = getattr(model, "body_for", None)
    if raw is not None and body_for is not None:
        body = body_for(data)
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        async for chunk in raw(body):
            yield chunk
        return
    from smallfleet.types import StreamOptions

    asked = request.model_copy(update={"stream_options": StreamOptions(include_usage=True)})
    async for c in model.stream(asked):
        yield c.to_dict()


# ---------------------------------------------------------------- construction


def create_app(
    settings: Settings,
    registry: ModelRegistry | None = None,
    store: Any = None,
    *,
    router: Router | None = None,
    recorder: Recorder | None = None,
    fast_transport: bool = True,
) -> Gateway:
    """The gateway app for ``settings``.

    ``registry`` defaults to one built from ``settings.models``; ``store`` to a
    :class:`~smallfleet.store.TraceStore` on ``settings.store.url`` (closed with
    the app; a store passed in stays the caller's to close). ``fast_transport``:
    OpenAI-compatible upstreams on plain HTTP go through
    :class:`~smallfleet.gateway.transport.FastTransport` instead of httpx's pool.
    """
    from smallfleet.encoders import set_dtype
    from smallfleet.models.registry import ModelRegistry
    from smallfleet.store.pricing import PriceTable
    from smallfleet.store.redact import Redactor, install_log_redaction

    set_dtype(settings.flywheel.encoder_dtype)  # what the router's matcher embeds in
    registry = registry or ModelRegistry(settings)
    owns_store = store is None
    if store is None:
        from smallfleet.store.trace_store import TraceStore

        store = TraceStore(settings.store.url)
    if router is None and settings.routing.enabled:
        from smallfleet.routing.gateway import build_gateway_router

        router = build_gateway_router(settings, registry, store.engine)
    gw_cfg = settings.gateway
    metrics = Metrics(gw_cfg.metrics_workloads, gw_cfg.metrics_max_workloads)
    redactor = Redactor(settings.redaction)
    install_log_redaction(redactor)  # every log record of the process passes it too (not when disabled)
    if recorder is None:
        recorder = Recorder(
            store,
            redactor=redactor,
            flush_interval_ms=gw_cfg.flush_interval_ms,
            batch_size=gw_cfg.batch_size,
            queue_size=gw_cfg.queue_size,
            metrics=metrics,
            dead_letter_path=gw_cfg.dead_letter_path,
        )
    else:
        recorder.metrics = metrics
    if recorder.exporter is None:  # spans of the recorded traces (telemetry.otlp_endpoint; else None)
        from smallfleet.gateway.telemetry import build_span_export

        recorder.exporter = build_span_export(settings)

    async def close_store() -> None:
        if owns_store:
            store.close()

    return Gateway(
        settings,
        registry,
        recorder,
        prices=PriceTable(settings.pricing, dict(settings.models)),
        router=router,
        metrics=metrics,
        on_close=close_store,
        store=store,
        fast_transport=fast_transport,
    )
