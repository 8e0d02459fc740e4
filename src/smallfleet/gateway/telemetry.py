"""OpenTelemetry export: one span per recorded call, in the GenAI semantic conventions.

Opt-in (``telemetry.otlp_endpoint``; ``pip install 'smallfleet[otel]'``). The
:class:`~smallfleet.gateway.recorder.Recorder`'s writer thread hands each batch of
traces to :meth:`SpanExport.export` once they are redacted, so a span holds what
the store holds and nothing is done on the request path. Spans go to the
collector through the OpenTelemetry SDK's ``BatchSpanProcessor`` and OTLP/HTTP
(protobuf) exporter, in a thread of their own; :meth:`SpanExport.shutdown` (called
by :meth:`Recorder.close <smallfleet.gateway.recorder.Recorder.close>` at gateway
shutdown) sends what is left.

Each span:

- name ``chat {gen_ai.request.model}``, kind CLIENT, start and end from the trace's
  ``created_at`` and ``latency_ms``; its trace id is the smallfleet trace id (the
  ``x-smallfleet-trace-id`` header), so a trace found in one tool is found in the other.
- ``gen_ai.operation.name``, ``gen_ai.provider.name`` (and the older ``gen_ai.system``),
  ``gen_ai.request.model`` (the alias asked for), ``gen_ai.response.model``,
  ``gen_ai.response.id``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
  ``gen_ai.response.finish_reasons``, the request's sampling parameters,
  ``server.address`` / ``server.port`` of the upstream, ``error.type`` and an ERROR
  status for a failed call.
- ``smallfleet.route``, ``smallfleet.escalation_reason``, ``smallfleet.confidence``,
  ``smallfleet.cost_usd``, ``smallfleet.workload``, ``smallfleet.trace_id``, ...
- with ``export_content`` only: ``gen_ai.input.messages``, ``gen_ai.output.messages``,
  ``gen_ai.system_instructions`` and ``gen_ai.tool.definitions`` (JSON, redacted).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from smallfleet.config import Settings, TelemetryConfig
    from smallfleet.store.records import TraceRecord

__all__ = ["SpanExport", "build_span_export", "otlp_traces_url", "span_attributes"]

log = logging.getLogger("smallfleet.gateway.telemetry")

#: What ``gen_ai.provider.name`` says for an answer computed in this process.
LOCAL_PROVIDER = "smallfleet"
_TRACES_PATH = "/v1/traces"
#: Request parameters → their GenAI attribute.
_REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "n": "gen_ai.request.choice.count",
}
_TEXT_BLOCKS = frozenset({"text", "input_text", "output_text"})


def otlp_traces_url(endpoint: str) -> str:
    """The collector's traces URL: ``endpoint`` as is when it ends in ``/v1/traces``, else with it."""
    url = endpoint.rstrip("/")
    return url if url.endswith(_TRACES_PATH) else url + _TRACES_PATH


def build_span_export(settings: Settings) -> SpanExport | None:
    """The span export ``settings.telemetry`` asks for; None when no ``otlp_endpoint`` is set."""
    if not settings.telemetry.otlp_endpoint:
        return None
    return SpanExport(settings.telemetry, _upstreams(settings))


