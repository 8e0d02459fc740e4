"""Anthropic's Messages API on the gateway: ``POST /v1/messages``, translated at the edge.

There is one serving path. A Messages request is translated into a chat-completions
body and handed to the gateway's chat path (routing, specialist or upstream, guard
and shadow, pricing, budgets, one redacted trace); what that path sends back (a
chat completion, its SSE chunks, an error) is translated into the Messages API's
response, events and error shape on the way out. So a request's task identity is
the same whichever API carried it: a specialist promoted from chat-completions
traffic answers a Messages request too, and the trace is a chat-completions trace.

The translations both ways (Messages ↔ Chat Completions, requests, responses and
stream events) live here as plain functions over JSON dicts; the Anthropic backend
(:mod:`smallfleet.models.anthropic_http`) uses them for the other direction.

Keys: ``x-api-key`` is taken as ``Authorization: Bearer`` (one key check, in
:class:`~smallfleet.gateway.auth.KeyRing`); ``anthropic-version`` is accepted and
not needed. Not supported (a 400 that says so): server tools, document and
search-result blocks, ``thinking`` turned on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from smallfleet.errors import RequestInvalid, SmallfleetError

__all__ = [
    "ChatToMessagesStream",
    "MessagesEdge",
    "MessagesToChatStream",
    "chat_request_to_messages",
    "chat_response_to_messages",
    "messages_request_to_chat",
    "messages_response_to_chat",
    "with_api_key",
]

Scope = dict[str, Any]

#: Anthropic's stop reasons ↔ OpenAI's finish reasons.
STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

#: The request fields the endpoint reads; ``thinking`` and ``service_tier`` are accepted hints.
_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
        "thinking",
        "service_tier",
    }
)

#: HTTP status → the Messages API's error ``type``.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_KNOWN_ERRORS = frozenset({*_ERROR_TYPES.values(), "api_error"})


def _dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: only an escape can carry it
        return json.dumps(obj, separators=(",", ":")).encode()


def _invalid(param: str, message: str) -> RequestInvalid:
    return RequestInvalid(f"{param}: {message}", param=param)


# ---------------------------------------------------------------- Messages request → chat


def messages_request_to_chat(data: Any) -> dict[str, Any]:
    """The chat-completions body of a Messages request; :class:`RequestInvalid` naming the field.

    Streaming requests ask for usage (``stream_options.include_usage``): the
    Messages API reports it in ``message_delta``.
    """
    if not isinstance(data, dict):
        raise RequestInvalid("The body must be a JSON object.", code="invalid_type")
    for name in data:
        if name not in _FIELDS:
            raise _invalid(name, "Extra inputs are not permitted.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "Field required (a model alias of this gateway).")
    max_tokens = data.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _invalid("max_tokens", "Field required: an integer of at least 1.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "Field required: a non-empty list of messages.")
    thinking = data.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        raise _invalid("thinking", "Extended thinking is not supported by this gateway; leave it out.")
    out: list[dict[str, Any]] = []
    if data.get("system") is not None:
        system = _text_of(data["system"], "system")
        if system:
            out.append({"role": "system", "content": system})
    for i, m in enumerate(messages):
        out.extend(_message_to_chat(m, f"messages.{i}"))
    body: dict[str, Any] = {"model": model, "messages": out, "max_tokens": max_tokens}
    if data.get("tools") is not None:
        body["tools"] = _tools_to_chat(data["tools"])
    if data.get("tool_choice") is not None:
        _tool_choice_to_chat(data["tool_choice"], body)
    stops = data.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("stop_sequences", "Input should be a list of strings.")
        if stops:
            body["stop"] = stops
    for name, low, high in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise _invalid(name, f"Input should be a number from {low} to {high}.")
        body[name] = float(value)
    top_k = data.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise _invalid("top_k", "Input should be a non-negative integer.")
        body["top_k"] = top_k  # passed on: vLLM and the Anthropic backend take it
    meta = data.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise _invalid("metadata", "Input should be an object.")
        user = meta.get("user_id")
        if user is not None:
            if not isinstance(user, str):
                raise _invalid("metadata.user_id", "Input should be a string.")
            body["user"] = user
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "Input should be a boolean.")
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _text_of(value: Any, param: str) -> str:
    """The text of a string or a list of text blocks (``system``, a ``tool_result``'s content)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _invalid(param, "Input should be a string or a list of text blocks.")
    parts = []
    for j, block in enumerate(value):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            raise _invalid(f"{param}.{j}", "Input should be a text block {type: text, text}.")
        parts.append(block["text"])
    return "\n".join(parts)


def _message_to_chat(m: Any, param: str) -> list[dict[str, Any]]:
    """One Messages turn as chat messages (a user turn's tool results become ``tool`` messages)."""
    if not isinstance(m, dict):
        raise _invalid(param, "Input should be an object {role, content}.")
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise _invalid(f"{param}.role", "Input should be 'user' or 'assistant'.")
    content = m.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(f"{param}.content", "Input should be a string or a list of content blocks.")
    if role == "assistant":
        return [_assistant_to_chat(content, f"{param}.content")]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{param}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            tools.append(_tool_result_to_chat(block, where))
        elif kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_to_chat(block, where))
        else:
            raise _invalid(where, f"Content block type {kind!r} is not supported here.")
    out = tools
    if parts:
        plain = all(p["type"] == "text" for p in parts) and len(parts) == 1
        out.append({"role": "user", "content": parts[0]["text"] if plain else parts})
    return out


