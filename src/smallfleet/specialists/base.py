"""What a specialist is: a small model that learned one task from the large model's answers.

A :class:`Specialist` is fitted on :class:`Example` pairs (the request, the large
model's response), answers new requests with a :class:`Prediction` (an exact
OpenAI response and a confidence), and saves to a self-describing folder::

    DIR/specialist.json   kind, base model, label set or schema, metrics, data hash
    DIR/...               the weights, in whatever layout the kind uses

:class:`SpecialistChatModel` makes any specialist a :class:`ChatModel`, so the
router, the agent runtime and ``evaluate`` use it like any other model.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import hashlib
import importlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from smallfleet.errors import PluginError, UserError
from smallfleet.models.base import ChatModel
from smallfleet.types import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from smallfleet.config import Settings, SpecialistModelConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "Example",
    "Prediction",
    "Specialist",
    "SpecialistChatModel",
    "SpecialistMeta",
    "data_hash",
    "known_kinds",
    "load_kind",
    "load_specialist",
    "plugin_kinds",
    "specialist_class",
]

#: The built-in kinds, kind → "module:Class"; they come first, a plugin cannot replace one.
KINDS: dict[str, str] = {
    "classifier": "smallfleet.specialists.classifier:Classifier",
    "extractor": "smallfleet.specialists.extractor:Extractor",
    "tool_caller": "smallfleet.specialists.tool_caller:ToolCaller",
    "generator": "smallfleet.specialists.generator:Generator",
}

#: The entry point group through which another distribution adds a specialist kind, in its
#: ``pyproject.toml``::
#:
#:     [project.entry-points."smallfleet.specialist_kinds"]
#:     regex = "my_package.regex:RegexSpecialist"
#:
#: The name is the kind (what ``specialist.json`` and ``--kind`` say); the object a
#: :class:`Specialist` subclass. Read on the first lookup of a kind that is not built in.
ENTRY_POINT_GROUP = "smallfleet.specialist_kinds"

META_FILE = "specialist.json"


@dataclass
class Example:
    """One training or evaluation example: a request and the answer to learn (the teacher's)."""

    request: ChatRequest
    response: ChatResponse
    trace_id: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        """From ``{"request": {...}, "response": {...}}`` (OpenAI JSON), as in an examples.jsonl line."""
        return cls(
            request=ChatRequest.model_validate(d["request"]),
            response=ChatResponse.model_validate(d["response"]),
            trace_id=d.get("trace_id"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request": self.request.to_dict(), "response": self.response.to_dict()}
        if self.trace_id:
            out["trace_id"] = self.trace_id
        return out


def read_examples(path: str | Path) -> list[Example]:
    """Examples from a JSONL file of ``{"request", "response"}`` objects."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(Example.from_dict(json.loads(line)))
            except (ValueError, KeyError) as e:
                raise UserError(f"{path}:{i}: not a {{request, response}} example: {e}") from None
    return out


@dataclass
class Prediction:
    """A specialist's answer: an exact OpenAI response and how sure it is (0..1)."""

    response: ChatResponse
    confidence: float


@dataclass
class SpecialistMeta:
    """What ``specialist.json`` holds."""

    kind: str
    base_model: str
    created: float = field(default_factory=time.time)
    data_hash: str = ""
    n_train: int = 0
    labels: list[str] | None = None
    schema: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / META_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def read(cls, directory: Path) -> SpecialistMeta:
        path = Path(directory) / META_FILE
        if not path.exists():
            raise UserError(f"{directory} is not a specialist folder (no {META_FILE}).")
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def data_hash(examples: Sequence[Example]) -> str:
    """A stable hash of the training data, so a retrain on the same data can be skipped."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.request.to_json().encode())
        h.update(b"\x00")
        h.update(json.dumps(ex.response.message.to_dict(), sort_keys=True).encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]


class Specialist(ABC):
    """A small model for one task type.

    Subclasses implement :meth:`predict` (abstract: a class without it cannot be
    instantiated). A kind the flywheel trains and serves from a folder also implements
    :meth:`fit`, :meth:`save` and :meth:`load`; a specialist that only answers (rules, a
    scripted test double) may leave them, and they say so when called.
    """

    kind: ClassVar[str] = ""
    #: whether ``fit`` learns from ``validation`` (calibration, model choice) rather than only
    #: scoring itself on it; a caller that scores candidates on validation anyway (the
    #: flywheel) passes it only where this is true, so the set is not predicted twice
    learns_from_validation: ClassVar[bool] = True
    meta: SpecialistMeta

    @abstractmethod
    def predict(self, requests: Sequence[ChatRequest]) -> list[Prediction]:
        """One :class:`Prediction` per request, in order."""

    def fit(self, examples: Sequence[Example], validation: Sequence[Example] | None = None) -> Specialist:
        raise NotImplementedError(f"{type(self).__name__} cannot be trained: it implements no fit().")

    def save(self, directory: str | Path) -> Path:
        raise NotImplementedError(f"{type(self).__name__} cannot be saved: it implements no save().")

    @classmethod
    def load(cls, directory: str | Path) -> Specialist:
        raise NotImplementedError(f"{cls.__name__} cannot be loaded: it implements no load().")


@functools.lru_cache(maxsize=1)
def plugin_kinds() -> dict[str, EntryPoint]:
    """The kinds installed distributions add (group :data:`ENTRY_POINT_GROUP`), by name; a
    name that is a built-in kind is left out (built-ins come first). Not loaded yet."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in KINDS:
            found.setdefault(ep.name, ep)
    return found


def known_kinds() -> list[str]:
    """Every kind :func:`specialist_class` knows: the built-ins, then the plugins'."""
    return [*KINDS, *(k for k in plugin_kinds() if k not in KINDS)]


def load_kind(ep: EntryPoint) -> type[Specialist]:
    """The :class:`Specialist` subclass a plugin's entry point names, or a :class:`PluginError`
    that names the entry point, its distribution and what went wrong."""
    where = f"{ep.name} = {ep.value!r}"
    dist = getattr(ep, "dist", None)
    if dist is not None:
        where += f" (from the {dist.name} distribution: upgrade or uninstall it)"
    try:
        obj = ep.load()
    except Exception as e:
        raise PluginError(
            f"The specialist kind plugin {where} failed to load: {type(e).__name__}: {e}"
        ) from e
    if not (isinstance(obj, type) and issubclass(obj, Specialist)):
        raise PluginError(
            f"The specialist kind plugin {where} names {obj!r}, not a subclass of "
            "smallfleet.specialists.Specialist."
        )
    return obj


def specialist_class(kind: str) -> type[Specialist]:
    """The class of ``kind``: a built-in, else one an installed plugin adds (loaded now)."""
    if kind in KINDS:
        module, _, name = KINDS[kind].partition(":")
        return getattr(importlib.import_module(module), name)
    ep = plugin_kinds().get(kind)
    if ep is None:
        known = known_kinds()
        close = difflib.get_close_matches(kind, known, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"Unknown specialist kind {kind!r}.{hint} Known kinds: {', '.join(known)}.")
    return load_kind(ep)


def load_specialist(directory: str | Path) -> Specialist:
    """Load whatever specialist ``directory`` holds (its kind is in ``specialist.json``)."""
    meta = SpecialistMeta.read(Path(directory))
    return specialist_class(meta.kind).load(directory)


class SpecialistChatModel(ChatModel):
    """Any specialist as a :class:`ChatModel`; ``predict_one`` also gives the confidence."""

    supports_tools = True
    supports_json_schema = True

    def __init__(self, specialist: Specialist, name: str | None = None) -> None:
        self.specialist = specialist
        self.name = name or f"specialist:{specialist.kind}"

    @classmethod
    def from_config(
        cls, alias: str, config: SpecialistModelConfig, settings: Settings
    ) -> SpecialistChatModel:
        return cls(load_specialist(config.path), name=alias)

    async def predict_one(self, request: ChatRequest) -> Prediction:
        (pred,) = await asyncio.to_thread(self.specialist.predict, [request])
        pred.response.model = self.name
        return pred

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return (await self.predict_one(request)).response
