"""Cluster (S3): find the recurring task types in recorded traffic, and recognise them online.

A request is represented by what identifies its task, in three parts (:class:`Signature`):

``system``     the system (and developer) prompt, digits masked (dates, ids): calls from the
               same agent step share it, different steps differ;
``structure``  the tools offered (names and parameters) and the response format;
``dialogue``   the user's words (the messages but the system prompt).

Each part is embedded with the bundled encoder (system prompts and structures are few and
cached, so a batch costs about one embedding per request) and the parts are concatenated
with weights (default system 1.5, structure 1.0, dialogue 0.7), so that the step dominates
when there is one and the user's words decide when there is not.

:func:`cluster_records` first groups the calls by **agent step**: calls with the same system
prompt (up to its variables: digits, and a few words that change from call to call such as
a date), the same tools and the same response format are one task type, however much the
users' words vary, when the step's answers have one shape (labels, JSON objects, tool calls,
or tool calls and the text replies of a step that sometimes asks first) and it has at least
``min_cluster_size`` calls. What carries no such identity (no system prompt, tools or
format), a step too small, and steps whose answers are free text are clustered by content,
without a preset number of clusters: HDBSCAN (scikit-learn) on up to ``max_fit`` calls,
agglomerative clustering with a distance threshold below ``small_n`` calls; the other calls
are assigned by the :class:`ClusterMatcher`. Noise points keep the label -1 and stay on the
large model.

:class:`ClusterMatcher` recognises a new request's cluster: the most similar centroid whose
calibrated threshold it reaches, whose tool set and response format the cluster has seen.
It serialises to JSON (``to_dict``) or a folder (``save``: JSON + ``centroids.npy``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smallfleet.encoders import embed_cached, embed_one
from smallfleet.flywheel.curate import dialogue_text
from smallfleet.specialists.catalog import CALL_SHARE

if TYPE_CHECKING:
    import numpy as np

    from smallfleet.store.records import TraceRecord
    from smallfleet.types import ChatRequest

log = logging.getLogger("smallfleet.flywheel.cluster")

__all__ = [
    "DEFAULT_WEIGHTS",
    "ClusterInfo",
    "ClusterMatcher",
    "Clustering",
    "Signature",
    "SignatureEncoder",
    "cluster_records",
    "output_shape",
    "signature",
    "step_key",
    "task_signature",
]

DEFAULT_WEIGHTS: dict[str, float] = {"system": 1.5, "structure": 1.0, "dialogue": 0.7}
_DIGITS = re.compile(r"\d+")
_WS = re.compile(r"\s+")


# ---------------------------------------------------------------- the signature


@dataclass(frozen=True)
class Signature:
    """What identifies a request's task."""

    system: str
    structure: str
    dialogue: str
    tools: tuple[str, ...]
    format: str

    @property
    def text(self) -> str:
        parts = [f"system: {self.system}" if self.system else "", self.structure, f"user: {self.dialogue}"]
        return "\n".join(p for p in parts if p)


def _content(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(p.get("text") or "") for p in value if isinstance(p, dict))
    return "" if value is None else str(value)


def _as_dict(request: Mapping[str, Any] | ChatRequest) -> Mapping[str, Any]:
    return request if isinstance(request, Mapping) else request.to_dict()


@functools.lru_cache(maxsize=1024)
def _mask(system: str) -> str:
    """A system prompt with digits masked and whitespace collapsed (cached: an agent has few)."""
    return _WS.sub(" ", _DIGITS.sub("0", system)).strip()[:2000]


def signature(request: Mapping[str, Any] | ChatRequest) -> Signature:
    """The :class:`Signature` of an OpenAI request (a dict or a :class:`ChatRequest`)."""
    req = _as_dict(request)
    msgs = req.get("messages") or []
    system = _mask(
        " ".join(_content(m.get("content")) for m in msgs if m.get("role") in ("system", "developer"))
    )
    tools = []
    described = []
    for t in req.get("tools") or []:
        fn = t.get("function") or {}
        name = str(fn.get("name"))
        params = sorted(((fn.get("parameters") or {}).get("properties") or {}).keys())
        tools.append(name)
        described.append(f"{name}({', '.join(params)})")
    fmt = req.get("response_format") or {}
    fmt_type = str(fmt.get("type") or "text") if isinstance(fmt, Mapping) else "text"
    fmt_desc = fmt_type
    if fmt_type == "json_schema":
        spec = fmt.get("json_schema") or {}
        keys = sorted(((spec.get("schema") or {}).get("properties") or {}).keys())
        fmt_type = f"json_schema:{spec.get('name', '')}"
        fmt_desc = f"json {spec.get('name', '')} ({', '.join(keys)})"
    structure = f"tools: {'; '.join(sorted(described)) or 'none'} | answer format: {fmt_desc}"
    return Signature(system, structure, dialogue_text(dict(req)), tuple(sorted(tools)), fmt_type)