def _assistant_to_chat(content: list[Any], param: str) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{param}.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif kind == "tool_use":
            tid, name, args = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(tid, str) or not isinstance(name, str) or not isinstance(args, dict):
                raise _invalid(where, "A tool_use block needs an id, a name and an input object.")
            arguments = json.dumps(args, ensure_ascii=False)
            calls.append({"id": tid, "type": "function", "function": {"name": name, "arguments": arguments}})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's own scratch work: not part of the conversation a chat model reads
        else:
            raise _invalid(where, f"Content block type {kind!r} is not supported in an assistant turn.")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_result_to_chat(block: dict[str, Any], param: str) -> dict[str, Any]:
    tid = block.get("tool_use_id")
    if not isinstance(tid, str):
        raise _invalid(f"{param}.tool_use_id", "Field required.")
    text = _text_of(block.get("content") or "", f"{param}.content")  # content is optional
    if block.get("is_error"):
        text = f"Error: {text}"  # chat has no error flag on a tool message: say it in the text
    return {"role": "tool", "tool_call_id": tid, "content": text}


def _image_to_chat(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _invalid(f"{param}.source", "An image needs a base64 source (media_type, data) or a url source.")


def _tools_to_chat(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools", "Input should be a list of tools.")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _invalid(
                where, f"Tool type {kind!r} is not supported: only client tools with an input_schema."
            )
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise _invalid(f"{where}.name", "Field required.")
        if not isinstance(schema, dict):
            raise _invalid(f"{where}.input_schema", "Field required: a JSON schema object.")
        fn: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice_to_chat(choice: Any, body: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _invalid("tool_choice", "Input should be {type: auto | any | none} or {type: tool, name}.")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        body["parallel_tool_calls"] = False


# ---------------------------------------------------------------- chat response → Messages


def _message_id(chat_id: Any) -> str:
    if isinstance(chat_id, str) and chat_id.startswith("msg_"):
        return chat_id
    rest = chat_id.removeprefix("chatcmpl-") if isinstance(chat_id, str) and chat_id else str(time.time_ns())
    return f"msg_{rest}"


def _tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the object a ``tool_use`` block carries."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except ValueError:
        value = None
    # Not an object (a cut-off answer): keep what the model said, under a name that says so.
    return value if isinstance(value, dict) else {"_unparsed_arguments": arguments}


def _usage_to_messages(usage: Any) -> dict[str, int]:
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = int((details or {}).get("cached_tokens") or 0) if isinstance(details, dict) else 0
    out = {
        "input_tokens": max(0, int(usage.get("prompt_tokens") or 0) - cached),
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def chat_response_to_messages(data: Mapping[str, Any]) -> dict[str, Any]:
    """A chat completion (dict) as a Messages API response."""
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = msg.get("content")
    if isinstance(text, list):  # some servers answer in parts
        text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
    text = text or msg.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        block = {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or ""}
        block["input"] = _tool_input(fn.get("arguments"))
        content.append(block)
    return {
        "id": _message_id(data.get("id")),
        "type": "message",
        "role": "assistant",
        "model": data.get("model") or "",
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage_to_messages(data.get("usage")),
    }


def error_to_messages(status: int, body: bytes) -> dict[str, Any]:
    """The gateway's error body (OpenAI's shape, or an upstream's own) in the Messages API's shape."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    if not isinstance(message, str):
        message = body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    kind = _ERROR_TYPES.get(status)
    if kind is None:  # a status the API does not name: an Anthropic upstream's own type, if it is one
        kind = err.get("type") if isinstance(err, dict) else None
        if kind not in _KNOWN_ERRORS:
            kind = "api_error" if status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": kind, "message": message}}


# ---------------------------------------------------------------- chat stream → Messages events


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


class ChatToMessagesStream:
    """Translates a chat-completions stream, chunk by chunk, into Messages API SSE events.

    ``feed(chunk)`` takes one parsed chunk and gives the bytes of the events it
    makes; ``done()`` gives the closing ``message_delta`` (stop reason, usage) and
    ``message_stop``; ``error(status, body)`` an ``error`` event.
    """

    def __init__(self) -> None:
        self.started = False
        self.index = -1  # the content block open now (-1: none)
        self.kind: str | None = None  # "text" or "tool_use"
        self.tools: dict[int, int] = {}  # chat tool call index → content block index
        self.stop = "end_turn"
        self.usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}
        self.finished = False

    def _start(self, chunk: Mapping[str, Any]) -> bytes:
        self.started = True
        message = {
            "id": _message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self.index < 0 or self.kind is None:
            return b""
        self.kind = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.kind = block["type"]
        event = {"type": "content_block_start", "index": self.index, "content_block": block}
        return out + _event("content_block_start", event)

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        out = b"" if self.started else self._start(chunk)
        if chunk.get("usage"):
            self.usage = _usage_to_messages(chunk["usage"])
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                if self.kind != "text":
                    out += self._open({"type": "text", "text": ""})
                event = {"type": "content_block_delta", "index": self.index}
                event["delta"] = {"type": "text_delta", "text": text}
                out += _event("content_block_delta", event)
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.stop = FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
                out += self._close()
        return out

    def _tool_delta(self, call: Mapping[str, Any]) -> bytes:
        out = b""
        fn = call.get("function") or {}
        at = call.get("index", 0)
        block = self.tools.get(at)
        if block is None:  # the first piece of a call: its id and name
            out += self._open(
                {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "", "input": {}}
            )
            block = self.tools[at] = self.index
        if fn.get("arguments"):
            event = {"type": "content_block_delta", "index": block}
            event["delta"] = {"type": "input_json_delta", "partial_json": fn["arguments"]}
            out += _event("content_block_delta", event)
        return out

    def done(self) -> bytes:
        if self.finished:
            return b""
        self.finished = True
        out = b"" if self.started else self._start({})
        out += self._close()
        delta = {"type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": None}}
        delta["usage"] = self.usage
        return out + _event("message_delta", delta) + _event("message_stop", {"type": "message_stop"})

    def error(self, status: int, body: bytes) -> bytes:
        self.finished = True
        return _event("error", error_to_messages(status, body))


# ---------------------------------------------------------------- the endpoint


class MessagesEdge:
    """The Messages API at the gateway's edge (:class:`smallfleet.gateway.app.Edge`), one per request."""

    def __init__(self) -> None:
        self._stream = ChatToMessagesStream()

    def chat_body(self, data: Any, trace_id: str) -> dict[str, Any]:
        return messages_request_to_chat(data)

    def response_body(self, out: dict[str, Any]) -> bytes:
        return _dumps(chat_response_to_messages(out))

    def error_body(self, e: SmallfleetError) -> bytes:
        return _dumps(error_to_messages(e.status_code, _dumps(e.to_openai())))

    def stream_event(self, chunk: dict[str, Any]) -> bytes:
        return self._stream.feed(chunk)

    def stream_end(self) -> bytes:
        return self._stream.done()

    def stream_error(self, e: SmallfleetError) -> bytes:
        return self._stream.error(e.status_code, _dumps(e.to_openai()))


def with_api_key(scope: Scope) -> Scope:
    """``scope`` with an ``x-api-key`` header also sent as ``Authorization: Bearer`` (one key check).

    An ``Authorization`` header, when there is one, is what counts.
    """
    key: bytes | None = None
    for k, v in scope["headers"]:
        if k == b"authorization":
            return scope
        if k == b"x-api-key":
            key = v
    if key is None:
        return scope
    return {**scope, "headers": [*scope["headers"], (b"authorization", b"Bearer " + key.strip())]}


# ---------------------------------------------------------------- chat request → Messages (backend)


def chat_request_to_messages(body: Mapping[str, Any], default_max_tokens: int = 4096) -> dict[str, Any]:
    """A chat-completions body (dict) as a Messages API request, for an Anthropic upstream.

    System and developer messages become ``system``; tool calls ``tool_use`` blocks;
    tool messages ``tool_result`` blocks in a user turn; consecutive turns of one
    role are merged, as the Messages API wants. ``max_tokens`` is required there:
    ``default_max_tokens`` when the request sets none. Fields without a Messages
    counterpart (``seed``, penalties, ``logprobs``) are left out; a
    ``response_format`` or an unsupported content part is a :class:`RequestInvalid`.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(body.get("messages") or []):
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_chat_text(m.get("content"), f"messages[{i}].content"))
            continue
        if role == "user":
            blocks = _user_blocks(m.get("content"), f"messages[{i}].content")
        elif role == "assistant":
            blocks = _assistant_blocks(m, f"messages[{i}]")
            role = "assistant"
        elif role == "tool":
            text = _chat_text(m.get("content"), f"messages[{i}].content")
            blocks = [{"type": "tool_result", "tool_use_id": m.get("tool_call_id") or "", "content": text}]
            role = "user"
        else:
            raise RequestInvalid(
                f"Messages of role {role!r} cannot be sent to an Anthropic model.", f"messages[{i}].role"
            )
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # one text block alone: the plain-string form
        c = turn["content"]
        if len(c) == 1 and c[0]["type"] == "text":
            turn["content"] = c[0]["text"]
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") not in (None, "text"):
        raise RequestInvalid(
            "response_format is not supported by an Anthropic model; ask for JSON in the prompt.",
            "response_format",
        )
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    out: dict[str, Any] = {"model": body.get("model"), "max_tokens": max_tokens, "messages": turns}
    if system:
        out["system"] = "\n".join(s for s in system if s)
    if body.get("tools"):
        out["tools"] = [_tool_to_messages(t) for t in body["tools"]]
    choice = _tool_choice_to_messages(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and out.get("tools"):
        out["tool_choice"] = choice
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


def _chat_text(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, p in enumerate(content):
        if not isinstance(p, dict) or p.get("type") != "text":
            raise RequestInvalid("Only text parts can go here for an Anthropic model.", f"{param}[{j}]")
        parts.append(p.get("text") or "")
    return "\n".join(parts)


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content or ""}]
    blocks = []
    for j, p in enumerate(content):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": p.get("text") or ""})
        elif kind == "image_url":
            blocks.append(_image_to_messages(p.get("image_url") or {}))
        else:
            raise RequestInvalid(
                f"Content parts of type {kind!r} cannot be sent to an Anthropic model.", f"{param}[{j}]"
            )
    return blocks


def _image_to_messages(image: Mapping[str, Any]) -> dict[str, Any]:
    url = str(image.get("url") or "")
    if url.startswith("data:") and ";base64," in url:
        media, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(m: Mapping[str, Any], param: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _chat_text(m.get("content"), f"{param}.content") or m.get("refusal") or ""
    if text:
        blocks.append({"type": "text", "text": text})
    for j, call in enumerate(m.get("tool_calls") or []):
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise RequestInvalid(
                "Tool call arguments must be a JSON object for an Anthropic model.",
                f"{param}.tool_calls[{j}].function.arguments",
            )
        blocks.append(
            {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "", "input": args}
        )
    return blocks or [{"type": "text", "text": ""}]


def _tool_to_messages(tool: Mapping[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out = {
        "name": fn.get("name"),
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice_to_messages(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, dict):
        out: dict[str, Any] = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        out = {"type": {"required": "any", "none": "none"}.get(choice or "auto", "auto")}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


# ---------------------------------------------------------------- Messages response → chat (backend)


def _usage_to_chat(usage: Any) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def messages_response_to_chat(data: Mapping[str, Any]) -> dict[str, Any]:
    """A Messages API response as a chat completion (dict)."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(
                {
                    "id": block.get("id") or "",
                    "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": arguments},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    finish = STOP_TO_FINISH.get(data.get("stop_reason") or "end_turn", "stop")
    return {
        "id": data.get("id") or _message_id(None),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model") or "",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": _usage_to_chat(data.get("usage")),
    }


class MessagesToChatStream:
    """Translates Messages API stream events, one parsed event at a time, into chat chunks (dicts).

    ``feed(event)`` gives the chunks the event makes (the usage chunk, with no
    choices, after ``message_stop`` when ``include_usage``); ``stopped`` says the
    stream ended properly.
    """

    def __init__(self, include_usage: bool = True) -> None:
        self.include_usage = include_usage
        self.id = _message_id(None)
        self.model = ""
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # content block index → chat tool call index
        self.stopped = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self.usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                at = self.tools[event.get("index", 0)] = len(self.tools)
                fn = {"name": block.get("name") or "", "arguments": ""}
                call = {"index": at, "id": block.get("id") or "", "type": "function", "function": fn}
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text") or ""})]
            at = self.tools.get(event.get("index", 0))
            if delta.get("type") == "input_json_delta" and at is not None:
                fn = {"arguments": delta.get("partial_json") or ""}
                return [self._chunk({"tool_calls": [{"index": at, "function": fn}]})]
            return []  # thinking and signature deltas: not part of a chat answer
        if kind == "message_delta":
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            stop = (event.get("delta") or {}).get("stop_reason") or "end_turn"
            return [self._chunk({}, STOP_TO_FINISH.get(stop, "stop"))]
        if kind == "message_stop":
            self.stopped = True
            if not self.include_usage:
                return []
            usage_chunk = self._chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = _usage_to_chat(self.usage)
            return [usage_chunk]
        return []  # ping, and event types added later
