"""The OpenAI Responses API (``POST /v1/responses``), translated at the gateway's edge.

A Responses request is translated into a chat completions body (:func:`to_chat`) and takes the
gateway's one chat path: routing, specialist or upstream, guard and shadow, pricing, budgets,
recording (redacted). The trace holds the translated chat request, so a request's task identity
(``instructions`` = system prompt, tools, format) is the same whichever API carried it: a
specialist promoted from chat completions traffic serves Responses requests too, and the
flywheel learns from both. The chat answer goes back as a Responses object
(:func:`to_response`) or as the API's typed server-sent events (:class:`EventStream`).

Every backend gets the translation (none is sent the Responses body as is). What cannot be
translated is refused with a 400 in OpenAI's error shape, naming the parameter: server-side
state (``previous_response_id``, ``conversation``, ``background``, stored ``prompt``,
``item_reference`` items: send the history as ``input`` items instead), hosted tools
(``web_search``, ``file_search``, ...) and unknown parameters. ``reasoning`` items in ``input``
are dropped (they carry state only OpenAI can read); ``include``, ``truncation``, ``store``,
``stream_options``, ``prompt_cache_retention`` and ``max_tool_calls`` are accepted and ignored
(nothing is stored: the response says ``"store": false``).

:func:`from_chat` and :func:`to_chat_response` translate the other way (chat request to
Responses request, Responses object to chat completion).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from smallfleet.errors import RequestInvalid, SmallfleetError

__all__ = ["EventStream", "ResponsesEdge", "from_chat", "to_chat", "to_chat_response", "to_response"]

#: Parameters copied to the chat body under the same name.
_SAME = ("model", "temperature", "top_p", "parallel_tool_calls", "metadata", "user", "service_tier")
_SAME += ("safety_identifier", "prompt_cache_key")
#: Parameters that are translated.
_TRANSLATED = {"input", "instructions", "tools", "tool_choice", "text", "max_output_tokens", "stream"}
_TRANSLATED |= {"reasoning"}
#: Accepted and ignored (see the module's docstring).
_IGNORED = {"include", "truncation", "store", "stream_options", "prompt_cache_retention", "max_tool_calls"}
#: Server-side state this gateway does not keep.
_STATEFUL = {"previous_response_id", "conversation", "background", "prompt"}
_STATE_HINT = "this gateway keeps no server-side state: send the whole history as 'input' items instead"

#: Chat finish reasons that leave a response incomplete, with the Responses API's reason.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate from upstream: only an escape can carry it
        return json.dumps(obj, separators=(",", ":")).encode()


def _short_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---------------------------------------------------------------- request: Responses → chat


def to_chat(data: Any) -> dict[str, Any]:
    """The chat completions body for a Responses request body; :class:`RequestInvalid` naming the
    parameter when it cannot be translated."""
    if not isinstance(data, dict):
        raise RequestInvalid("The body must be a JSON object.", code="invalid_type")
    for key in data:
        if key in _STATEFUL and data[key] not in (None, False):
            raise RequestInvalid(f"'{key}' is not supported: {_STATE_HINT}.", key, "unsupported_parameter")
        if key not in _TRANSLATED and key not in _IGNORED and key not in _STATEFUL and key not in _SAME:
            raise RequestInvalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
    if "input" not in data:
        raise RequestInvalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    chat: dict[str, Any] = {k: data[k] for k in _SAME if data.get(k) is not None}
    messages: list[dict[str, Any]] = []
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise RequestInvalid("'instructions' must be a string.", "instructions", "invalid_type")
        messages.append({"role": "system", "content": instructions})
    messages += _messages(data["input"])
    if not messages:
        raise RequestInvalid("'input' holds no message.", "input", "invalid_value")
    chat["messages"] = messages
    if data.get("tools") is not None:
        tools = data["tools"]
        if not isinstance(tools, list):
            raise RequestInvalid("'tools' must be an array.", "tools", "invalid_type")
        if tools:
            chat["tools"] = [_chat_tool(t, i) for i, t in enumerate(tools)]
    if data.get("tool_choice") is not None:
        chat["tool_choice"] = _chat_tool_choice(data["tool_choice"], "tool_choice")
    if data.get("text") is not None:
        chat.update(_chat_text(data["text"]))
    limit = data.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise RequestInvalid("'max_output_tokens' must be a positive integer.", "max_output_tokens")
        chat["max_completion_tokens"] = limit
    reasoning = data.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    elif reasoning is not None and not isinstance(reasoning, dict):
        raise RequestInvalid("'reasoning' must be an object.", "reasoning", "invalid_type")
    stream = data.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise RequestInvalid("'stream' must be a boolean.", "stream", "invalid_type")
        if stream:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}  # response.completed carries usage
    return chat


def _messages(items: Any) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise RequestInvalid("'input' must be a string or an array of items.", "input", "invalid_type")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise RequestInvalid(f"'{where}' must be an object.", where, "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": _str(item, "call_id", where),
                "type": "function",
                "function": {"name": _str(item, "name", where), "arguments": _str(item, "arguments", where)},
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":  # calls of one turn: one assistant message
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _parts_text(output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": _str(item, "call_id", where), "content": text})
        elif kind == "reasoning":
            continue  # state only OpenAI can read; the chat path has no place for it
        elif kind == "item_reference":
            raise RequestInvalid(f"'{where}': item references need stored items; {_STATE_HINT}.", where)
        else:
            message = (
                f"'{where}.type' {kind!r} is not supported; "
                "use message, function_call and function_call_output items."
            )
            raise RequestInvalid(message, f"{where}.type")
    return out


def _str(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise RequestInvalid(f"'{where}.{key}' must be a string.", f"{where}.{key}", "invalid_type")
    return value


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        message = f"'{where}.role' must be one of user, system, developer, assistant."
        raise RequestInvalid(message, f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise RequestInvalid(
            f"'{where}.content' must be a string or an array.", f"{where}.content", "invalid_type"
        )
    if role == "assistant":
        text, refusal = [], []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "output_text" and isinstance(part.get("text"), str):
                text.append(part["text"])
            elif kind == "refusal" and isinstance(part.get("refusal"), str):
                refusal.append(part["refusal"])
            else:
                message = f"'{where}.content[{j}]' must be an output_text or refusal part."
                raise RequestInvalid(message, f"{where}.content[{j}]")
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not refusal else None}
        if refusal:
            msg["refusal"] = "".join(refusal)
        return msg
    return {"role": role, "content": [_chat_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]}


def _chat_part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: dict[str, Any] = {"url": part["image_url"]}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and (part.get("file_data") or part.get("file_id")):
        return {
            "type": "file",
            "file": {k: part[k] for k in ("file_data", "file_id", "filename") if k in part},
        }
    message = f"'{where}' must be an input_text, input_image (with image_url) or input_file part."
    raise RequestInvalid(message, where)


def _parts_text(parts: Any, where: str) -> str:
    if not isinstance(parts, list):
        raise RequestInvalid(f"'{where}' must be a string or an array of parts.", where, "invalid_type")
    texts = [_chat_part(p, f"{where}[{j}]") for j, p in enumerate(parts)]
    if any(t["type"] != "text" for t in texts):
        raise RequestInvalid(f"'{where}': only text parts can be translated for a tool's output.", where)
    return "\n".join(t["text"] for t in texts)


_HOSTED = "only function tools can be served here; hosted tools run inside OpenAI's own service"


def _chat_tool(tool: Any, i: int) -> dict[str, Any]:
    where = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise RequestInvalid(f"'{where}' must be an object.", where, "invalid_type")
    if tool.get("type") != "function":
        raise RequestInvalid(
            f"'{where}.type' {tool.get('type')!r} is not supported: {_HOSTED}.", f"{where}.type"
        )
    fn: dict[str, Any] = {"name": _str(tool, "name", where)}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            fn[key] = tool[key]
    return {"type": "function", "function": fn}


def _chat_tool_choice(choice: Any, where: str) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        return {"type": "function", "function": {"name": _str(choice, "name", where)}}
    if kind == "allowed_tools":
        tools = choice.get("tools")
        if not isinstance(tools, list):
            raise RequestInvalid(f"'{where}.tools' must be an array.", f"{where}.tools", "invalid_type")
        named = [_chat_tool_choice(t, f"{where}.tools[{j}]") for j, t in enumerate(tools)]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode"), "tools": named}}
    message = f"'{where}' must be none, auto, required, or a function or allowed_tools choice: {_HOSTED}."
    raise RequestInvalid(message, where)


def _chat_text(text: Any) -> dict[str, Any]:
    if not isinstance(text, dict):
        raise RequestInvalid("'text' must be an object.", "text", "invalid_type")
    out: dict[str, Any] = {}
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None:
        return out
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return out  # the default: a chat request says nothing either
    if kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        spec: dict[str, Any] = {"name": _str(fmt, "name", "text.format")}
        if not isinstance(fmt.get("schema"), dict):
            raise RequestInvalid(
                "'text.format.schema' must be an object.", "text.format.schema", "invalid_type"
            )
        for key in ("description", "schema", "strict"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    else:
        raise RequestInvalid(
            "'text.format.type' must be text, json_object or json_schema.", "text.format.type"
        )
    return out


# ---------------------------------------------------------------- response: chat → Responses


def _usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def _message_item(text: str | None, refusal: str | None, status: str = "completed") -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {
        "type": "message",
        "id": _short_id("msg"),
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": _short_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _envelope(
    rid: str,
    created: int,
    model: str,
    asked: dict[str, Any],
    output: list[dict[str, Any]],
    finish: str | None,
    usage: dict[str, Any] | None,
    status: str | None = None,
) -> dict[str, Any]:
    """A Responses object; ``asked`` holds the request's own fields, echoed as the API does."""
    reason = _INCOMPLETE.get(finish or "")
    if status is None:
        status = "incomplete" if reason else "completed"
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": reason} if reason and status == "incomplete" else None,
        "model": model,
        "output": output,
        "usage": usage,
        "store": False,
        "previous_response_id": None,
        **asked,
    }