class SpanExport:
    """Turns recorded (redacted) traces into spans sent to an OTLP/HTTP collector in batches."""

    def __init__(
        self, config: TelemetryConfig, upstreams: Mapping[str, tuple[str, str | None]] | None = None
    ) -> None:
        """``upstreams``: model alias → (provider name, base URL or None), for the spans' server."""
        from smallfleet._extras import require

        sdk_trace = require("opentelemetry.sdk.trace", "otel")
        otlp = require("opentelemetry.exporter.otlp.proto.http.trace_exporter", "otel")
        from opentelemetry.context import Context
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode

        from smallfleet.__about__ import __version__

        assert config.otlp_endpoint is not None
        self.config = config
        self.endpoint = otlp_traces_url(config.otlp_endpoint)
        self.exported = 0
        self._upstreams = dict(upstreams or {})
        self._ids = _TraceIds()
        self._lock = threading.Lock()
        self._closed = False
        self._kind, self._status, self._error = SpanKind.CLIENT, Status, StatusCode.ERROR
        self._root = Context()  # no parent, whatever span is current where export() runs
        exporter = otlp.OTLPSpanExporter(
            endpoint=self.endpoint, headers=dict(config.headers) or None, timeout=config.timeout_s
        )
        self._processor = BatchSpanProcessor(
            exporter,
            max_queue_size=8192,
            schedule_delay_millis=config.batch_delay_ms,
            max_export_batch_size=512,
            export_timeout_millis=config.timeout_s * 1000,
        )
        resource = Resource.create({"service.name": config.service_name, "service.version": __version__})
        # A provider of our own: the process's global one (if the user set one) stays theirs.
        self._provider = sdk_trace.TracerProvider(
            resource=resource, id_generator=self._ids.generator(), shutdown_on_exit=False
        )
        self._provider.add_span_processor(self._processor)
        self._tracer = self._provider.get_tracer("smallfleet.gateway", __version__)

    def export(self, records: Sequence[TraceRecord]) -> None:
        """One span per record, queued for the batch exporter (called from the recorder's writer)."""
        with self._lock:
            if self._closed:
                return
            for record in records:
                try:
                    self._span(record)
                except Exception as e:  # one odd trace costs its own span, not the batch's
                    log.warning("No span for trace %s (%s: %s).", record.id, type(e).__name__, e)
                time.sleep(0)  # about 60 µs of CPU a span: the event loop may be waiting for the interpreter
            self.exported += len(records)

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Send every queued span now; False when the collector did not take them in time."""
        return bool(self._provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (within ``timeout_s``), then stop the export thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self.force_flush(timeout_s):
            log.warning("Some spans were not sent to %s before shutdown.", self.endpoint)
        self._provider.shutdown()

    def _span(self, record: TraceRecord) -> None:
        provider, base_url = self._upstream(record)
        attrs = span_attributes(record, provider, base_url, content=self.config.export_content)
        start = int(record.created_at * 1e9)
        end = start + int((record.latency_ms or 0.0) * 1e6)
        self._ids.next_trace_id = _trace_id(record.id)
        span = self._tracer.start_span(
            f"chat {record.model_requested}".rstrip(),
            context=self._root,
            kind=self._kind,
            attributes=attrs,
            start_time=start,
        )
        if record.status != "ok":
            span.set_status(self._status(self._error, (record.error or record.status)[:1000]))
        span.end(end_time=end)

    def _upstream(self, record: TraceRecord) -> tuple[str, str | None]:
        if record.route.startswith("specialist:"):
            return LOCAL_PROVIDER, None
        alias = record.model_served or record.model_requested
        return self._upstreams.get(alias, (LOCAL_PROVIDER, None))


def _upstreams(settings: Settings) -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    for alias, cfg in settings.models.items():
        backend = str(getattr(cfg, "backend", ""))
        provider = LOCAL_PROVIDER if backend in ("local", "specialist", "") else backend
        out[alias] = (provider, getattr(cfg, "base_url", None))
    return out


class _TraceIds:
    """Gives the next span the trace id it is told (the smallfleet trace id), else a random one."""

    def __init__(self) -> None:
        self.next_trace_id: int | None = None
        self._random = random.Random()

    def generator(self) -> Any:
        from opentelemetry.sdk.trace.id_generator import IdGenerator

        ids = self

        class _Generator(IdGenerator):
            def generate_span_id(self) -> int:
                return ids._random.getrandbits(64) or 1

            def generate_trace_id(self) -> int:
                chosen, ids.next_trace_id = ids.next_trace_id, None
                return chosen or ids._random.getrandbits(128) or 1

            def is_trace_id_random(self) -> bool:
                return True  # a uuid4's low 56 bits are random

        return _Generator()


def _trace_id(trace_id: str) -> int | None:
    if len(trace_id) != 32:
        return None
    try:
        return int(trace_id, 16) or None
    except ValueError:
        return None


# ---------------------------------------------------------------- attributes


def span_attributes(
    record: TraceRecord, provider: str, base_url: str | None = None, *, content: bool = False
) -> dict[str, Any]:
    """The span attributes of one (redacted) trace; the messages only when ``content``."""
    request = record.request if isinstance(record.request, dict) else {}
    response = record.response if isinstance(record.response, dict) else {}
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": record.model_requested,
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
        "smallfleet.trace_id": record.id,
        "smallfleet.route": record.route,
        "smallfleet.workload": record.workload,
        "smallfleet.status": record.status,
        "smallfleet.http_status": record.http_status,
        "smallfleet.stream": record.stream,
    }
    response_model = response.get("model")
    if isinstance(response_model, str) and response_model:
        attrs["gen_ai.response.model"] = response_model
    elif record.model_served:
        attrs["gen_ai.response.model"] = record.model_served
    if isinstance(response.get("id"), str):
        attrs["gen_ai.response.id"] = response["id"]
    reasons = finish_reasons(response)
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    if record.cached_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = record.cached_tokens
    for key, name in _REQUEST_PARAMS.items():
        value = request.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[name] = value
    stop = request.get("stop", request.get("stop_sequences"))
    if isinstance(stop, str):
        attrs["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and stop:
        attrs["gen_ai.request.stop_sequences"] = stop
    if base_url:
        parts = urlsplit(base_url)
        if parts.hostname:
            attrs["server.address"] = parts.hostname
            attrs["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    if record.status != "ok":
        attrs["error.type"] = "client_disconnected" if record.http_status == 499 else str(record.http_status)
    optional = {
        "smallfleet.model_served": record.model_served,
        "smallfleet.escalation_reason": record.escalation,
        "smallfleet.confidence": record.confidence,
        "smallfleet.cost_usd": record.cost_usd,
        "smallfleet.ttft_ms": record.ttft_ms,
        "smallfleet.run_id": record.run_id,
        "smallfleet.step": record.step,
        "smallfleet.key": record.key_id,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    if record.tool_names:
        attrs["smallfleet.tool_names"] = list(record.tool_names)
    if content:
        attrs.update(_content(request, response))
    return attrs


def finish_reasons(response: Mapping[str, Any]) -> list[str]:
    """Why the answer ended: Chat Completions' choices, Messages' ``stop_reason`` or a Response's status."""
    choices = response.get("choices")
    if isinstance(choices, list):
        return [str(c["finish_reason"]) for c in choices if isinstance(c, dict) and c.get("finish_reason")]
    if isinstance(response.get("stop_reason"), str):
        return [response["stop_reason"]]
    status = response.get("status")
    if status == "completed":
        output = response.get("output") or []
        calls = any(isinstance(i, dict) and i.get("type") == "function_call" for i in output)
        return ["tool_calls" if calls else "stop"]
    if status == "incomplete":
        details = response.get("incomplete_details") or {}
        return [str(details.get("reason") or "incomplete")]
    return []


