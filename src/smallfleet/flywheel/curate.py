"""Curate (S2): from recorded traffic to a clean, deduplicated train/validation/test split.

What is dropped, in this order, each counted under its reason:

``error``              the call failed (status not ok, an HTTP error, an error message)
``no_response``        nothing was recorded as the answer
``invalid_response``   the recorded answer is not an OpenAI chat completion
``truncated``          ``finish_reason == "length"``
``refusal``            a ``refusal`` field, ``finish_reason == "content_filter"``, or a short
                       refusal-like text ("I'm sorry, but I can't help with that.")
``empty``              neither text nor tool calls
``negative_feedback``  a feedback score below ``negative_below`` (default 0: thumbs-down -1, thumbs-up +1)
``duplicate``          the same task text and answer, after normalising case and whitespace
``near_duplicate``     the request's dialogue (the messages but the system prompt) has cosine
                       similarity >= ``near_duplicate_threshold`` to an earlier kept call of the
                       same task block **with the same answer** (same step: system prompt, tools
                       and format; and the same normalised answer)

Near-duplicates are judged on the words, not the meaning: each dialogue is a vector of the
counts of its character 3-grams (within word boundaries, lowercased, digits masked,
punctuation ignored), so "I lost my card!!" and "i lost my card" are one call, while two
customers asking the same thing in their own words are two examples worth keeping. No
corpus statistic (no IDF) enters, so the similarity of two calls does not depend on the rest
of the traffic, and no neural encoder runs here: curation costs well under a millisecond a
call. A call whose answer differs is never a duplicate of another, however alike the
requests: consecutive turns of one conversation look alike but want different answers.
Within a block, similarities come from sparse matrix products in chunks, so 100k traces do
not need all pairs. With ``near_duplicates="group"`` near-duplicates are kept instead, and
each group goes whole into the split of its earliest member.

The split is by time: the oldest ``split[0]`` of the calls train, then validation, and the
newest calls are the test set, as the newest traffic is what a specialist will meet.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from smallfleet.store.records import TraceRecord

__all__ = [
    "DROP_REASONS",
    "Curated",
    "curate",
    "dialogue_text",
    "drop_reason",
    "is_refusal",
    "near_duplicate_vectors",
    "task_text",
]

DROP_REASONS = (
    "error", "no_response", "invalid_response", "truncated", "refusal", "empty",
    "negative_feedback", "duplicate", "near_duplicate",
)  # fmt: skip

_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry|unfortunately|apologies)?[,.!]?\s*(?:but\s+)?"
    r"(?:i|we)\s*(?:can ?not|can'?t|won'?t|(?:am|are|'?m|'?re) (?:unable|not able) to)\s+"
    r"(?:help|assist|comply|provide|do that|answer|fulfil|fulfill|support|process that)"
    r"|^\W*as an ai(?: language model)?,? i (?:can ?not|can'?t|don'?t)",
    re.IGNORECASE,
)
_WS = re.compile(r"\s+")
_DIGITS = re.compile(r"\d+")
_PUNCT = re.compile(r"[^\w\s]+")


def is_refusal(text: str) -> bool:
    """Whether a (short) answer reads as a refusal; long answers that merely contain "I can't" are not."""
    t = text.strip().replace("\u2019", "'")
    return len(t) <= 400 and _REFUSAL.search(t) is not None


def _message(record: TraceRecord) -> dict[str, Any] | None:
    resp = record.response
    if not isinstance(resp, dict):
        return None
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    msg = choices[0].get("message")
    return msg if isinstance(msg, dict) else None


def drop_reason(
    record: TraceRecord, feedback: Mapping[str, float] | None = None, negative_below: float = 0.0
) -> str | None:
    """Why ``record`` is not a good example of the large model's work, or None when it is."""
    if record.status != "ok" or record.http_status >= 400 or record.error:
        return "error"
    if not record.response:
        return "no_response"
    msg = _message(record)
    if msg is None:
        return "invalid_response"
    finish = record.response["choices"][0].get("finish_reason")
    if finish == "length":
        return "truncated"
    content = msg.get("content")
    text = content if isinstance(content, str) else ""
    if isinstance(content, list):
        text = "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    if finish == "content_filter" or msg.get("refusal") or (text and is_refusal(text)):
        return "refusal"
    if not text.strip() and not msg.get("tool_calls"):
        return "empty"
    if feedback is not None and record.id in feedback and feedback[record.id] < negative_below:
        return "negative_feedback"
    return None


# ---------------------------------------------------------------- texts and keys


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


def _content(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(p.get("text") or "") for p in value if isinstance(p, dict))
    return "" if value is None else str(value)


def _block_key(request: dict[str, Any], answer: str = "") -> str:
    """What must be equal for two calls to be duplicates at all: the step (the router's static key:
    system prompt with digits masked, tool names, response format) and the normalised answer."""
    from smallfleet.routing.matcher import static_key_of_dict

    return hashlib.sha1(f"{static_key_of_dict(request)}\x00{_norm(answer)}".encode()).hexdigest()


