"""OpenAI Chat Completions wire types.

Everything that crosses a wire in smallfleet is one of these: what a client sends
to the gateway, what an upstream answers, what a specialist produces. Fields the
OpenAI API accepts that are not modelled here are tolerated (``extra="allow"``)
and passed on unchanged.

``ChatRequest.parse(data)`` is the one entry point for untrusted input: it raises
a single :class:`~smallfleet.errors.RequestInvalid` naming the field, in the
``messages[1].content`` style OpenAI uses.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
)

from smallfleet.errors import RequestInvalid

__all__ = [
    "AllowedTools",
    "AllowedToolsChoice",
    "AssistantMessage",
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "ChunkChoice",
    "ContentPart",
    "CustomCall",
    "CustomTool",
    "CustomToolCall",
    "CustomToolChoice",
    "CustomToolDefinition",
    "Delta",
    "DeltaFunction",
    "DeltaToolCall",
    "DeveloperMessage",
    "FunctionCall",
    "FunctionDefinition",
    "FunctionMessage",
    "JSONSchemaSpec",
    "Message",
    "NamedToolChoice",
    "ResponseFormat",
    "ResponseMessage",
    "StreamOptions",
    "SystemMessage",
    "Tool",
    "ToolCall",
    "ToolMessage",
    "Usage",
    "UserMessage",
    "chunks_to_response",
    "content_text",
    "new_id",
    "response_to_chunks",
]


class _Wire(BaseModel):
    """Base of the wire types: unknown fields are kept and passed on."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict, without fields that were never set or are None."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


def new_id(prefix: str = "chatcmpl") -> str:
    """An id in the OpenAI style, e.g. ``chatcmpl-3f2a…``."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


# ---------------------------------------------------------------- messages


class ContentPart(_Wire):
    """One part of a multi-part content: ``text``, ``image_url``, ``input_audio``, ``file``, ``refusal``."""

    type: str
    text: str | None = None


Content = str | list[ContentPart]


class FunctionCall(_Wire):
    name: str
    arguments: str = Field(description="The arguments as a JSON string, exactly as OpenAI sends them.")


class ToolCall(_Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class CustomCall(_Wire):
    name: str
    input: str = Field(description="The free-form text the model wrote for the custom tool.")


class CustomToolCall(_Wire):
    """A call to a ``custom`` tool, as it comes back in a conversation's history.

    ``function`` is a read-only view (name, input as the arguments), so code that reads calls by
    name reads these too; it is not part of the wire form.
    """

    id: str
    type: Literal["custom"] = "custom"
    custom: CustomCall

    @property
    def function(self) -> FunctionCall:
        return FunctionCall(name=self.custom.name, arguments=self.custom.input)


def _call_kind(v: Any) -> str | None:
    kind = v.get("type", "function") if isinstance(v, dict) else getattr(v, "type", None)
    return {"function": "ToolCall", "custom": "CustomToolCall"}.get(kind) if isinstance(kind, str) else None


AnyToolCall = Annotated[
    Annotated[ToolCall, Tag("ToolCall")] | Annotated[CustomToolCall, Tag("CustomToolCall")],
    Discriminator(
        _call_kind,
        custom_error_type="invalid_tool_type",
        custom_error_message="a tool call's type must be 'function' or 'custom'",
    ),
]


class SystemMessage(_Wire):
    role: Literal["system"] = "system"
    content: Content
    name: str | None = None


class DeveloperMessage(_Wire):
    role: Literal["developer"] = "developer"
    content: Content
    name: str | None = None


class UserMessage(_Wire):
    role: Literal["user"] = "user"
    content: Content
    name: str | None = None


class AssistantMessage(_Wire):
    role: Literal["assistant"] = "assistant"
    content: Content | None = None
    tool_calls: list[AnyToolCall] | None = None
    refusal: str | None = None
    name: str | None = None


class ToolMessage(_Wire):
    role: Literal["tool"] = "tool"
    content: Content
    tool_call_id: str


class FunctionMessage(_Wire):
    """The legacy ``function`` role, still accepted by the API."""

    role: Literal["function"] = "function"
    content: str | None = None
    name: str


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


def content_text(content: Content | None) -> str:
    """The plain text of a message content (text parts joined by newlines)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text for p in content if p.text)