def task_signature(request: Mapping[str, Any] | ChatRequest) -> str:
    """A readable text of what identifies the request's task: system prompt, tools, format, user's words."""
    return signature(request).text


class SignatureEncoder:
    """Embeds signatures: the weighted, L2-normalised concatenation of the three parts' embeddings.

    System prompts and structures are embedded once per distinct text; dialogues go through
    the shared embedding cache in batches (:meth:`encode`), or one at a time
    (:meth:`encode_one`, the router's path, a few ms on a CPU; the specialist the request is
    routed to then finds the user's message already embedded).
    """

    def __init__(self, encoder: str | None = None, weights: Mapping[str, float] | None = None) -> None:
        self.encoder = encoder
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self._parts: dict[str, Any] = {}

    def _fixed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t and t not in self._parts]
        if todo:
            for t, v in zip(todo, embed_cached(todo, self.encoder), strict=True):
                self._parts[t] = v
            if len(self._parts) > 4096:  # bounded: prompts with ids in them must not grow it forever
                for k in list(self._parts)[: len(self._parts) - 4096]:
                    del self._parts[k]
        dim = self.dim
        return np.stack([self._parts[t] if t else np.zeros(dim, dtype=np.float32) for t in texts])

    @functools.cached_property
    def dim(self) -> int:
        from smallfleet.encoders import load_encoder

        model = load_encoder(self.encoder)
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def _combine(self, system: np.ndarray, structure: np.ndarray, dialogue: np.ndarray) -> np.ndarray:
        import numpy as np

        w = self.weights
        x = np.concatenate(
            [system * w["system"], structure * w["structure"], dialogue * w["dialogue"]], axis=-1
        )
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        return (x / np.maximum(norm, 1e-12)).astype(np.float32)

    def encode(
        self,
        sigs: Sequence[Signature],
        batch_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
        chunk: int = 8192,
    ) -> np.ndarray:
        """Signature vectors, shape ``(len(sigs), 3 * dim)``, ``chunk`` rows at a time (bounded memory)."""
        import numpy as np

        out = np.zeros((len(sigs), 3 * self.dim), dtype=np.float32)
        for start in range(0, len(sigs), chunk):
            part = sigs[start : start + chunk]
            dialogue = embed_cached([s.dialogue for s in part], self.encoder, batch_size, on_batch)
            system = self._fixed([s.system for s in part])
            structure = self._fixed([s.structure for s in part])
            out[start : start + len(part)] = self._combine(system, structure, dialogue)
        return out

    def encode_one(self, sig: Signature) -> np.ndarray:
        """One signature's vector, bypassing batching overhead (for the online matcher)."""
        system, structure = self._fixed([sig.system, sig.structure])
        return self._combine(system, structure, embed_one(sig.dialogue, self.encoder))


# ---------------------------------------------------------------- output shape


def output_shape(
    responses: Sequence[Mapping[str, Any] | None], max_labels: int | None = None
) -> dict[str, Any]:
    """The shape of a cluster's answers: ``tool_call`` (tools called), ``json`` (keys), ``label`` (the
    label set) or ``text``.

    * ``tool_call`` when at least 10% of the answers call a tool: the others are the text
      replies of a step that sometimes needs more from the user first (``replies`` gives
      their share), and the specialist learns when to call from both;
    * ``label`` when the answers are short one-line strings that recur (on average each
      seen at least twice): as many labels as the traffic has, unless ``max_labels`` caps it;
    * ``json`` when nine in ten answers are JSON objects.

    A local minimal profile; the catalog's ``profile_task`` gives the full one (schema, arguments).
    """
    texts: list[str] = []
    tools: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    n_json = n_calls = 0
    for resp in responses:
        choices = (resp or {}).get("choices") or [{}]
        msg = choices[0].get("message") or {}
        calls = msg.get("tool_calls") or []
        for c in calls:
            tools[str((c.get("function") or {}).get("name"))] += 1
        if calls:
            n_calls += 1
            continue
        text = _content(msg.get("content")).strip()
        texts.append(text)
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if isinstance(obj, dict):
                n_json += 1
                keys.update(obj.keys())
    n = len(responses) or 1
    if tools and n_calls >= CALL_SHARE * n:
        shape: dict[str, Any] = {"kind": "tool_call", "tools": [t for t, _ in tools.most_common()]}
        if texts:
            shape["replies"] = round(len(texts) / n, 4)
        return shape
    if texts and n_json >= len(texts) * 0.9:
        return {"kind": "json", "keys": sorted(keys)}
    distinct = Counter(texts)
    short = all(t and len(t) <= 80 and "\n" not in t for t in distinct)
    capped = max_labels is not None and len(distinct) > max_labels
    if texts and short and not capped and (len(distinct) * 2 <= len(texts) or len(texts) < 4):
        return {"kind": "label", "labels": sorted(distinct)}
    return {"kind": "text"}


