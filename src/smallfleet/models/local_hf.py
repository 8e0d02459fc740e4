"""A Hugging Face causal LM, run in-process, as a :class:`ChatModel`.

``LocalCausalLM("Qwen/Qwen2.5-0.5B-Instruct")`` (or a local path) answers chat
requests with the model's own chat template, on CPU or GPU. Nothing is imported
or loaded until the first request.

What it does with a request:

* **Constrained decoding** (xgrammar): ``response_format`` ``json_schema`` → the
  output follows the schema; ``json_object`` → any JSON object. With tools and
  ``tool_choice`` ``"required"`` or a named function, the output is one or more
  Hermes-style calls ``<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>``
  whose arguments follow the tool's parameters schema. With ``"auto"`` (the
  default) the model may write free text, but once it opens ``<tool_call>`` the
  call itself is constrained. ``"none"`` leaves the output unconstrained.
  JSON is written compactly in a fixed style (``", "`` and ``": "`` separators,
  properties in schema order).
* **Token limit** inside constrained output: the answer comes back with
  ``finish_reason="length"`` and the partial text as ``content`` (no
  ``tool_calls``) — never as a finished answer. ``stop`` strings apply to
  unconstrained output only (cutting JSON at a stop string would break it).
* **Tool calls** are parsed from the output: Hermes/Qwen ``<tool_call>`` blocks
  (several → parallel calls) and plain JSON ``{"name", "arguments"}`` (or a list
  of them), returned as OpenAI ``tool_calls`` with ``finish_reason="tool_calls"``.
* **LoRA adapters** (PEFT): ``adapters={"name": path}`` are loaded on the one base
  model. A request picks one with ``metadata={"adapter": "name"}`` or a model
  field ``"ALIAS:name"``; without either it runs on the base model.
* **Sampling**: ``temperature`` 0 or unset → greedy; ``top_p``; ``seed``;
  ``max_completion_tokens``/``max_tokens``. Penalties are ignored.
* **Usage and log-probs**: prompt tokens from the templated input, completion
  tokens generated; ``logprobs``/``top_logprobs`` answered in the OpenAI shape.
  :meth:`LocalCausalLM.generate` gives the per-token log-probs of the model's own
  (unconstrained, temperature-1) distribution, for confidence scores.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smallfleet._extras import require
from smallfleet.errors import ConfigError, RequestInvalid
from smallfleet.models.base import ChatModel
from smallfleet.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    Usage,
    content_text,
    new_id,
)

if TYPE_CHECKING:
    from smallfleet.config import LocalModelConfig, Settings

__all__ = [
    "Generation",
    "LocalCausalLM",
    "canonical_json",
    "chat_messages",
    "enforceable",
    "parse_tool_calls",
    "tool_call_text",
]

JSON_SEPARATORS = (", ", ": ")
_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


# ---------------------------------------------------------------- text formats


def canonical_json(value: Any, schema: Mapping[str, Any] | None = None) -> str:
    """``value`` as JSON in the style constrained decoding writes: ``", "``/``": "``, schema key order."""
    return json.dumps(_ordered(value, schema), ensure_ascii=False, separators=JSON_SEPARATORS)


def _ordered(value: Any, schema: Mapping[str, Any] | None) -> Any:
    if isinstance(value, dict) and schema:
        props = schema.get("properties") or {}
        keys = [k for k in props if k in value] + [k for k in value if k not in props]
        return {k: _ordered(value[k], props.get(k)) for k in keys}
    if isinstance(value, list) and schema and isinstance(schema.get("items"), dict):
        return [_ordered(v, schema["items"]) for v in value]
    return value


def tool_call_text(
    name: str, arguments: Mapping[str, Any], parameters: Mapping[str, Any] | None = None
) -> str:
    """One Hermes-style call, exactly as the tool-call grammar writes it."""
    args = canonical_json(dict(arguments), parameters)
    return (
        f'<tool_call>\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {args}}}\n</tool_call>'
    )


def _as_call(obj: Any, tool_names: Sequence[str] | None) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    if tool_names is not None and obj["name"] not in tool_names:
        return None
    return obj["name"], args


def parse_tool_calls(
    text: str, tool_names: Sequence[str] | None = None
) -> tuple[str | None, list[tuple[str, dict[str, Any]]]]:
    """Split model output into (remaining text or None, calls).

    Reads Hermes/Qwen ``<tool_call>{json}</tool_call>`` blocks (a missing closing
    tag at the very end is tolerated) and, failing that, a whole output that is a
    plain JSON call ``{"name", "arguments"}`` or a list of them (a ```json fence
    allowed). With ``tool_names`` only calls to those tools count. Arguments given
    as a JSON string are decoded. Text that holds no valid call gives ``(text, [])``.
    """
    calls: list[tuple[str, dict[str, Any]]] = []
    if "<tool_call>" in text:
        for m in _TOOL_CALL_RE.finditer(text):
            try:
                call = _as_call(json.loads(m.group(1)), tool_names)
            except ValueError:
                call = None
            if call is None:
                return text, []  # a malformed block: leave the output as text
            calls.append(call)
        rest = _TOOL_CALL_RE.sub("", text).strip()
        return (rest or None), calls
    body = text.strip()
    fence = _FENCE_RE.match(body)
    if fence:
        body = fence.group(1)
    if not body.startswith(("{", "[")):
        return text, []
    try:
        obj = json.loads(body)
    except ValueError:
        return text, []
    items = obj if isinstance(obj, list) else [obj]
    parsed = [_as_call(o, tool_names) for o in items]
    if not items or any(c is None for c in parsed):
        return text, []
    return None, [c for c in parsed if c is not None]


def chat_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """The request's messages as the plain dicts chat templates expect (string content, dict arguments)."""
    out: list[dict[str, Any]] = []
    for m in request.messages:
        role = "system" if m.role == "developer" else m.role
        d: dict[str, Any] = {"role": role, "content": content_text(getattr(m, "content", None))}
        if m.role == "assistant" and m.tool_calls:
            d["tool_calls"] = [
                {
                    "type": "function",
                    "id": tc.id,
                    "function": {"name": tc.function.name, "arguments": _args(tc)},
                }
                for tc in m.tool_calls
            ]
        if m.role == "tool":
            d["tool_call_id"] = m.tool_call_id
        if m.role == "function":
            d = {"role": "tool", "content": d["content"], "name": m.name}
        out.append(d)
    return out


def _args(tc: ToolCall) -> Any:
    try:
        return json.loads(tc.function.arguments or "{}")
    except ValueError:
        return tc.function.arguments


_NESTED = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "contains")
_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def enforceable(schema: Any) -> Any:
    """``schema`` with length-bounded strings rewritten as an equivalent ``pattern``.

    xgrammar (0.2.x) compiles ``minLength``/``maxLength`` to a character class that
    lets raw control characters through, which is not valid JSON; a pattern that
    excludes them (and quotes and backslashes, which that rule excludes too) is.
    """
    if isinstance(schema, list):
        return [enforceable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    types = out.get("type")
    is_string = types == "string" or (isinstance(types, list) and "string" in types)
    bounded = "minLength" in out or "maxLength" in out
    if is_string and bounded and not any(k in out for k in ("pattern", "format", "enum", "const")):
        lo, hi = int(out.pop("minLength", 0)), out.pop("maxLength", None)
        top = "" if hi is None else str(int(hi))
        out["pattern"] = '^[^\\x00-\\x1f"\\\\]{' + f"{lo},{top}" + "}$"
    for key in _NESTED:
        if isinstance(out.get(key), dict):
            out[key] = {k: enforceable(v) for k, v in out[key].items()}
    for key in (*_SUBSCHEMAS, *_LISTS):
        if key in out:
            out[key] = enforceable(out[key])
    return out


def _tool_parameters(request: ChatRequest) -> dict[str, dict[str, Any]]:
    return {t.function.name: t.function.parameters or {"type": "object"} for t in request.tools or []}


# ---------------------------------------------------------------- generation result


@dataclass
class Generation:
    """What one decoding run produced."""

    text: str
    token_ids: list[int]
    #: log-prob of each generated token under the model's own distribution (temperature 1, no mask)
    logprobs: list[float]
    prompt_tokens: int
    finish_reason: str  # "stop" or "length"
    constrained: str | None = None  # "json", "tools", "tools_auto" or None
    tokens: list[str] = field(default_factory=list)
    top_logprobs: list[list[tuple[str, float]]] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


class _Detokenizer:
    """Incremental decoding that holds back half-made characters and possible stop-string starts."""

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.stopped = False

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self.flush()
        if text.endswith("\ufffd"):
            return ""
        self.text = text
        hold = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        end = len(text) - hold
        delta = text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return delta

    def flush(self) -> str:
        delta = self.text[self.sent :]
        self.sent = len(self.text)
        return delta


# ---------------------------------------------------------------- the model


class LocalCausalLM(ChatModel):
    """A Hugging Face causal LM (id or path) with its chat template, optional LoRA adapters."""

    supports_streaming = True
    supports_tools = True
    supports_json_schema = True

    def __init__(
        self,
        model: str | Path,
        *,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        adapters: Mapping[str, str | Path] | None = None,
        max_new_tokens: int = 512,
    ) -> None:
        self.model_id = str(model)
        self.name = name or self.model_id
        self.device_spec = device
        self.dtype_spec = dtype
        self.adapters = {k: str(v) for k, v in (adapters or {}).items()}
        self.max_new_tokens = max_new_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._compiler: Any = None
        self._vocab_size = 0
        self._stop_ids: set[int] = set()
        self._cache_kw = "past_key_values"
        self._grammars: OrderedDict[str, Any] = OrderedDict()
        self._load_lock = threading.Lock()
        self._grammar_lock = threading.Lock()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, alias: str, config: LocalModelConfig, settings: Settings) -> LocalCausalLM:
        return cls(
            config.model,
            name=alias,
            device=config.device,
            dtype=config.dtype,
            adapters=config.adapters,
            max_new_tokens=config.max_new_tokens,
        )

    @classmethod
    def from_loaded(
        cls, model: Any, tokenizer: Any, *, name: str = "local", max_new_tokens: int = 512
    ) -> LocalCausalLM:
        """Wrap a model and tokenizer already in memory (e.g. a PEFT model just trained)."""
        self = cls(getattr(model, "name_or_path", name), name=name, max_new_tokens=max_new_tokens)
        self._setup(model, tokenizer)
        return self

    # ------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    def load(self) -> None:
        """Load the tokenizer, the model and its adapters (once; thread-safe)."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            torch = require("torch", "local")
            transformers = require("transformers", "local")
            device = _device(torch, self.device_spec)
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_id)
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    self.model_id, dtype=_dtype(torch, self.dtype_spec, device)
                )
            except (OSError, ValueError) as e:
                raise ConfigError(f"Could not load the model {self.model_id!r}: {e}") from None
            if self.adapters:
                peft = require("peft", "local")
                first, *rest = self.adapters.items()
                try:
                    model = peft.PeftModel.from_pretrained(model, first[1], adapter_name=first[0])
                    for adapter, path in rest:
                        model.load_adapter(path, adapter_name=adapter)
                except (OSError, ValueError) as e:
                    raise ConfigError(f"Could not load the adapters of {self.model_id!r}: {e}") from None
            model.to(device)
            model.eval()
            self._setup(model, tokenizer)

    def _setup(self, model: Any, tokenizer: Any) -> None:
        xgr = require("xgrammar", "local")
        self._device = next(model.parameters()).device
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # transformers 5 renamed past_key_values to cache
        self._cache_kw = (
            "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        )
        self._vocab_size = int(model.get_output_embeddings().weight.shape[0])
        stops: set[int] = set()
        for ids in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
            stops.update([ids] if isinstance(ids, int) else ids or [])
        self._stop_ids = stops
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=self._vocab_size, stop_token_ids=sorted(stops)
        )
        self._compiler = xgr.GrammarCompiler(info, max_threads=2)
        self._tokenizer = tokenizer
        self._model = model

    async def aclose(self) -> None:
        self._model = self._tokenizer = self._compiler = None
        self._grammars.clear()

    # ------------------------------------------------------------ requests

    def check_supported(self, request: ChatRequest) -> None:
        """Refuse what a local model cannot honour: custom tools and an allowed/custom tool choice.

        They would need a grammar for free-form tool input, or a subset of tools, that the
        decoder does not build; a clear 400 beats a tool call the client did not allow.
        """
        reason = request.passthrough_reason()
        if reason is None:
            return
        if reason.startswith("tool_choice_"):
            param, what = "tool_choice", f"a tool_choice of type {reason.removeprefix('tool_choice_')!r}"
        elif any(t.type == "custom" for t in request.tools or []):
            param, what = "tools", "custom tools"
        else:
            param, what = "messages", "custom tool calls"
        raise RequestInvalid(
            f"Model {self.name!r} is a local model and does not support {what}; "
            "send function tools with tool_choice 'auto', 'required', 'none' or a named function, "
            "or use an upstream model that supports them.",
            param=param,
        )

    def adapter_for(self, request: ChatRequest) -> str | None:
        """The adapter a request asks for: ``metadata.adapter``, else a model field ``ALIAS:ADAPTER``."""
        wanted = (request.metadata or {}).get("adapter")
        param = "metadata.adapter"
        if wanted is None and ":" in request.model:
            suffix = request.model.rsplit(":", 1)[1]
            if suffix in self.adapters:
                wanted, param = suffix, "model"
        if wanted is None or wanted == "":
            return None
        if wanted not in self.adapters:
            known = ", ".join(sorted(self.adapters)) or "none"
            raise RequestInvalid(
                f"Unknown adapter {wanted!r} for model {self.name!r}; known adapters: {known}.", param=param
            )
        return wanted

    def constraint(self, request: ChatRequest) -> tuple[str, dict[str, Any]] | None:
        """(kind, xgrammar spec) for what the request asks the output to be, or None."""
        schema = request.json_schema
        if schema is not None:
            return "json", {"json_schema": schema or {"type": "object"}}
        if request.response_format and request.response_format.type == "json_object":
            return "json", {"json_schema": {"type": "object"}}
        choice = request.tool_choice
        if not request.tools or choice == "none":
            return None
        params = _tool_parameters(request)
        if choice is not None and not isinstance(choice, str):
            if choice.function.name not in params:
                raise RequestInvalid(
                    f"tool_choice names {choice.function.name!r}, which is not among the tools.",
                    param="tool_choice",
                )
            params = {choice.function.name: params[choice.function.name]}
        kind = "tools_auto" if choice in (None, "auto") else "tools"
        spec = {"tools": params, "mode": kind, "parallel": request.parallel_tool_calls is not False}
        return kind, spec

    def _grammar(self, spec: dict[str, Any]) -> Any:
        """The compiled grammar for ``spec`` (cached, at most 64)."""
        self.load()
        with self._grammar_lock:
            return self._compile(spec)

    def _compile(self, spec: dict[str, Any]) -> Any:
        key = json.dumps(spec, sort_keys=True)
        if key in self._grammars:
            self._grammars.move_to_end(key)
            return self._grammars[key]
        xgr = require("xgrammar", "local")
        try:
            if "json_schema" in spec:
                compiled = self._compiler.compile_json_schema(
                    enforceable(spec["json_schema"]), any_whitespace=False, separators=JSON_SEPARATORS
                )
            else:
                compiled = self._compiler.compile_structural_tag(_tool_structural_tag(xgr, spec))
        except Exception as e:  # xgrammar raises RuntimeError/ValueError/its own types for bad schemas
            param = "response_format.json_schema.schema" if "json_schema" in spec else "tools"
            raise RequestInvalid(f"The schema cannot be enforced: {e}", param=param) from None
        self._grammars[key] = compiled
        if len(self._grammars) > 64:
            self._grammars.popitem(last=False)
        return compiled

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The templated prompt, as token ids, ending where the assistant's answer begins."""
        self.load()
        tools = [t.to_dict() for t in request.tools] if request.tools else None
        text = self._tokenizer.apply_chat_template(
            chat_messages(request), tools=tools, tokenize=False, add_generation_prompt=True
        )
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(
        self,
        request: ChatRequest,
        adapter: str | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Decode an answer to ``request`` (blocking; one at a time). ``on_text`` gets text as it comes."""
        self.load()
        torch = require("torch", "local")
        xgr = require("xgrammar", "local")
        prompt = self.prompt_ids(request)
        limit = int(getattr(self._model.config, "max_position_embeddings", 0) or 0)
        max_new = request.output_token_limit or self.max_new_tokens
        if limit:
            if len(prompt) >= limit:
                raise RequestInvalid(
                    f"The prompt is {len(prompt)} tokens; {self.name} takes at most {limit}.",
                    param="messages",
                )
            max_new = min(max_new, limit - len(prompt))
        constraint = self.constraint(request)
        matcher = xgr.GrammarMatcher(self._grammar(constraint[1])) if constraint else None
        stops = [] if constraint and constraint[0] != "tools_auto" else _stops(request.stop)
        temperature = request.temperature or 0.0
        seed = request.seed if request.seed is not None else random.randrange(2**62)
        gen = torch.Generator(device=self._device).manual_seed(seed)
        n_top = (request.top_logprobs or 0) if request.logprobs else 0

        with self._lock:
            model = self._model
            ctx = _adapter_context(model, adapter)
            with ctx, torch.inference_mode():
                return self._decode(
                    torch,
                    xgr,
                    model,
                    prompt,
                    max_new=max_new,
                    matcher=matcher,
                    stops=stops,
                    temperature=temperature,
                    top_p=request.top_p,
                    gen=gen,
                    n_top=n_top,
                    want_tokens=bool(request.logprobs),
                    on_text=on_text,
                    constrained=constraint[0] if constraint else None,
                )

    def _decode(
        self,
        torch: Any,
        xgr: Any,
        model: Any,
        prompt: list[int],
        *,
        max_new: int,
        matcher: Any,
        stops: list[str],
        temperature: float,
        top_p: float | None,
        gen: Any,
        n_top: int,
        want_tokens: bool,
        on_text: Callable[[str], None] | None,
        constrained: str | None,
    ) -> Generation:
        tok = self._tokenizer
        detok = _Detokenizer(tok, stops)
        bitmask = xgr.allocate_token_bitmask(1, self._vocab_size) if matcher is not None else None
        ids: list[int] = []
        logprobs: list[float] = []
        tokens: list[str] = []
        tops: list[list[tuple[str, float]]] = []
        finish = "length"
        out = model(input_ids=torch.tensor([prompt], device=self._device), use_cache=True)
        for _ in range(max_new):
            raw = out.logits[0, -1].float()
            logp = torch.log_softmax(raw, dim=-1)
            scores = raw.clone()
            if matcher is not None:
                matcher.fill_next_token_bitmask(bitmask)
                xgr.apply_token_bitmask_inplace(scores[None], bitmask.to(scores.device))
            token = _sample(torch, scores, temperature, top_p, gen)
            if matcher is not None and not matcher.accept_token(token):
                raise RuntimeError(f"xgrammar rejected token {token} that its own mask allowed")
            if token in self._stop_ids:
                finish = "stop"
                break
            ids.append(token)
            logprobs.append(float(logp[token]))
            if want_tokens:
                tokens.append(tok.decode([token], skip_special_tokens=False))
                if n_top:
                    vals, idx = torch.topk(logp, n_top)
                    tops.append([(tok.decode([int(i)]), float(v)) for v, i in zip(vals, idx, strict=True)])
            delta = detok.push(token)
            if delta and on_text is not None:
                on_text(delta)
            if detok.stopped or (matcher is not None and matcher.is_terminated()):
                finish = "stop"
                break
            cache = {self._cache_kw: out[self._cache_kw if self._cache_kw in out else "past_key_values"]}
            out = model(input_ids=torch.tensor([[token]], device=self._device), use_cache=True, **cache)
        rest = detok.flush()
        if rest and on_text is not None:
            on_text(rest)
        return Generation(
            text=detok.text,
            token_ids=ids,
            logprobs=logprobs,
            prompt_tokens=len(prompt),
            finish_reason=finish,
            constrained=constrained,
            tokens=tokens,
            top_logprobs=tops,
        )

    def to_response(self, request: ChatRequest, g: Generation) -> ChatResponse:
        """The OpenAI response for a generation: text, or tool calls when the output holds them."""
        usage = Usage.of(g.prompt_tokens, g.completion_tokens)
        message = ResponseMessage(content=g.text)
        finish = g.finish_reason
        if request.tools and request.tool_choice != "none" and finish == "stop":
            rest, calls = parse_tool_calls(g.text, request.tool_names())
            if calls:
                message = ResponseMessage(
                    content=rest,
                    tool_calls=[
                        ToolCall(
                            id=new_id("call"),
                            function=FunctionCall(name=n, arguments=json.dumps(a, ensure_ascii=False)),
                        )
                        for n, a in calls
                    ],
                )
                finish = "tool_calls"
        choice = Choice(message=message, finish_reason=finish)  # type: ignore[arg-type]
        if request.logprobs:
            choice.logprobs = {"content": _logprob_content(g)}
        return ChatResponse(model=request.model or self.name, choices=[choice], usage=usage)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.check_supported(request)
        adapter = self.adapter_for(request)
        g = await asyncio.to_thread(self.generate, request, adapter)
        return self.to_response(request, g)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Token streaming for text and JSON; tool calls come whole at the end (they must parse first)."""
        self.check_supported(request)
        if request.tools and request.tool_choice != "none":
            async for chunk in super().stream(request):
                yield chunk
            return
        adapter = self.adapter_for(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def on_text(delta: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("text", delta))

        def run() -> None:
            try:
                result: tuple[str, Any] = ("done", self.generate(request, adapter, on_text))
            except BaseException as e:  # handed to the consumer, which re-raises it
                result = ("error", e)
            loop.call_soon_threadsafe(queue.put_nowait, result)

        worker = threading.Thread(target=run, name="smallfleet-generate", daemon=True)
        worker.start()
        rid, model = new_id(), request.model or self.name

        def chunk(delta: Delta, finish: Any = None) -> ChatChunk:
            return ChatChunk(id=rid, model=model, choices=[ChunkChoice(delta=delta, finish_reason=finish)])

        yield chunk(Delta(role="assistant", content=""))
        while True:
            kind, value = await queue.get()
            if kind == "text":
                yield chunk(Delta(content=value))
            elif kind == "error":
                raise value
            else:
                break
        g: Generation = value
        yield chunk(Delta(), g.finish_reason)
        if request.stream_options and request.stream_options.include_usage:
            usage = Usage.of(g.prompt_tokens, g.completion_tokens)
            yield ChatChunk(id=rid, model=model, choices=[], usage=usage)


# ---------------------------------------------------------------- helpers


def _device(torch: Any, spec: str) -> Any:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(spec)


def _dtype(torch: Any, spec: str, device: Any) -> Any:
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    value = getattr(torch, spec, None)
    if not isinstance(value, torch.dtype):
        raise ConfigError(f"models.*.dtype: {spec!r} is not a torch dtype (try auto, float32, bfloat16).")
    return value


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _sample(torch: Any, scores: Any, temperature: float, top_p: float | None, gen: Any) -> int:
    if temperature <= 0:
        return int(torch.argmax(scores))
    probs = torch.softmax(scores / temperature, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p
        keep[0] = True
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))


class _NoAdapter:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _adapter_context(model: Any, adapter: str | None) -> Any:
    """Run on ``adapter``, or on the bare base model when None (for a PEFT model)."""
    if not hasattr(model, "peft_config"):
        return _NoAdapter()
    if adapter is None:
        return model.disable_adapter()
    model.set_adapter(adapter)
    return _NoAdapter()


def _tool_structural_tag(xgr: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Hermes calls as an xgrammar structural tag; arguments in the compact style, from each schema."""
    tags = []
    for name, params in spec["tools"].items():
        schema = enforceable(params)
        ebnf = str(xgr.Grammar.from_json_schema(schema, any_whitespace=False, separators=JSON_SEPARATORS))
        tags.append(
            {
                "type": "tag",
                "begin": f'<tool_call>\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": ',
                "content": {"type": "grammar", "grammar": ebnf},
                "end": "}\n</tool_call>",
            }
        )
    single = not spec["parallel"]
    if spec["mode"] == "tools_auto":
        fmt = {
            "type": "triggered_tags",
            "triggers": ["<tool_call>"],
            "tags": tags,
            "stop_after_first": single,
        }
    else:
        fmt = {
            "type": "tags_with_separator",
            "separator": "\n",
            "tags": tags,
            "at_least_one": True,
            "stop_after_first": single,
        }
    return {"type": "structural_tag", "format": fmt}


def _logprob_content(g: Generation) -> list[dict[str, Any]]:
    out = []
    for i, (t, lp) in enumerate(zip(g.tokens, g.logprobs, strict=False)):
        tops = g.top_logprobs[i] if i < len(g.top_logprobs) else []
        out.append(
            {
                "token": t,
                "logprob": lp,
                "bytes": list(t.encode()),
                "top_logprobs": [{"token": s, "logprob": v, "bytes": list(s.encode())} for s, v in tops],
            }
        )
    return out
