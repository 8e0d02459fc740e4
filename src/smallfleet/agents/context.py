"""Context sources: what a skill's model reads besides the task (the context-engineering layer).

Each skill has its own sources, rendered into its system message under a token budget:

- :class:`StaticText`: a fixed text (house rules, a style guide);
- :class:`FileSource`: the contents of a file, read at each run;
- :class:`Retrieval`: the top-k chunks of a folder of documents for the task, chunked by
  paragraphs and size, embedded with the bundled sentence encoder, ranked by cosine;
- :class:`StepOutput`: what earlier steps of the same run produced, by step name
  (a skill or tool name).

:func:`build_context` renders the sources and, when they exceed the budget, trims the
lowest-priority ones first (a higher ``priority`` is kept longer). Tokens are estimated
at ~4 characters each unless a tokenizer (``str → int`` count, or an object with
``encode``) is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smallfleet.errors import UserError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ContextPart",
    "ContextSource",
    "FileSource",
    "Retrieval",
    "StaticText",
    "StepOutput",
    "build_context",
    "chunk_text",
    "count_tokens",
]

TokenCounter = Callable[[str], int]


def count_tokens(text: str, tokenizer: TokenCounter | Any | None = None) -> int:
    """Tokens in ``text``: ``tokenizer(text)`` / ``len(tokenizer.encode(text))``, else ~4 chars a token."""
    if tokenizer is None:
        return math.ceil(len(text) / 4)
    if hasattr(tokenizer, "encode"):
        return len(tokenizer.encode(text))
    return int(tokenizer(text))


@dataclass
class ContextPart:
    """One rendered source: its name, text and priority."""

    name: str
    text: str
    priority: int = 0


class ContextSource:
    """Something that gives text for a skill's context; ``render`` sees the task and earlier outputs."""

    name: str = "context"
    priority: int = 0

    def render(self, task: str, outputs: Mapping[str, str]) -> str:
        raise NotImplementedError


@dataclass
class StaticText(ContextSource):
    text: str
    name: str = "notes"
    priority: int = 0

    def render(self, task: str, outputs: Mapping[str, str]) -> str:
        return self.text


@dataclass
class FileSource(ContextSource):
    path: str | Path
    name: str = ""
    priority: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or Path(self.path).name

    def render(self, task: str, outputs: Mapping[str, str]) -> str:
        try:
            return Path(self.path).read_text(encoding="utf-8")
        except OSError as e:
            raise UserError(f"Context file {self.path}: {e.strerror or e}.") from None


@dataclass
class StepOutput(ContextSource):
    """The latest output of the earlier step(s) named ``step`` in this run."""

    step: str
    name: str = ""
    priority: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or f"output of {self.step}"

    def render(self, task: str, outputs: Mapping[str, str]) -> str:
        return outputs.get(self.step, "")


def chunk_text(text: str, max_chars: int = 800) -> list[str]:
    """Paragraph chunks (blank-line separated), merged up to ``max_chars``, long ones split on words."""
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    pieces: list[str] = []
    for p in paragraphs:
        while len(p) > max_chars:
            cut = p.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(p[:cut].strip())
            p = p[cut:].strip()
        if p:
            pieces.append(p)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 2 + len(piece) <= max_chars:
            chunks[-1] = f"{chunks[-1]}\n\n{piece}"
        else:
            chunks.append(piece)
    return chunks


@dataclass
class Retrieval(ContextSource):
    """Top-``k`` chunks of the documents under ``folder`` for the task (cosine over the bundled encoder).

    The index (chunks and their embeddings) is built on first use and kept; call
    :meth:`refresh` after the documents change.
    """

    folder: str | Path
    k: int = 3
    chunk_chars: int = 800
    patterns: Sequence[str] = ("*.md", "*.txt", "*.rst")
    encoder: str | None = None
    min_score: float = 0.0
    name: str = ""
    priority: int = 0
    _chunks: list[tuple[str, str]] = field(default_factory=list, repr=False)
    _vectors: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or f"documents from {Path(self.folder).name}"

    def refresh(self) -> None:
        self._vectors = None
        self._chunks = []

    def _index(self) -> None:
        from smallfleet.encoders import embed

        root = Path(self.folder)
        if not root.is_dir():
            raise UserError(f"Retrieval folder {root} does not exist or is not a folder.")
        files = sorted({f for pattern in self.patterns for f in root.rglob(pattern) if f.is_file()})
        self._chunks = [
            (str(f.relative_to(root)), chunk)
            for f in files
            for chunk in chunk_text(f.read_text(encoding="utf-8", errors="replace"), self.chunk_chars)
        ]
        self._vectors = embed([c for _, c in self._chunks], self.encoder)

    def search(self, query: str) -> list[tuple[float, str, str]]:
        """(cosine, file, chunk) of the best ``k`` chunks for ``query``."""
        if self._vectors is None:
            self._index()
        if not self._chunks:
            return []
        from smallfleet.encoders import embed

        assert self._vectors is not None
        scores = self._vectors @ embed([query], self.encoder)[0]
        best = scores.argsort()[::-1][: self.k]
        return [(float(scores[i]), *self._chunks[i]) for i in best if float(scores[i]) >= self.min_score]

    def render(self, task: str, outputs: Mapping[str, str]) -> str:
        return "\n\n".join(f"[{file}]\n{chunk}" for _, file, chunk in self.search(task))


def build_context(
    sources: Sequence[ContextSource],
    task: str,
    outputs: Mapping[str, str] | None = None,
    *,
    max_tokens: int | None = None,
    tokenizer: TokenCounter | Any | None = None,
) -> list[ContextPart]:
    """Render ``sources`` for ``task`` and trim to ``max_tokens``, lowest priority (then latest) first."""
    parts = [ContextPart(s.name, s.render(task, outputs or {}), s.priority) for s in sources]
    parts = [p for p in parts if p.text.strip()]
    if max_tokens is None:
        return parts
    sizes = [count_tokens(p.text, tokenizer) for p in parts]
    over = sum(sizes) - max_tokens
    # The order in which parts give way: lowest priority first; among equals, the later source.
    for i in sorted(range(len(parts)), key=lambda j: (parts[j].priority, -j)):
        if over <= 0:
            break
        keep = sizes[i] - over
        if keep <= 0:
            parts[i].text, over = "", over - sizes[i]
            continue
        parts[i].text = _cut(parts[i].text, keep, tokenizer)
        over -= sizes[i] - count_tokens(parts[i].text, tokenizer)
    return [p for p in parts if p.text]


def _cut(text: str, tokens: int, tokenizer: TokenCounter | Any | None) -> str:
    """The longest prefix of ``text`` (plus a marker) within ``tokens``."""
    marker = " …[trimmed]"
    lo, hi = 0, len(text)
    while lo < hi:  # binary search on the prefix length: works with any token counter
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:mid] + marker, tokenizer) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + marker if lo else ""


def render_parts(parts: Sequence[ContextPart]) -> str:
    """The parts as one text, each under a ``## name`` heading."""
    return "\n\n".join(f"## {p.name}\n{p.text}" for p in parts)