def _content(request: Mapping[str, Any], response: Mapping[str, Any]) -> dict[str, str]:
    """The content attributes (JSON strings, in the GenAI conventions' message shape)."""
    out: dict[str, str] = {}
    system = _parts(request.get("system"))
    if isinstance(request.get("instructions"), str):
        system += _parts(request["instructions"])
    if system:
        out["gen_ai.system_instructions"] = _json(system)
    items = request.get("messages", request.get("input"))
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if isinstance(items, list):
        out["gen_ai.input.messages"] = _json([_message(m) for m in items if isinstance(m, dict)])
    output = _output_messages(response)
    if output:
        out["gen_ai.output.messages"] = _json(output)
    if isinstance(request.get("tools"), list):
        out["gen_ai.tool.definitions"] = _json(request["tools"])
    return out


def _output_messages(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    reasons = finish_reasons(response)
    choices = response.get("choices")
    if isinstance(choices, list):
        out = []
        for choice in choices:
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
                msg = _message(choice["message"])
                msg["finish_reason"] = str(choice.get("finish_reason") or "")
                out.append(msg)
        return out
    blocks = response.get("content") if "stop_reason" in response else response.get("output")
    if not isinstance(blocks, list):
        return []
    parts = [p for block in blocks if isinstance(block, dict) for p in _item_parts(block)]
    return [{"role": "assistant", "parts": parts, "finish_reason": reasons[0] if reasons else ""}]


def _message(msg: Mapping[str, Any]) -> dict[str, Any]:
    """One message (Chat Completions, Messages or a Responses input item) as ``{role, parts}``."""
    kind = msg.get("type")
    if kind in ("function_call", "function_call_output"):  # Responses items outside a message
        role = "assistant" if kind == "function_call" else "tool"
        return {"role": role, "parts": _item_parts(msg)}
    role = str(msg.get("role") or "user")
    if role == "tool":
        response = msg.get("content")
        return {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": msg.get("tool_call_id"), "response": response}],
        }
    parts = _parts(msg.get("content"))
    for call in msg.get("tool_calls") or []:
        if isinstance(call, dict):
            fn = call.get("function") if isinstance(call.get("function"), dict) else {}
            parts.append(_tool_call(call.get("id"), fn.get("name"), fn.get("arguments")))
    return {"role": role, "parts": parts}


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):
        return [p for block in content if isinstance(block, dict) for p in _item_parts(block)]
    return [{"type": "text", "content": str(content)}]


def _item_parts(block: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The parts of one content block or output item, whichever API it is from."""
    kind = block.get("type")
    if kind in _TEXT_BLOCKS:
        return [{"type": "text", "content": block.get("text")}]
    if kind == "refusal":
        return [{"type": "text", "content": block.get("refusal")}]
    if kind == "tool_use":  # Messages
        return [_tool_call(block.get("id"), block.get("name"), block.get("input"))]
    if kind == "tool_result":
        return [
            {"type": "tool_call_response", "id": block.get("tool_use_id"), "response": block.get("content")}
        ]
    if kind == "function_call":  # Responses
        return [_tool_call(block.get("call_id"), block.get("name"), block.get("arguments"))]
    if kind == "function_call_output":
        return [{"type": "tool_call_response", "id": block.get("call_id"), "response": block.get("output")}]
    if kind == "message":  # a Responses output message
        return _parts(block.get("content"))
    return [{"type": str(kind or "unknown")}]  # images, files: their kind, not their bytes


def _tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass  # kept as the model wrote it
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