def _answer_text(msg: dict[str, Any]) -> str:
    parts = [_content(msg.get("content"))]
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        args: Any = fn.get("arguments")
        try:
            args = json.dumps(json.loads(args), sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError):
            pass
        parts.append(f"{fn.get('name')}({args})")
    return " ".join(p for p in parts if p)


def _dialogue(request: dict[str, Any]) -> str:
    """Every non-system message of the request: what the user (and earlier turns) said."""
    return dialogue_text(request, limit=1_000_000)


def task_text(record: TraceRecord) -> str:
    """The normalised text that identifies a call: its step (system, tools, format), dialogue and answer."""
    req = record.request or {}
    tools = json.dumps(req.get("tools") or [], sort_keys=True)
    fmt = json.dumps(req.get("response_format") or {}, sort_keys=True)
    system = " ".join(
        _content(m.get("content"))
        for m in req.get("messages", [])
        if m.get("role") in ("system", "developer")
    )
    return _norm(
        f"{system}\x1f{tools}\x1f{fmt}\x1f{_dialogue(req)}\x1f{_answer_text(_message(record) or {})}"
    )


def dialogue_text(request: dict[str, Any], limit: int = 1000) -> str:
    """The request without its system prompt (the user's words, and earlier turns), at most ``limit`` chars.

    Near-duplicates are judged on this, and clustering embeds the same text, so the
    embedding cache serves both.
    """
    msgs = [m for m in request.get("messages", []) if m.get("role") not in ("system", "developer")]
    if len(msgs) == 1:
        return _content(msgs[0].get("content"))[-limit:]
    return "\n".join(f"{m.get('role')}: {_content(m.get('content'))}" for m in msgs)[-limit:]


# ---------------------------------------------------------------- the result


@dataclass
class Curated:
    """The curated split, oldest first within each part, and what was dropped and why."""

    train: list[TraceRecord]
    validation: list[TraceRecord]
    test: list[TraceRecord]
    dropped: Counter[str] = field(default_factory=Counter)
    #: trace id → the id of its near-duplicate group's earliest member (``near_duplicates="group"``)
    groups: dict[str, str] = field(default_factory=dict)
    #: trace id → why it was dropped
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return len(self.train) + len(self.validation) + len(self.test)

    def split_of(self, trace_id: str) -> str | None:
        for name in ("train", "validation", "test"):
            if any(r.id == trace_id for r in getattr(self, name)):
                return name
        return None

    def summary(self) -> dict[str, Any]:
        """Counts as plain JSON: kept per split, dropped per reason."""
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
            "dropped": dict(self.dropped),
        }


# ---------------------------------------------------------------- near-duplicates


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the root is the earliest member