# ---------------------------------------------------------------- tools and formats


class FunctionDefinition(_Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Wire):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class CustomToolDefinition(_Wire):
    name: str
    description: str | None = None
    format: dict[str, Any] | None = None  # {"type": "text"} or {"type": "grammar", "grammar": {...}}


class CustomTool(_Wire):
    """A ``custom`` tool (free-form text input, optionally constrained by a grammar).

    Passed through to the upstream and recorded; the router never serves a request that offers
    one (:meth:`ChatRequest.passthrough_reason`). ``function`` is a read-only view (name,
    description, no parameters) for code that lists tools by name; not part of the wire form.
    """

    type: Literal["custom"] = "custom"
    custom: CustomToolDefinition

    @property
    def function(self) -> FunctionDefinition:
        return FunctionDefinition(name=self.custom.name, description=self.custom.description)


def _tool_kind(v: Any) -> str | None:
    kind = v.get("type", "function") if isinstance(v, dict) else getattr(v, "type", None)
    return {"function": "Tool", "custom": "CustomTool"}.get(kind) if isinstance(kind, str) else None


AnyTool = Annotated[
    Annotated[Tool, Tag("Tool")] | Annotated[CustomTool, Tag("CustomTool")],
    Discriminator(
        _tool_kind,
        custom_error_type="invalid_tool_type",
        custom_error_message="a tool's type must be 'function' or 'custom'",
    ),
]


class _NamedFunction(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"] = "function"
    function: _NamedFunction


class CustomToolChoice(_Wire):
    """``{"type": "custom", "custom": {"name": ...}}``: the model must call this custom tool."""

    type: Literal["custom"]
    custom: _NamedFunction


class AllowedTools(_Wire):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]] = Field(min_length=1)