def _asked(data: dict[str, Any]) -> dict[str, Any]:
    """The request's fields a Responses object repeats (with the API's defaults)."""
    return {
        "instructions": data.get("instructions"),
        "tools": data.get("tools") or [],
        "tool_choice": data.get("tool_choice") or "auto",
        "parallel_tool_calls": data.get("parallel_tool_calls", True),
        "temperature": data.get("temperature"),
        "top_p": data.get("top_p"),
        "max_output_tokens": data.get("max_output_tokens"),
        "metadata": data.get("metadata") or {},
        "text": data.get("text") or {"format": {"type": "text"}},
        "reasoning": data.get("reasoning"),
        "truncation": data.get("truncation") or "disabled",
        "user": data.get("user"),
    }


def to_response(out: dict[str, Any], rid: str, asked: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Responses object for a chat completion ``out`` (``asked``: the request's echoed fields)."""
    choices = out.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    text, refusal = msg.get("content"), msg.get("refusal")
    if text or refusal or not msg.get("tool_calls"):
        output.append(_message_item(text or ("" if not refusal else None), refusal))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        output.append(
            _call_item(call.get("id") or _short_id("call"), fn.get("name", ""), fn.get("arguments", ""))
        )
    created = out.get("created") if isinstance(out.get("created"), int) else int(time.time())
    return _envelope(
        rid,
        created,
        str(out.get("model") or ""),
        asked or {},
        output,
        choice.get("finish_reason"),
        _usage(out.get("usage")),
    )


class EventStream:
    """Chat completion chunks in, the Responses API's typed server-sent events out.

    ``feed(chunk)`` for each chunk, then ``end()`` (``response.completed``, or
    ``response.incomplete`` when the output was cut) or ``error(e)``.
    """

    def __init__(self, rid: str, asked: dict[str, Any]) -> None:
        self.rid = rid
        self.asked = asked
        self.created = int(time.time())
        self.model = ""
        self.seq = 0
        self.done: list[dict[str, Any]] = []  # output items finished
        self.item: dict[str, Any] | None = None  # the item being streamed
        self.key: Any = None  # what the open item is: "output_text", "refusal", or a tool call's index
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.started = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"

    def _snapshot(self, status: str | None = None) -> dict[str, Any]:
        return _envelope(
            self.rid,
            self.created,
            self.model,
            self.asked,
            list(self.done),
            self.finish,
            _usage(self.usage),
            status,
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        if not self.started:
            self.started = True
            if isinstance(chunk.get("created"), int):
                self.created = chunk["created"]
            out.append(self._event("response.created", response=self._snapshot("in_progress")))
            out.append(self._event("response.in_progress", response=self._snapshot("in_progress")))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.append(self._part("output_text", delta["content"]))
            if delta.get("refusal"):
                out.append(self._part("refusal", delta["refusal"]))
            for call in delta.get("tool_calls") or []:
                out.append(self._call(call))
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return b"".join(out)

    def _part(self, kind: str, delta: str) -> bytes:
        out = b""
        if self.key != kind:
            out += self._close()
            self.key = kind
            self.item = _message_item(None, None, "in_progress")
            out += self._event("response.output_item.added", output_index=len(self.done), item=self.item)
            part = (
                {"type": "output_text", "text": "", "annotations": []}
                if kind == "output_text"
                else {"type": "refusal", "refusal": ""}
            )
            self.item["content"].append(part)
            out += self._event(
                "response.content_part.added",
                item_id=self.item["id"],
                output_index=len(self.done),
                content_index=0,
                part=part,
            )
        assert self.item is not None
        part = self.item["content"][0]
        field = "text" if kind == "output_text" else "refusal"
        part[field] += delta
        name = "response.output_text.delta" if kind == "output_text" else "response.refusal.delta"
        extra = {"logprobs": []} if kind == "output_text" else {}
        return out + self._event(
            name, item_id=self.item["id"], output_index=len(self.done), content_index=0, delta=delta, **extra
        )

    def _call(self, call: dict[str, Any]) -> bytes:
        out = b""
        fn = call.get("function") or {}
        index = ("call", call.get("index", 0))
        if self.key != index:
            out += self._close()
            self.key = index
            self.item = _call_item(
                call.get("id") or _short_id("call"), fn.get("name") or "", "", "in_progress"
            )
            out += self._event(
                "response.output_item.added", output_index=len(self.done), item=dict(self.item)
            )
        assert self.item is not None
        if fn.get("name") and not self.item["name"]:
            self.item["name"] = fn["name"]
        if fn.get("arguments"):
            self.item["arguments"] += fn["arguments"]
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=self.item["id"],
                output_index=len(self.done),
                delta=fn["arguments"],
            )
        return out

    def _close(self) -> bytes:
        item, self.item, self.key = self.item, None, None
        if item is None:
            return b""
        index = len(self.done)
        out = b""
        if item["type"] == "message":
            part = item["content"][0]
            if part["type"] == "output_text":
                out += self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                )
            else:
                out += self._event(
                    "response.refusal.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    refusal=part["refusal"],
                )
            out += self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        else:
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        item["status"] = "completed"
        self.done.append(item)
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def end(self) -> bytes:
        out = self._close()
        if not self.started:  # nothing came: still a well-formed (empty) response
            out = self._event("response.created", response=self._snapshot("in_progress"))
        final = self._snapshot()
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, response=final)

    def error(self, e: SmallfleetError) -> bytes:
        body = e.to_openai().get("error")
        err = body if isinstance(body, dict) else {"message": e.message}
        return self._event(
            "error", code=err.get("code"), message=err.get("message", e.message), param=err.get("param")
        )