def near_duplicate_vectors(texts: Sequence[str]) -> Any:
    """The vectors near-duplicates are judged on: L2-normalised counts (log-scaled) of character 3-grams
    (within word boundaries, lowercased, digits masked, punctuation ignored), one sparse row per text."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    masked = [_PUNCT.sub(" ", _DIGITS.sub("0", t)) for t in texts]
    try:
        return TfidfVectorizer(
            analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True, use_idf=False
        ).fit_transform(masked)
    except ValueError:  # no 3-gram at all (every text empty or shorter than a word boundary pair)
        from scipy.sparse import csr_matrix

        return csr_matrix((len(texts), 1), dtype="float64")


def _close_pairs(x: Any, threshold: float, chunk: int) -> list[list[int]]:
    """For each row, the earlier rows at cosine similarity >= threshold (rows L2-normalised, sparse)."""
    import numpy as np

    n = x.shape[0]
    earlier: list[list[int]] = [[] for _ in range(n)]
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        sims = (x[start:stop] @ x[:stop].T).tocoo()
        hit = (sims.data >= threshold) & (sims.col < sims.row + start)
        for r, c in zip(sims.row[hit].tolist(), np.asarray(sims.col[hit]).tolist(), strict=True):
            earlier[start + r].append(c)
    return earlier


def _drop_near(x: Any, threshold: float, chunk: int) -> list[bool]:
    """Keep each row unless it is >= threshold to an earlier kept row (rows in time order)."""
    keep: list[bool] = []
    for before in _close_pairs(x, threshold, chunk):
        keep.append(not any(keep[j] for j in before))
    return keep


def _group_near(x: Any, threshold: float, chunk: int) -> list[int]:
    """Each row's group: connected components of pairs >= threshold; a group's root is its earliest row."""
    uf = _UnionFind(x.shape[0])
    for i, before in enumerate(_close_pairs(x, threshold, chunk)):
        for j in before:
            uf.union(i, j)
    return [uf.find(i) for i in range(x.shape[0])]


# ---------------------------------------------------------------- curate


def curate(
    records: Sequence[TraceRecord],
    *,
    feedback: Mapping[str, float] | None = None,
    negative_below: float = 0.0,
    near_duplicate_threshold: float = 0.95,
    near_duplicates: Literal["drop", "group"] = "drop",
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    encoder: str | None = None,
    batch_size: int = 64,
    chunk: int = 512,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Curated:
    """Keep the large model's good answers, deduplicated, split by time (test = newest).

    ``feedback`` maps trace ids to a score; below ``negative_below`` the call is
    dropped. ``on_progress(stage, done, total)`` is called as work advances (for
    progress bars). ``near_duplicate_threshold=1.0`` switches near-duplicate
    detection off. ``encoder`` and ``batch_size`` are accepted for compatibility and unused:
    near-duplicates are judged on the words (:func:`near_duplicate_vectors`).
    """
    if near_duplicates not in ("drop", "group"):
        raise ValueError(f"near_duplicates must be 'drop' or 'group', not {near_duplicates!r}")
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1) > 1e-6:
        raise ValueError(f"split must be three fractions that add up to 1, not {split!r}")
    report = on_progress or (lambda stage, done, total: None)
    dropped: Counter[str] = Counter()
    reasons: dict[str, str] = {}

    def drop(r: TraceRecord, why: str) -> None:
        dropped[why] += 1
        reasons[r.id] = why

    ordered = sorted(records, key=lambda r: (r.created_at, r.id))
    good: list[TraceRecord] = []
    seen: set[str] = set()
    for i, r in enumerate(ordered):
        why = drop_reason(r, feedback, negative_below)
        if why is None:
            digest = hashlib.sha1(task_text(r).encode()).hexdigest()
            if digest in seen:
                why = "duplicate"
            seen.add(digest)
        if why:
            drop(r, why)
        else:
            good.append(r)
        if i % 1000 == 999:
            report("filter", i + 1, len(ordered))
    report("filter", len(ordered), len(ordered))

    group_root = list(range(len(good)))
    if near_duplicate_threshold < 1.0 and good:
        from smallfleet._extras import require

        require("sklearn", "local")  # near-duplicates: scikit-learn's n-gram counts, the `local` extra
        group_root = _near_duplicates(good, near_duplicate_threshold, near_duplicates, chunk, report)
        if near_duplicates == "drop":
            kept = [r for r, g in zip(good, group_root, strict=True) if g >= 0]
            for r, g in zip(good, group_root, strict=True):
                if g < 0:
                    drop(r, "near_duplicate")
            good, group_root = kept, list(range(len(kept)))

    parts = _split_by_time(good, group_root, split)
    groups = {}
    if near_duplicates == "group":
        groups = {r.id: good[g].id for i, (r, g) in enumerate(zip(good, group_root, strict=True)) if g != i}
    return Curated(*parts, dropped=dropped, groups=groups, reasons=reasons)


def _near_duplicates(
    good: list[TraceRecord],
    threshold: float,
    mode: str,
    chunk: int,
    report: Callable[[str, int, int], None],
) -> list[int]:
    """Per record (in time order): its group root's index, or -1 when it is dropped (mode "drop")."""
    blocks: dict[str, list[int]] = {}
    for i, r in enumerate(good):
        blocks.setdefault(_block_key(r.request or {}, _answer_text(_message(r) or {})), []).append(i)
    out = list(range(len(good)))
    todo = [idx for idx in blocks.values() if len(idx) > 1]  # a call alone in its block has no twin
    x = near_duplicate_vectors([dialogue_text(good[i].request or {}) for idx in todo for i in idx])
    done = row = 0
    for idx in todo:
        sub = x[row : row + len(idx)]
        row += len(idx)
        if mode == "drop":
            for i, keep in zip(idx, _drop_near(sub, threshold, chunk), strict=True):
                out[i] = i if keep else -1
        else:
            for i, root in zip(idx, _group_near(sub, threshold, chunk), strict=True):
                out[i] = idx[root]
        done += len(idx)
        report("near_duplicates", done, len(good))
    return out


def _split_by_time(
    good: list[TraceRecord], group_root: list[int], split: tuple[float, float, float]
) -> tuple[list[TraceRecord], list[TraceRecord], list[TraceRecord]]:
    """Assign whole groups, in the order of their earliest member, to train, validation, test."""
    n = len(good)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group_root):
        members.setdefault(g, []).append(i)
    train_end, val_end = split[0] * n, (split[0] + split[1]) * n
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    placed = 0
    for root in sorted(members):  # roots are the earliest member of each group, and good is in time order
        part = 0 if placed < train_end else 1 if placed < val_end else 2
        parts[part].extend(members[root])
        placed += len(members[root])
    return tuple([good[i] for i in sorted(p)] for p in parts)  # type: ignore[return-value]
