"""Novelty: don't serve what the route has never seen.

A route's matcher recognises its *task type*; it cannot tell whether one request of that
type is like the traffic the specialist learned from. A banking question of an intent the
classifier never learned is still banking language, matched, and the classifier may well be
confident about the nearest intent it knows. The :class:`NoveltyGate` catches it: a request
the specialist would serve is escalated (reason ``novel``) when its text is unlike the
training requests that had **the answer the specialist gives**.

Fitted by the flywheel at promotion (:func:`fit_route_gate`) from the route's training
examples:

- each request's dialogue (the text the cluster matcher embeds, so the serving path finds it
  already in the shared embedding cache) embedded with the flywheel's encoder, kept in
  float16, at most :data:`MAX_ROWS` rows (stratified, so rare answers keep their rows);
- with each row, the teacher's *answer key*: the label (label tasks) or the tools called
  (tool-call tasks). For JSON and free-text tasks answers are not classes, and the gate
  compares with every row.

The score of a request answered ``y`` is ``own + (own - other)``: ``own`` the mean cosine
similarity of its ``k`` nearest training rows of answer ``y``, ``other`` the same for the
closest other answer (a request of an unseen intent tends to sit between the intents it
resembles, so the margin adds to what its distance alone says; no row of answer ``y``:
``-inf``). Without keys the score is the ``k``-nearest similarity to every row. The threshold
is the :data:`QUANTILE` low quantile of the training rows' leave-one-out scores (each row
scored against the others, with its own answer): about that share of held-in traffic is
escalated as ``novel``.

Stored as ``novelty.npz`` in the specialist's folder, with a version stamp; the route's
``metrics["novelty"]`` says it is there (routes without it are served as before).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smallfleet.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from smallfleet.specialists.base import Example
    from smallfleet.types import ChatRequest, ChatResponse

__all__ = [
    "GATE_FILE",
    "NoveltyGate",
    "answer_key",
    "fit_route_gate",
    "request_text",
]

log = logging.getLogger("smallfleet.novelty")

GATE_FILE = "novelty.npz"
#: The file layout; a gate of another version is not used (its route is served without one).
VERSION = 1
#: Training rows kept (float16, 384-d: about 4 MB at 5,000).
MAX_ROWS = 5000
#: Share of held-in (leave-one-out) traffic the threshold lets go as ``novel``.
QUANTILE = 0.05
#: Neighbours a request is compared with.
K = 5
#: Task shapes whose answers are classes (one key per distinct answer).
KEYED_SHAPES = ("label", "tool_call")


def request_text(request: ChatRequest | Mapping[str, Any]) -> str:
    """The text a request is compared on: its dialogue (the messages but the system prompt)."""
    from smallfleet.flywheel.curate import dialogue_text

    return dialogue_text(dict(request) if isinstance(request, Mapping) else request.to_dict())


def answer_key(response: ChatResponse) -> str:
    """What an answer is, as a class: the tools called (``tool:a,b``), else the normalised label
    (``{"intent": "refund"}`` is the label refund, as a classifier reads it)."""
    from smallfleet.evals.metrics import normalize_text
    from smallfleet.specialists.classifier import label_of

    msg = response.message
    if msg.tool_calls:
        return "tool:" + ",".join(sorted(c.function.name for c in msg.tool_calls))
    return normalize_text(label_of(response))


def _class_scores(
    queries: np.ndarray, rows: np.ndarray, groups: np.ndarray, k: int, self_offset: int | None = None
) -> np.ndarray:
    """Shape (queries, groups): the mean similarity of each query to its ``k`` most similar rows of
    each group (``-inf`` when it has none). ``rows``: float32, L2-normalised; ``groups``: row
    indices per group, padded with ``len(rows)``. ``self_offset``: query i is row
    ``self_offset + i``, left out (leave-one-out)."""
    import numpy as np

    out = np.empty((len(queries), len(groups)), dtype=np.float32)
    step = max(1, 2**22 // max(groups.size, 1))  # bounded memory: at most 4M similarities at once
    for start in range(0, len(queries), step):
        q = queries[start : start + step].astype(np.float32)
        sims = np.full((len(q), len(rows) + 1), -np.inf, dtype=np.float32)  # the last: padding
        sims[:, :-1] = q @ rows.T
        if self_offset is not None:
            idx = np.arange(len(q))
            sims[idx, self_offset + start + idx] = -np.inf  # not a neighbour of itself
        per_group = sims[:, groups]  # (q, groups, largest group)
        kk = min(k, groups.shape[1])
        top = -np.partition(-per_group, kk - 1, axis=2)[:, :, :kk]
        finite = np.isfinite(top)
        n = finite.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + len(q)] = np.where(n > 0, np.where(finite, top, 0.0).sum(axis=2) / n, -np.inf)
    return out


def _stratified(keys: Sequence[str], cap: int, seed: int) -> list[int]:
    """At most ``cap`` row indices, as many of each key as an even share allows."""
    import random

    if len(keys) <= cap:
        return list(range(len(keys)))
    rng = random.Random(seed)
    by_key: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_key.setdefault(k, []).append(i)
    for rows in by_key.values():
        rng.shuffle(rows)
    chosen: list[int] = []
    groups = sorted(by_key.values(), key=len)
    for j, rows in enumerate(groups):  # smallest first: each takes its share of what is left
        share = (cap - len(chosen)) // (len(groups) - j)
        chosen.extend(rows[:share])
    return sorted(chosen)


@dataclass
class NoveltyGate:
    """Training rows (embeddings and answer keys) and the score a request must reach."""

    vectors: np.ndarray  # (n, dim) float16, L2-normalised
    keys: list[str] | None  # answer key per row; None: compared with every row
    threshold: float
    encoder: str | None = None
    k: int = K
    quantile: float = QUANTILE

    def __post_init__(self) -> None:
        import numpy as np

        keys = self.keys if self.keys is not None else [""] * len(self.vectors)
        by_key: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            by_key.setdefault(key, []).append(i)
        self._index = {key: g for g, key in enumerate(by_key)}
        self._rows = self.vectors.astype(np.float32)
        widest = max((len(idx) for idx in by_key.values()), default=0)
        self._groups = np.full((len(by_key), widest), len(self.vectors), dtype=np.int64)  # padded
        for g, idx in enumerate(by_key.values()):
            self._groups[g, : len(idx)] = idx

    # ------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        keys: Sequence[str] | None = None,
        *,
        encoder: str | None = None,
        k: int = K,
        quantile: float = QUANTILE,
        max_rows: int = MAX_ROWS,
        seed: int = 0,
    ) -> NoveltyGate:
        """A gate from the training requests' texts (and answer keys, for class tasks)."""
        import numpy as np

        from smallfleet.encoders import embed_cached

        if not texts:
            raise UserError("A novelty gate needs at least one training request.")
        pairs = list(dict.fromkeys(zip(texts, keys if keys is not None else [""] * len(texts), strict=True)))
        pairs = [pairs[i] for i in _stratified([p[1] for p in pairs], max_rows, seed)]
        vectors = embed_cached([t for t, _ in pairs], encoder).astype(np.float16)
        row_keys = [key for _, key in pairs] if keys is not None else None
        gate = cls(vectors, row_keys, -np.inf, encoder, k, quantile)
        loo = gate.leave_one_out_scores()
        loo = loo[np.isfinite(loo)]
        gate.threshold = float(np.quantile(loo, quantile)) if len(loo) else -np.inf
        return gate

    def leave_one_out_scores(self) -> np.ndarray:
        """Each training row's score against the other rows, with its own answer (``-inf`` for a
        row alone with its answer): what the threshold is a quantile of."""
        import numpy as np

        keys = self.keys if self.keys is not None else [""] * len(self.vectors)
        scores = np.empty(len(self.vectors), dtype=np.float32)
        for start in range(0, len(self.vectors), 1024):
            part = self.vectors[start : start + 1024]
            table = _class_scores(part, self._rows, self._groups, self.k, self_offset=start)
            scores[start : start + len(part)] = self._combine(table, keys[start : start + len(part)])
        return scores

    # ------------------------------------------------------------ scoring

    def _combine(self, table: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        """Scores from the per-answer similarities: ``own + (own - best other)`` (keyed gates),
        else the similarity to every row."""
        import numpy as np

        if self.keys is None:
            return table[:, 0]
        own_g = np.array([self._index.get(key, -1) for key in keys])
        rows = np.arange(len(table))
        own = np.where(own_g >= 0, table[rows, np.maximum(own_g, 0)], -np.inf)  # never given: novel
        others = table.copy()
        others[rows, np.maximum(own_g, 0)] = -np.inf
        other = others.max(axis=1) if table.shape[1] > 1 else np.full(len(table), -np.inf)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(other), 2 * own - other, own).astype(np.float32)

    def score(self, text: str, key: str | None = None) -> float:
        """How like the training rows of answer ``key`` the text is (``-inf``: training never gave
        that answer); below :attr:`threshold` is novel."""
        from smallfleet.encoders import embed_one

        return self.score_vector(embed_one(text, self.encoder), key)

    def score_vector(self, vector: np.ndarray, key: str | None = None) -> float:
        """:meth:`score` of an embedded text."""
        return float(
            self._combine(_class_scores(vector[None], self._rows, self._groups, self.k), [key or ""])[0]
        )

    def scores(self, texts: Sequence[str], keys: Sequence[str | None] | None = None) -> np.ndarray:
        """:meth:`score` of many texts (embedded in batches)."""
        from smallfleet.encoders import embed_cached

        vectors = embed_cached(list(texts), self.encoder)
        table = _class_scores(vectors, self._rows, self._groups, self.k)
        return self._combine(table, [k or "" for k in keys] if keys is not None else [""] * len(texts))

    def is_novel(self, request: ChatRequest, response: ChatResponse) -> bool:
        """Whether ``request`` answered by ``response`` is unlike the route's training traffic."""
        return self.check(request, response)[0]

    def check(self, request: ChatRequest, response: ChatResponse) -> tuple[bool, float]:
        """(novel?, score) of ``request`` answered by ``response``."""
        s = self.score(request_text(request), None if self.keys is None else answer_key(response))
        return s < self.threshold, s

    # ------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        import numpy as np

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "version": VERSION,
            "threshold": self.threshold,
            "encoder": self.encoder,
            "k": self.k,
            "quantile": self.quantile,
            "keyed": self.keys is not None,
        }
        keys = np.array(self.keys if self.keys is not None else [], dtype=np.str_)
        with path.open("wb") as f:
            np.savez_compressed(f, vectors=self.vectors, keys=keys, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> NoveltyGate:
        import numpy as np

        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("version") != VERSION:
                raise UserError(
                    f"{path}: novelty gate version {meta.get('version')}, this smallfleet reads {VERSION}; "
                    "run `smallfleet flywheel run` to refit it."
                )
            vectors = data["vectors"]
            keys = [str(k) for k in data["keys"]] if meta["keyed"] else None
        return cls(
            vectors, keys, float(meta["threshold"]), meta["encoder"], int(meta["k"]), float(meta["quantile"])
        )


def fit_route_gate(
    directory: str | Path,
    train: Sequence[Example],
    validation: Sequence[Example] = (),
    shape: str = "text",
    encoder: str | None = None,
) -> dict[str, Any] | None:
    """Fit and save the gate of a route whose specialist is in ``directory``; what the route's
    ``metrics["novelty"]`` records (None when there is nothing to fit on, or fitting failed)."""
    if not train or not Path(directory).is_dir():
        return None
    keyed = shape in KEYED_SHAPES
    try:
        gate = NoveltyGate.fit(
            [request_text(ex.request) for ex in train],
            [answer_key(ex.response) for ex in train] if keyed else None,
            encoder=encoder,
        )
        gate.save(Path(directory) / GATE_FILE)
        scores = gate.scores(
            [request_text(ex.request) for ex in validation],
            [answer_key(ex.response) for ex in validation] if keyed else None,
        )
        kept = [bool(s >= gate.threshold) for s in scores]
    except Exception as e:  # the route is promoted without a gate rather than not at all
        log.warning("no novelty gate for %s: %s", directory, e)
        return None
    return {
        "file": GATE_FILE,
        "version": VERSION,
        "keyed": keyed,
        "rows": len(gate.vectors),
        "threshold": gate.threshold,
        "quantile": gate.quantile,
        # share of the validation split (teacher's answers) the gate lets through
        "validation_kept": sum(kept) / len(kept) if kept else None,
    }
