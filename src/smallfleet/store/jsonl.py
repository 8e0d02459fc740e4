"""Traces in and out of JSONL files: the formats ``smallfleet traces import`` reads and ``export`` writes.

One JSON object per line, any of:

- ``{"request": {chat request}, "response": {chat completion}, ...}`` — what
  ``smallfleet traces export`` writes (every trace field alongside), and what most
  people's log exports look like. ``input``/``output`` are accepted for
  ``request``/``response``; ``output`` may also be plain text.
- ``{"messages": [...], "completion": "text" | {chat completion}}``, or the
  fine-tuning shape ``{"messages": [..., {"role": "assistant", ...}]}`` whose last
  assistant message is the response.
- OpenAI Batch API output: ``{"id", "custom_id", "response": {"status_code",
  "request_id", "body": {chat completion}}, "error"}``. The requests are in the
  batch *input* file (``{"custom_id", "method", "url", "body"}``), paired by
  ``custom_id``; without it the traces are imported with an unknown request
  (they count for cost and stats, the flywheel skips them).

Ids are stable: a line that carries a trace ``id`` keeps it, a batch line gets
one derived from its batch ``id``, any other line one derived from its content;
so importing the same file twice stores each trace once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smallfleet.errors import BadLine, SmallfleetError
from smallfleet.store.records import TraceRecord

__all__ = ["BadLine", "iter_import_file", "parse_line", "read_batch_input", "record_to_line"]

_NAMESPACE = uuid.UUID("5f0c7d2e-6b1a-4d8e-9a51-3c2f8e1b7a90")

# Trace fields an imported line may carry over (route is always "imported").
_CARRIED = (
    "key_id",
    "latency_ms",
    "ttft_ms",
    "status",
    "http_status",
    "error",
    "stream",
    "run_id",
    "step",
    "confidence",
    "escalation",
)


def _stable_id(*parts: str) -> str:
    return uuid.uuid5(_NAMESPACE, "\x1f".join(parts)).hex


def read_batch_input(path: str | Path) -> dict[str, dict[str, Any]]:
    """``custom_id`` → request body, from an OpenAI Batch API input file."""
    out: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                cid, body = obj["custom_id"], obj["body"]
            except (ValueError, KeyError, TypeError):
                raise BadLine(f"{path}:{n}: not a batch input line (needs custom_id and body).") from None
            if not isinstance(body, dict):
                raise BadLine(f"{path}:{n}: body must be a JSON object.")
            out[str(cid)] = body
    return out


def _check_request(req: Any) -> dict[str, Any]:
    from smallfleet.types import ChatRequest

    if not isinstance(req, dict):
        raise BadLine("request must be a JSON object with model and messages.")
    data = dict(req)
    data.setdefault("model", "unknown")
    try:
        ChatRequest.parse(data)
    except SmallfleetError as e:
        raise BadLine(f"request: {e.message}") from None
    return req


def _check_response(resp: Any, model: str) -> dict[str, Any]:
    if isinstance(resp, str):
        from smallfleet.types import ChatResponse

        return ChatResponse.of_text(model, resp).to_dict()
    if not isinstance(resp, dict):
        raise BadLine("response must be a chat completion object or a string.")
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadLine("response has no choices.")
    if not isinstance(choices[0].get("message"), dict):
        raise BadLine("response.choices[0] has no message.")
    return resp


def _from_messages(obj: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise BadLine("messages must be a non-empty list.")
    rest = {k: v for k, v in obj.items() if k in ("model", "tools", "response_format", "tool_choice")}
    if "completion" in obj:
        return {**rest, "messages": messages}, obj["completion"]
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise BadLine("messages has no final assistant message and there is no completion.")
    message = {k: v for k, v in last.items() if k in ("role", "content", "tool_calls", "refusal")}
    finish = "tool_calls" if last.get("tool_calls") else "stop"
    response = {
        "object": "chat.completion",
        "model": obj.get("model", "unknown"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    return {**rest, "messages": messages[:-1]}, response


def parse_line(
    obj: Any,
    *,
    batch_requests: dict[str, dict[str, Any]] | None = None,
    workload: str | None = None,
    raw: str = "",
) -> TraceRecord:
    """One import line (parsed JSON) as a TraceRecord (not yet redacted or priced); raises BadLine."""
    if not isinstance(obj, dict):
        raise BadLine("a line must be a JSON object.")
    if "custom_id" in obj and isinstance(obj.get("response") or obj.get("error"), dict):
        return _parse_batch(obj, batch_requests, workload)
    if "request" in obj or "input" in obj:
        request = obj.get("request", obj.get("input"))
        response = obj.get("response", obj.get("output"))
        if isinstance(request, list):  # a bare message list
            request = {"messages": request}
    elif "messages" in obj:
        request, response = _from_messages(obj)
    else:
        raise BadLine("no request: expected request/response, input/output, messages, or a batch line.")
    request = _check_request(request)
    resp_model = response.get("model") if isinstance(response, dict) else None
    model_req = str(request.get("model") or resp_model or "")
    if response is not None:
        response = _check_response(response, model_req or "unknown")
    rec = TraceRecord(
        id=str(obj["id"])
        if isinstance(obj.get("id"), str) and obj["id"]
        else _stable_id("line", raw, workload or ""),
        request=request,
        response=response,
    )
    _fill_common(rec, obj, request, response, workload)
    for k in _CARRIED:
        if k in obj and obj[k] is not None:
            setattr(rec, k, obj[k])
    if response is None and "status" not in obj:
        rec.status, rec.http_status, rec.error = "error", 0, "no response in the imported line"
    return rec


def _parse_batch(
    obj: dict[str, Any], batch_requests: dict[str, dict[str, Any]] | None, workload: str | None
) -> TraceRecord:
    cid = str(obj["custom_id"])
    request = None
    if batch_requests is not None:
        request = batch_requests.get(cid)
        if request is None:
            raise BadLine(f"custom_id {cid!r} is not in the batch input file.")
        request = _check_request(request)
    resp_wrap = obj.get("response") or {}
    body = resp_wrap.get("body") if isinstance(resp_wrap, dict) else None
    status_code = int(resp_wrap.get("status_code") or 0) if isinstance(resp_wrap, dict) else 0
    err = obj.get("error")
    response: dict[str, Any] | None = None
    error: str | None = None
    if err:
        error = str(err.get("message") if isinstance(err, dict) else err)
    elif status_code >= 400 or not isinstance(body, dict) or "choices" not in body:
        inner = body.get("error") if isinstance(body, dict) else None
        error = str(inner.get("message") if isinstance(inner, dict) else inner or f"HTTP {status_code}")
    else:
        response = _check_response(body, str(body.get("model", "unknown")))
    rec = TraceRecord(
        id=_stable_id("batch", str(obj.get("id") or cid), cid), request=request, response=response
    )
    _fill_common(rec, obj, request or {}, response, workload)
    rec.metadata = {**rec.metadata, "batch_custom_id": cid}
    if error is not None:
        rec.status, rec.http_status, rec.error = "error", status_code or 0, error[:500]
    else:
        rec.http_status = status_code or 200
    return rec


def _fill_common(
    rec: TraceRecord,
    obj: dict[str, Any],
    request: dict[str, Any],
    response: dict[str, Any] | None,
    workload: str | None,
) -> None:
    resp_model = response.get("model") if isinstance(response, dict) else None
    rec.model_requested = str(obj.get("model_requested") or request.get("model") or resp_model or "")
    rec.model_served = str(obj.get("model_served") or resp_model or rec.model_requested or "") or None
    rec.route = "imported"
    meta = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
    line_meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    rec.metadata = {str(k): str(v) for k, v in {**meta, **line_meta}.items()}
    rec.workload = workload or str(obj.get("workload") or meta.get("workload") or "default")
    tools = request.get("tools") or []
    rec.tool_names = [
        t["function"]["name"]
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
    ]
    usage = response.get("usage") if isinstance(response, dict) else None
    if isinstance(usage, dict):
        rec.input_tokens = int(usage.get("prompt_tokens") or 0)
        rec.output_tokens = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            rec.cached_tokens = int(details.get("cached_tokens") or 0)
    created = obj.get("created_at")
    if not isinstance(created, (int, float)) and isinstance(response, dict):
        created = response.get("created")
    rec.created_at = float(created) if isinstance(created, (int, float)) and created > 0 else time.time()
    if isinstance(obj.get("cost_usd"), (int, float)):
        rec.cost_usd = float(obj["cost_usd"])


def iter_import_file(
    path: str | Path,
    *,
    batch_requests: dict[str, dict[str, Any]] | None = None,
    workload: str | None = None,
) -> Iterator[tuple[int, int, TraceRecord | str]]:
    """``(line number, bytes read so far, record or the reason the line is bad)`` for each non-blank line."""
    done = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            done += len(raw)
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except ValueError as e:
                yield n, done, f"not valid JSON ({e.msg} at column {e.colno})"
                continue
            try:
                yield n, done, parse_line(obj, batch_requests=batch_requests, workload=workload, raw=text)
            except BadLine as e:
                yield n, done, e.message
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                yield n, done, f"unexpected shape ({type(e).__name__}: {e})"


def record_to_line(rec: TraceRecord) -> dict[str, Any]:
    """The export form of a trace: request and response first, then every other field."""
    d = rec.to_dict()
    return {"request": d.pop("request"), "response": d.pop("response"), **d}