class ResponsesEdge:
    """The gateway's :class:`~smallfleet.gateway.app.Edge` for ``POST /v1/responses`` (one per request)."""

    def __init__(self) -> None:
        self.rid = ""
        self.asked: dict[str, Any] = {}
        self._events: EventStream | None = None

    def chat_body(self, data: Any, trace_id: str) -> dict[str, Any]:
        chat = to_chat(data)
        self.rid = f"resp_{trace_id}"  # the trace's id: the response's id names its trace
        self.asked = _asked(data)
        return chat

    def response_body(self, out: dict[str, Any]) -> bytes:
        return _dumps(to_response(out, self.rid, self.asked))

    def error_body(self, e: SmallfleetError) -> bytes:
        return _dumps(e.to_openai())  # the Responses API's errors have the chat API's shape

    @property
    def events(self) -> EventStream:
        if self._events is None:
            self._events = EventStream(self.rid, self.asked)
        return self._events

    def stream_event(self, chunk: dict[str, Any]) -> bytes:
        return self.events.feed(chunk)

    def stream_end(self) -> bytes:
        return self.events.end()

    def stream_error(self, e: SmallfleetError) -> bytes:
        return self.events.error(e)


# ---------------------------------------------------------------- the other way: chat → Responses request


def from_chat(chat: dict[str, Any]) -> dict[str, Any]:
    """The Responses request for a chat completions body (system messages become ``instructions``)."""
    out: dict[str, Any] = {k: chat[k] for k in _SAME if chat.get(k) is not None}
    system = [m for m in chat.get("messages") or [] if m.get("role") == "system"]
    if system:
        out["instructions"] = "\n".join(_text(m.get("content")) for m in system)
    items: list[dict[str, Any]] = []
    for m in chat.get("messages") or []:
        role = m.get("role")
        if role == "system":
            continue
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": m["tool_call_id"],
                    "output": _text(m.get("content")),
                }
            )
            continue
        content = m.get("content")
        if role == "assistant":
            if content or m.get("refusal"):
                parts = [{"type": "output_text", "text": _text(content)}] if content else []
                if m.get("refusal"):
                    parts.append({"type": "refusal", "refusal": m["refusal"]})
                items.append({"type": "message", "role": "assistant", "content": parts})
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call["id"],
                        "name": fn["name"],
                        "arguments": fn["arguments"],
                    }
                )
            continue
        if isinstance(content, list):
            content = [{"type": "input_text", "text": p.get("text", "")} for p in content]
        items.append({"type": "message", "role": role, "content": content})
    out["input"] = items
    if chat.get("tools"):
        out["tools"] = [{"type": "function", **t["function"]} for t in chat["tools"]]
    choice = chat.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "function", "name": choice["function"]["name"]}
    elif choice is not None:
        out["tool_choice"] = choice
    rf = chat.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        out["text"] = {"format": {"type": "json_schema", **rf.get("json_schema", {})}}
    elif isinstance(rf, dict) and rf.get("type") == "json_object":
        out["text"] = {"format": {"type": "json_object"}}
    limit = chat.get("max_completion_tokens") or chat.get("max_tokens")
    if limit is not None:
        out["max_output_tokens"] = limit
    if chat.get("stream"):
        out["stream"] = True
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return content or ""


def to_chat_response(resp: dict[str, Any]) -> dict[str, Any]:
    """The chat completion a Responses object stands for (the other way of :func:`to_response`)."""
    text: list[str] = []
    refusal: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in resp.get("output") or []:
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    text.append(part.get("text", ""))
                elif part.get("type") == "refusal":
                    refusal.append(part.get("refusal", ""))
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if refusal:
        message["refusal"] = "".join(refusal)
    if calls:
        message["tool_calls"] = calls
    reason = (resp.get("incomplete_details") or {}).get("reason")
    finish = {"max_output_tokens": "length", "content_filter": "content_filter"}.get(reason or "")
    out: dict[str, Any] = {
        "id": resp.get("id"),
        "object": "chat.completion",
        "created": resp.get("created_at"),
        "model": resp.get("model"),
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish or ("tool_calls" if calls else "stop")}
        ],
    }
    usage = resp.get("usage")
    if isinstance(usage, dict):
        out["usage"] = {
            "prompt_tokens": usage.get("input_tokens", 0),
            "completion_tokens": usage.get("output_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
        }
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
        if cached:
            out["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
    return out