class AllowedToolsChoice(_Wire):
    """``{"type": "allowed_tools", "allowed_tools": {"mode", "tools"}}``: a subset the model may call."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


def _choice_kind(v: Any) -> str | None:
    if isinstance(v, str):
        return "str"
    kind = v.get("type", "function") if isinstance(v, dict) else getattr(v, "type", None)
    kinds = {
        "function": "NamedToolChoice",
        "custom": "CustomToolChoice",
        "allowed_tools": "AllowedToolsChoice",
    }
    return kinds.get(kind) if isinstance(kind, str) else None


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("str")]
    | Annotated[NamedToolChoice, Tag("NamedToolChoice")]
    | Annotated[CustomToolChoice, Tag("CustomToolChoice")]
    | Annotated[AllowedToolsChoice, Tag("AllowedToolsChoice")],
    Discriminator(
        _choice_kind,
        custom_error_type="invalid_tool_choice",
        custom_error_message="tool_choice must be 'none', 'auto', 'required' or an object of type "
        "'function', 'custom' or 'allowed_tools'",
    ),
]


class JSONSchemaSpec(_Wire):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None


class StreamOptions(_Wire):
    include_usage: StrictBool | None = None


# ---------------------------------------------------------------- request


class ChatRequest(_Wire):
    """A ``POST /v1/chat/completions`` body."""

    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[AnyTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: StrictFloat | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | None = Field(default=None, ge=0, le=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    n: StrictInt | None = None
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    presence_penalty: StrictFloat | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: StrictFloat | None = Field(default=None, ge=-2, le=2)
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    user: str | None = None
    metadata: dict[str, str] | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, v: int | None) -> int | None:
        if v is not None and v != 1:
            raise ValueError("only n=1 is supported; send several requests for several choices")
        return v

    @classmethod
    def parse(cls, data: Any) -> ChatRequest:
        """Validate untrusted input; raise one :class:`RequestInvalid` that names the field."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except (ValueError, UnicodeDecodeError) as e:
                raise RequestInvalid(f"The body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise RequestInvalid("The body must be a JSON object.", code="invalid_type")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise _request_invalid(e) from None

    @property
    def output_token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The schema of a ``json_schema`` response format, if one was asked for."""
        rf = self.response_format
        if rf and rf.type == "json_schema" and rf.json_schema is not None:
            return rf.json_schema.schema_ or {}
        return None

    def tool_names(self) -> list[str]:
        return [t.function.name for t in self.tools or []]

    def passthrough_reason(self) -> str | None:
        """Why only the upstream may answer this request (the router does not serve it), or None.

        ``custom`` tools and an ``allowed_tools`` or ``custom`` tool choice: no specialist is
        trained or validated for them, so they are passed through as sent.
        """
        if any(isinstance(t, CustomTool) for t in self.tools or []):
            return "custom_tools"
        if isinstance(self.tool_choice, AllowedToolsChoice | CustomToolChoice):
            return f"tool_choice_{self.tool_choice.type}"
        for m in self.messages:
            if isinstance(m, AssistantMessage) and any(
                isinstance(c, CustomToolCall) for c in m.tool_calls or []
            ):
                return "custom_tools"
        return None

    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return content_text(m.content)
        return ""

    def system_text(self) -> str:
        return "\n".join(content_text(m.content) for m in self.messages if m.role in ("system", "developer"))


_TAGS = {"system", "developer", "user", "assistant", "tool", "function"}
_UNION_MEMBERS = {"str", "int", "float", "bool", "none"}
_UNION_MEMBER_PREFIXES = ("function-", "literal[", "list[", "dict[", "json-or-python[")


def _param_path(loc: Iterable[Any]) -> str:
    out = ""
    before: list[Any] = []
    for part in loc:
        is_tag = len(before) >= 2 and before[-2] == "messages" and isinstance(before[-1], int)
        before.append(part)
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if is_tag and part in _TAGS:  # the role tag of messages[i], not a field
            continue
        if part in _UNION_MEMBERS or str(part).startswith(_UNION_MEMBER_PREFIXES):
            continue  # the name pydantic gives a member of a union, not a field
        if isinstance(globals().get(str(part)), type):  # a union member's class name, not a field
            continue
        out += f".{part}" if out else str(part)
    return out


def _request_invalid(e: ValidationError) -> RequestInvalid:
    errors = e.errors(include_url=False)
    # Prefer the most specific error: the one with the longest location.
    first = max(errors, key=lambda err: len(err["loc"]))
    param = _param_path(first["loc"])
    kind = first["type"]
    if kind == "missing":
        msg = f"Missing required parameter: '{param}'."
        code = "missing_required_parameter"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        param += ".role"
        msg = f"Invalid value for '{param}': {first['msg']}."
        code = "invalid_value"
    else:
        text = first["msg"].removeprefix("Value error, ")
        msg = f"Invalid value for '{param}': {text}."
        code = "invalid_type" if kind.endswith(("_type", "_parsing")) else "invalid_value"
    return RequestInvalid(msg, param=param, code=code)


# ---------------------------------------------------------------- response


class PromptTokensDetails(_Wire):
    cached_tokens: int | None = None


class Usage(_Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class ResponseMessage(_Wire):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(_Wire):
    index: int = 0
    message: ResponseMessage
    finish_reason: FinishReason | None = "stop"
    logprobs: dict[str, Any] | None = None


class ChatResponse(_Wire):
    id: str = Field(default_factory=new_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

    @classmethod
    def of_text(cls, model: str, text: str, usage: Usage | None = None) -> ChatResponse:
        return cls(model=model, choices=[Choice(message=ResponseMessage(content=text))], usage=usage)

    @classmethod
    def of_tool_calls(
        cls, model: str, calls: list[tuple[str, dict[str, Any]]], usage: Usage | None = None
    ) -> ChatResponse:
        """A response calling ``calls`` (name, arguments) with fresh ids and JSON-string arguments."""
        tool_calls = [
            ToolCall(
                id=new_id("call"),
                function=FunctionCall(name=name, arguments=json.dumps(args, ensure_ascii=False)),
            )
            for name, args in calls
        ]
        msg = ResponseMessage(content=None, tool_calls=tool_calls)
        return cls(model=model, choices=[Choice(message=msg, finish_reason="tool_calls")], usage=usage)

    @property
    def message(self) -> ResponseMessage:
        return self.choices[0].message

    @property
    def text(self) -> str:
        return self.choices[0].message.content or "" if self.choices else ""


# ---------------------------------------------------------------- streaming


class DeltaFunction(_Wire):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(_Wire):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction | None = None


class Delta(_Wire):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None
    refusal: str | None = None


class ChunkChoice(_Wire):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class ChatChunk(_Wire):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    system_fingerprint: str | None = None


def response_to_chunks(resp: ChatResponse, include_usage: bool = False, piece: int = 0) -> list[ChatChunk]:
    """Cut a whole response into the chunks a streaming endpoint would send.

    Text is sent in pieces of ``piece`` characters (0: one piece); each tool call
    as a header chunk then its arguments. With ``include_usage`` a last chunk with
    no choices carries the usage, as OpenAI does with ``stream_options.include_usage``.
    """
    chunks: list[ChatChunk] = []

    def add(delta: Delta, finish: FinishReason | None = None) -> None:
        chunks.append(
            ChatChunk(
                id=resp.id,
                created=resp.created,
                model=resp.model,
                choices=[ChunkChoice(delta=delta, finish_reason=finish)],
                system_fingerprint=resp.system_fingerprint,
            )
        )

    msg = resp.choices[0].message if resp.choices else ResponseMessage()
    add(Delta(role="assistant", content=""))
    if msg.refusal:
        add(Delta(refusal=msg.refusal))
    text = msg.content or ""
    if text:
        size = piece or len(text)
        for i in range(0, len(text), size):
            add(Delta(content=text[i : i + size]))
    for i, call in enumerate(msg.tool_calls or []):
        add(
            Delta(
                tool_calls=[
                    DeltaToolCall(
                        index=i,
                        id=call.id,
                        type="function",
                        function=DeltaFunction(name=call.function.name, arguments=""),
                    )
                ]
            )
        )
        add(
            Delta(
                tool_calls=[DeltaToolCall(index=i, function=DeltaFunction(arguments=call.function.arguments))]
            )
        )
    finish = resp.choices[0].finish_reason if resp.choices else "stop"
    add(Delta(), finish)
    if include_usage:
        chunks.append(
            ChatChunk(
                id=resp.id,
                created=resp.created,
                model=resp.model,
                choices=[],
                usage=resp.usage,
                system_fingerprint=resp.system_fingerprint,
            )
        )
    return chunks


def chunks_to_response(chunks: Iterable[ChatChunk]) -> ChatResponse:
    """Put streamed chunks back together into the response they add up to."""
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish: FinishReason | None = None
    usage: Usage | None = None
    rid, model, created = new_id(), "", int(time.time())
    refusal: list[str] = []
    fingerprint: str | None = None
    for ch in chunks:
        rid, model, created = ch.id, ch.model or model, ch.created
        fingerprint = ch.system_fingerprint or fingerprint
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            if c.delta.content:
                text.append(c.delta.content)
            if c.delta.refusal:
                refusal.append(c.delta.refusal)
            for tc in c.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            if c.finish_reason:
                finish = c.finish_reason
    tool_calls = [
        ToolCall(
            id=s["id"] or new_id("call"), function=FunctionCall(name=s["name"], arguments=s["arguments"])
        )
        for _, s in sorted(calls.items())
    ] or None
    message = ResponseMessage(
        content="".join(text) if text or not (tool_calls or refusal) else None,
        tool_calls=tool_calls,
        refusal="".join(refusal) or None,
    )
    return ChatResponse(
        id=rid,
        created=created,
        model=model,
        choices=[Choice(message=message, finish_reason=finish)],
        usage=usage,
        system_fingerprint=fingerprint,
    )