# ---------------------------------------------------------------- agent steps


def step_key(request: Mapping[str, Any] | ChatRequest) -> str:
    """What an agent step sends every time: the router's static key (system prompt with digits
    masked, tool names, response format)."""
    from smallfleet.routing.matcher import static_key_of_dict

    return static_key_of_dict(dict(_as_dict(request)))


def _words(text: str) -> list[str]:
    return _WS.split(text.strip())


def _same_template(a: list[str], b: list[str]) -> bool:
    """Whether two system prompts are one template with different variables: equal but for a
    few short runs of words (a date, a name), at least 90% of the words in common."""
    import difflib

    if abs(len(a) - len(b)) > max(3, len(a) // 10):
        return False
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    changed = [op for op in sm.get_opcodes() if op[0] != "equal"]
    if any(max(i2 - i1, j2 - j1) > 3 for _, i1, i2, j1, j2 in changed):
        return False
    same = sum(i2 - i1 for tag, i1, i2, _, _ in sm.get_opcodes() if tag == "equal")
    return same >= 0.9 * max(len(a), len(b))


def _step_groups(sigs: Sequence[Signature], keys: Sequence[str], max_templates: int = 2000) -> list[int]:
    """Each call's step: calls whose static keys differ only in the system prompt's variables
    (same tools and format, prompts of one template) share a step. -1: no step identity."""
    step_of_key: dict[str, int] = {}
    templates: dict[tuple[tuple[str, ...], str, str], list[tuple[list[str], int]]] = {}
    out = []
    for sig, key in zip(sigs, keys, strict=True):
        if not (sig.system or sig.tools or sig.format.startswith("json")):
            out.append(-1)
            continue
        step = step_of_key.get(key)
        if step is None:
            words = _words(sig.system)
            same = templates.setdefault((sig.tools, sig.format, sig.structure), [])
            step = next((k for w, k in same if _same_template(w, words)), None)
            if step is None:
                step = len(step_of_key)
                if len(same) < max_templates:
                    same.append((words, step))
            step_of_key[key] = step
        out.append(step)
    return out


# ---------------------------------------------------------------- the matcher


@dataclass
class _Entry:
    label: Any
    name: str
    threshold: float
    tool_sets: list[list[str]]
    formats: list[str]


class ClusterMatcher:
    """Given a new request, its cluster (the label it was given) or None.

    A request matches cluster c when its signature vector's cosine similarity to c's
    centroid reaches c's threshold (calibrated on c's members, raised above the calls of
    other clusters when they would pass), and its exact tool set and response format are
    among those c's members had. Of several matches, the most similar centroid wins.
    """

    def __init__(
        self,
        entries: Sequence[_Entry],
        centroids: np.ndarray,
        encoder: str | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        import numpy as np

        self.entries = list(entries)
        c = np.asarray(centroids, dtype=np.float32)
        self.centroids = (
            c.reshape(len(self.entries), -1) if self.entries else c.reshape(0, c.shape[-1] if c.ndim else 0)
        )
        self.thresholds = np.array([e.threshold for e in self.entries], dtype=np.float32)
        self._checks = [({tuple(sorted(s)) for s in e.tool_sets}, set(e.formats)) for e in self.entries]
        self.encoder_obj = SignatureEncoder(encoder, weights)

    @property
    def labels(self) -> list[Any]:
        return [e.label for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def _allowed(self, sig: Signature) -> list[bool]:
        return [sig.tools in tools and sig.format in formats for tools, formats in self._checks]

    def scores(self, request: Mapping[str, Any] | ChatRequest) -> np.ndarray:
        """Cosine similarity of the request to every centroid."""
        return self.centroids @ self.encoder_obj.encode_one(signature(request))

    def match(self, request: Mapping[str, Any] | ChatRequest) -> Any:
        """The label of the request's cluster, or None when no cluster recognises it."""
        if not self.entries:
            return None
        sig = signature(request)
        allowed = self._allowed(sig)
        if not any(allowed):  # a tool set or format no cluster has seen: no need to embed
            return None
        sims = self.centroids @ self.encoder_obj.encode_one(sig)
        best, best_sim = None, -2.0
        for i, ok in enumerate(allowed):
            if ok and sims[i] >= self.thresholds[i] and sims[i] > best_sim:
                best, best_sim = self.entries[i].label, float(sims[i])
        return best

    def match_batch(self, requests: Sequence[Mapping[str, Any] | ChatRequest]) -> list[Any]:
        """:meth:`match` for many requests, embedded in batches (offline use: evaluation, replay)."""
        sigs = [signature(r) for r in requests]
        if not self.entries or not sigs:
            return [None] * len(sigs)
        return self.match_many(self.encoder_obj.encode(sigs), sigs)

    def match_dict(self, request: Mapping[str, Any]) -> Any:
        """:meth:`match` for a request dict (as stored in a trace)."""
        return self.match(request)

    def match_many(self, vectors: np.ndarray, sigs: Sequence[Signature]) -> list[Any]:
        """Labels (or None) for already-encoded signatures, in one matrix product."""
        import numpy as np

        if not self.entries or len(sigs) == 0:
            return [None] * len(sigs)
        sims = vectors @ self.centroids.T
        allowed = np.array([self._allowed(s) for s in sigs], dtype=bool)
        sims = np.where(allowed & (sims >= self.thresholds[None, :]), sims, -np.inf)
        best = sims.argmax(axis=1)
        return [self.entries[j].label if np.isfinite(sims[i, j]) else None for i, j in enumerate(best)]

    def subset(self, labels: Sequence[Any]) -> ClusterMatcher:
        """A matcher that only knows the given clusters (thresholds unchanged)."""
        keep = [i for i, e in enumerate(self.entries) if e.label in set(labels)]
        return ClusterMatcher(
            [self.entries[i] for i in keep],
            self.centroids[keep],
            self.encoder_obj.encoder,
            self.encoder_obj.weights,
        )

    # ------------------------------------------------------------ serialising

    def _meta(self) -> dict[str, Any]:
        return {
            "version": 1,
            "encoder": self.encoder_obj.encoder,
            "weights": self.encoder_obj.weights,
            "dim": int(self.centroids.shape[1]) if len(self.entries) else 0,
            "clusters": [asdict(e) for e in self.entries],
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, centroids included (as lists of floats)."""
        meta = self._meta()
        for c, row in zip(meta["clusters"], self.centroids.tolist(), strict=True):
            c["centroid"] = [round(x, 6) for x in row]
        return meta

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], centroids: np.ndarray | None = None) -> ClusterMatcher:
        """From :meth:`to_dict` (or the JSON of :meth:`save` plus its centroids)."""
        import numpy as np

        if data.get("version") != 1:
            raise ValueError(f"unknown cluster matcher version {data.get('version')!r}")
        clusters = data.get("clusters") or []
        entries = [
            _Entry(**{k: c[k] for k in ("label", "name", "threshold", "tool_sets", "formats")})
            for c in clusters
        ]
        if centroids is None:
            centroids = np.array([c["centroid"] for c in clusters], dtype=np.float32)
        return cls(
            entries, np.asarray(centroids).reshape(len(entries), -1), data.get("encoder"), data.get("weights")
        )

    @classmethod
    def combine(cls, items: Sequence[tuple[Any, Mapping[str, Any]]]) -> ClusterMatcher:
        """One matcher from several ``to_dict`` outputs (e.g. one per route), each label replaced by its key.

        They must use the same encoder and weights (they do when one flywheel made them).
        """
        import numpy as np

        parts = [(key, cls.from_dict(d)) for key, d in items]
        if not parts:
            return cls([], np.zeros((0, 0), dtype=np.float32))
        first = parts[0][1].encoder_obj
        entries, rows = [], []
        for key, m in parts:
            if (m.encoder_obj.encoder, m.encoder_obj.weights) != (first.encoder, first.weights):
                raise ValueError(
                    "cluster matchers made with different encoders or weights cannot be combined"
                )
            for e, row in zip(m.entries, m.centroids, strict=True):
                entries.append(_Entry(key, e.name, e.threshold, e.tool_sets, e.formats))
                rows.append(row)
        return cls(entries, np.stack(rows), first.encoder, first.weights)

    def save(self, directory: str | Path) -> Path:
        """Write ``matcher.json`` and ``centroids.npy`` into ``directory``."""
        import numpy as np

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "matcher.json").write_text(json.dumps(self._meta(), indent=2))
        np.save(d / "centroids.npy", self.centroids)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ClusterMatcher:
        import numpy as np

        d = Path(directory)
        return cls.from_dict(json.loads((d / "matcher.json").read_text()), np.load(d / "centroids.npy"))


def _calibrate(
    x: np.ndarray, labels: np.ndarray, quantile: float, margin: float
) -> tuple[np.ndarray, list[float]]:
    """Centroids and thresholds: a low quantile of members' similarity, raised above non-members'."""
    import numpy as np

    ks = sorted(int(k) for k in set(labels.tolist()) if k >= 0)
    centroids = np.stack([x[labels == k].mean(axis=0) for k in ks]) if ks else np.zeros((0, x.shape[1]))
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    sims = x @ centroids.T
    thresholds = []
    for j, k in enumerate(ks):
        member = sims[labels == k, j]
        t = float(np.quantile(member, quantile)) - margin
        others = sims[labels != k, j]
        if others.size and others.max() >= t:
            t = min(float(others.max()) + 1e-3, float(np.quantile(member, 0.5)))
        thresholds.append(t)
    return centroids.astype(np.float32), thresholds


# ---------------------------------------------------------------- clustering


@dataclass
class ClusterInfo:
    """One task type found in the traffic."""

    label: int
    name: str
    size: int
    share: float
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    share_cost: float | None
    latency_p50_ms: float | None
    tools: list[str]
    formats: list[str]
    shape: dict[str, Any]
    keywords: list[str]
    threshold: float
    trace_ids: list[str] = field(default_factory=list, repr=False)

    def to_dict(self, with_ids: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_ids:
            d.pop("trace_ids")
        return d


@dataclass
class Clustering:
    """The result: one label per record (-1 = noise), the clusters (indexed by label), the matcher."""

    labels: list[int]
    clusters: list[ClusterInfo]
    matcher: ClusterMatcher
    method: str
    noise: int = 0

    def matcher_for(self, label: int) -> ClusterMatcher:
        """A matcher that recognises only cluster ``label`` (what one route stores)."""
        return self.matcher.subset([label])

    def summary(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.clusters]


def _fit_labels(
    x: np.ndarray, min_cluster_size: int, small_n: int, distance_threshold: float
) -> tuple[Any, str]:
    import numpy as np

    n = len(x)
    if n < max(2, min_cluster_size):
        return np.full(n, -1), "none"
    if n < small_n:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance_threshold
        ).fit_predict(x)
        method = "agglomerative"
    else:
        from sklearn.cluster import HDBSCAN
        from sklearn.decomposition import PCA

        # HDBSCAN's trees work in few dimensions; the task structure survives a 32-d projection.
        z = (
            PCA(n_components=min(32, n - 1, x.shape[1]), random_state=0).fit_transform(x)
            if x.shape[1] > 32
            else x
        )
        labels = _hdbscan(HDBSCAN, z, min_cluster_size)
        method = "hdbscan"
    sizes = Counter(labels.tolist())
    return np.array([k if k >= 0 and sizes[k] >= min_cluster_size else -1 for k in labels.tolist()]), method


def _hdbscan(hdbscan: Any, z: Any, min_cluster_size: int) -> Any:
    """HDBSCAN's labels, merging clusters closer than 0.15; without that merge where it crashes.

    scikit-learn 1.9's epsilon search raises ``TypeError`` under numpy >= 2.4 when a leaf of
    the tree lies below the epsilon (it depends on the data): cluster without it then.
    """

    def run(epsilon: float) -> Any:
        return hdbscan(
            min_cluster_size=min_cluster_size,
            min_samples=min(min_cluster_size, 10),
            cluster_selection_epsilon=epsilon,
            copy=True,
        ).fit_predict(z)

    try:
        return run(0.15)
    except TypeError as e:
        log.warning("HDBSCAN's epsilon merge failed (%s); clustering without it.", e)
        return run(0.0)


def _p50(values: Sequence[float | None]) -> float | None:
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _keywords(docs: list[str], top: int = 4) -> list[list[str]]:
    """The most distinctive words of each document (tf-idf against the others)."""
    if not docs:
        return []
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        tfidf = TfidfVectorizer(
            stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z_]{2,}\b", sublinear_tf=True
        )
        m = tfidf.fit_transform(docs)
    except ValueError:  # only stop words
        return [[] for _ in docs]
    vocab = tfidf.get_feature_names_out()
    out = []
    for i in range(m.shape[0]):
        row = m.getrow(i)
        order = row.indices[(-row.data).argsort()][:top]
        out.append([str(vocab[j]) for j in order])
    return out


def _name(shape: dict[str, Any], formats: list[str], words: list[str]) -> str:
    if shape["kind"] == "tool_call":
        head = shape["tools"][0]
    elif shape["kind"] == "json":
        head = next(
            (f.split(":", 1)[1] for f in formats if f.startswith("json_schema:") and f != "json_schema:"),
            "json",
        )
    else:
        head = shape["kind"]
    words = [w for w in words if w != head][:3]
    return f"{head}: {', '.join(words)}" if words else head


def cluster_records(
    records: Sequence[TraceRecord],
    *,
    encoder: str | None = None,
    weights: Mapping[str, float] | None = None,
    min_cluster_size: int | None = None,
    max_fit: int = 5000,
    small_n: int = 300,
    distance_threshold: float = 0.15,
    quantile: float = 0.01,
    margin: float = 0.02,
    seed: int = 0,
    by_step: bool = True,
    step_sample: int = 64,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Clustering:
    """Find the task types in ``records`` and describe each; see the module docstring.

    ``min_cluster_size`` defaults to 1% of the calls (at least 5, at most 50). With
    ``by_step`` (the default) agent steps are task types first; the rest is clustered by
    content. Above ``max_fit`` calls, a seeded sample is clustered and the rest assigned by
    the matcher. A step's centroid is calibrated on ``step_sample`` of its calls (its members
    are known; the centroid serves requests whose static key is new, e.g. a new date in the
    prompt). Labels are numbered by size, largest first.
    """
    from smallfleet._extras import require

    require("sklearn", "local")  # clustering needs the `local` extra: say so before any work
    np = require("numpy", "local")

    report = on_progress or (lambda stage, done, total: None)
    n = len(records)
    mcs = min_cluster_size or max(5, min(50, round(0.01 * n)))
    rng = np.random.default_rng(seed)
    sigs = [signature(r.request or {}) for r in records]

    # 1. agent steps with one answer shape are task types as they stand
    step_members: list[list[int]] = []
    if by_step:
        steps = _step_groups(sigs, [step_key(r.request or {}) for r in records])
        by: dict[int, list[int]] = {}
        for i, st in enumerate(steps):
            if st >= 0:
                by.setdefault(st, []).append(i)
        step_members = [
            idx
            for idx in by.values()
            if len(idx) >= mcs and output_shape([records[i].response for i in idx])["kind"] != "text"
        ]
    in_step = np.zeros(n, dtype=bool)
    for idx in step_members:
        in_step[idx] = True
    pool = np.flatnonzero(~in_step)

    # 2. embed what needs it: a sample of each step, and the rest (clustered by content)
    samples = [
        np.sort(rng.choice(idx, size=step_sample, replace=False)) if len(idx) > step_sample else np.array(idx)
        for idx in step_members
    ]
    pool_fit = pool
    if pool.size > max_fit:
        pool_fit = np.sort(rng.choice(pool, size=max_fit, replace=False))
    need = np.unique(np.concatenate([*samples, pool])).astype(int) if n else np.zeros(0, dtype=int)
    enc = SignatureEncoder(encoder, weights)
    done = 0

    def progress(k: int) -> None:
        nonlocal done
        done += k
        report("embed", done, len(need))

    x_need = enc.encode([sigs[i] for i in need.tolist()], on_batch=progress)
    row = {int(i): j for j, i in enumerate(need.tolist())}
    report("embed", len(need), len(need))

    def rows(idx: Any) -> Any:
        return x_need[[row[int(i)] for i in idx]] if len(idx) else np.zeros((0, x_need.shape[1]), np.float32)

    # 3. cluster the rest by content; steps first, then content clusters, numbered by size
    content_labels, method = _fit_labels(rows(pool_fit), mcs, small_n, distance_threshold)
    method = method if pool.size else "steps"
    if step_members:
        method = f"steps+{method}" if pool.size else "steps"
    report("cluster", 1, 1)
    n_steps = len(step_members)
    fit = np.concatenate([*samples, pool_fit]).astype(int) if n else np.zeros(0, dtype=int)
    raw = (
        np.concatenate(
            [
                *(np.full(len(smp), k) for k, smp in enumerate(samples)),
                np.where(content_labels >= 0, content_labels + n_steps, -1),
            ]
        ).astype(int)
        if n
        else np.zeros(0, dtype=int)
    )
    sizes = Counter({k: len(idx) for k, idx in enumerate(step_members)})
    sizes.update(k for k in raw[len(fit) - len(pool_fit) :].tolist() if k >= 0)
    renumber = {k: i for i, (k, _) in enumerate(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])))}
    fit_labels = np.array([renumber.get(k, -1) for k in raw.tolist()], dtype=int)
    centroids, thresholds = _calibrate(rows(fit), fit_labels, quantile, margin)

    labels = np.full(n, -1)
    for k, idx in enumerate(step_members):
        labels[idx] = renumber[k]
    labels[pool_fit] = fit_labels[len(fit) - len(pool_fit) :]
    entries = []
    for k in range(len(renumber)):
        members = [sigs[i] for i in np.flatnonzero(labels == k).tolist()]
        tool_sets = sorted({m.tools for m in members})
        entries.append(
            _Entry(k, "", thresholds[k], [list(t) for t in tool_sets], sorted({m.format for m in members}))
        )
    matcher = ClusterMatcher(entries, centroids, encoder, enc.weights)

    rest = np.setdiff1d(pool, pool_fit)
    if rest.size:
        assigned = matcher.match_many(rows(rest), [sigs[i] for i in rest.tolist()])
        labels[rest] = [-1 if a is None else a for a in assigned]

    clusters = _describe(records, sigs, labels, entries)
    for e, c in zip(entries, clusters, strict=True):
        e.name = c.name
    return Clustering(labels.tolist(), clusters, matcher, method, noise=int((labels < 0).sum()))


def _describe(
    records: Sequence[TraceRecord], sigs: Sequence[Signature], labels: np.ndarray, entries: Sequence[_Entry]
) -> list[ClusterInfo]:
    n = max(len(records), 1)
    total_cost = sum(r.cost_usd or 0.0 for r in records)
    members: dict[int, list[int]] = {}
    for i, k in enumerate(labels.tolist()):
        if k >= 0:
            members.setdefault(k, []).append(i)
    system_docs, dialogue_docs = [], []
    for e in entries:
        idx = members.get(e.label, [])
        system_docs.append(" ".join(dict.fromkeys(sigs[i].system for i in idx[:2000])))
        dialogue_docs.append(" ".join(sigs[i].dialogue for i in idx[:300]))
    # the step's own words first (what its system prompt says), the users' words when there is none
    words = [s or d for s, d in zip(_keywords(system_docs), _keywords(dialogue_docs), strict=True)]
    out, names = [], set()
    for e, kw in zip(entries, words, strict=True):
        idx = members.get(e.label, [])
        recs = [records[i] for i in idx]
        shape = output_shape([r.response for r in recs])
        name = _name(shape, e.formats, kw)
        base, j = name, 2
        while name in names:
            name, j = f"{base} ({j})", j + 1
        names.add(name)
        costs = [r.cost_usd for r in recs if r.cost_usd is not None]
        cost = sum(costs) if costs else None
        out.append(
            ClusterInfo(
                label=e.label,
                name=name,
                size=len(recs),
                share=len(recs) / n,
                input_tokens=sum(r.input_tokens for r in recs),
                output_tokens=sum(r.output_tokens for r in recs),
                cost_usd=cost,
                share_cost=(cost / total_cost) if cost is not None and total_cost else None,
                latency_p50_ms=_p50([r.latency_ms for r in recs]),
                tools=sorted({t for s in e.tool_sets for t in s}),
                formats=e.formats,
                shape=shape,
                keywords=kw,
                threshold=e.threshold,
                trace_ids=[r.id for r in recs],
            )
        )
    return out
