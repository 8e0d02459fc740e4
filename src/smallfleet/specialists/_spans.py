"""The encoder machinery both extractive specialists share: spans and choices on one encoder.

One pretrained sentence encoder (the bundled all-MiniLM-L6-v2 by default) reads a
pair ``query [SEP] text``, where the query describes what is wanted ("location
(string): the city and state, e.g. San Francisco, CA") and the text is the user's.
Two small heads sit on it:

* a **span head**: start and end logits over the text's tokens, plus a "no answer"
  option at the ``[CLS]`` position, trained with cross-entropy (a soft target when
  the value occurs several times or there are several values). Spans are mapped
  back to the original text with the tokenizer's offsets, so casing and
  punctuation are kept.
* a **choice head**: one score per pair; a group of pairs sharing a text (the
  tools of a request, the values of an enum, true/false) is a softmax over the
  group, trained with cross-entropy.

Because everything is conditioned on a *description*, the model carries over to
fields and tools it has never seen, as long as they are described.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallfleet._extras import require

__all__ = ["ChoiceItem", "EncoderEngine", "Span", "SpanItem", "SpanResult"]

MAX_QUERY_CHARS = 400
HEADS_FILE = "heads.safetensors"
ENGINE_FILE = "engine.json"


@dataclass
class SpanItem:
    """Training item: the spans (character offsets in ``text``) that answer ``query``; none = no answer."""

    query: str
    text: str
    spans: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ChoiceItem:
    """Training item: one of ``queries`` (or several, equally) is the right one for ``text``."""

    queries: list[str]
    text: str
    targets: list[int]


@dataclass
class Span:
    start: int
    end: int
    text: str
    prob: float


@dataclass
class SpanResult:
    """What the span head found for one (query, text): spans above the no-answer, best first."""

    spans: list[Span]
    null_prob: float
    best: Span | None  # the best span even when "no answer" won (for required values)
    top: list[Span] = field(default_factory=list)  # the few best spans, answered or not

    @property
    def answered(self) -> bool:
        return bool(self.spans)


def _query(q: str) -> str:
    return q if len(q) <= MAX_QUERY_CHARS else q[: MAX_QUERY_CHARS - 1] + "…"


class EncoderEngine:
    """An encoder with a span head and a choice head; fit on items, then extract and choose."""

    def __init__(
        self,
        base: str | None = None,
        *,
        max_length: int = 256,
        train_layers: int | None = None,
        threads: int | None = None,
        seed: int = 0,
        _path: str | None = None,
    ) -> None:
        from smallfleet.encoders import default_encoder

        torch = require("torch", "local")
        transformers = require("transformers", "local")
        if threads:
            torch.set_num_threads(threads)
        self.base = base or default_encoder()
        self.max_length = max_length
        self.train_layers = train_layers
        path = _path or self.base
        transformers.utils.logging.disable_progress_bar()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        backbone = transformers.AutoModel.from_pretrained(path)
        _freeze_below(backbone, train_layers)
        hidden = backbone.config.hidden_size
        torch.manual_seed(seed)
        nn = torch.nn
        self.net = nn.ModuleDict(
            {
                "backbone": backbone,
                "span": nn.Linear(hidden, 2),
                "choice": nn.Sequential(nn.Dropout(0.1), nn.Linear(2 * hidden, 1)),
            }
        )
        self.net.eval()

    # ------------------------------------------------------------ forward

    def _encode(self, queries: Sequence[str], texts: Sequence[str]) -> Any:
        return self.tokenizer(
            [_query(q) for q in queries],
            list(texts),
            truncation="only_second",
            max_length=self.max_length,
            padding=True,
            return_offsets_mapping=True,
            return_tensors="pt",
        )

    def _hidden(self, enc: Any) -> Any:
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return self.net["backbone"](**inputs).last_hidden_state

    def _span_logits(self, enc: Any, hidden: Any) -> tuple[Any, Any, Any]:
        """Start and end logits with everything but the text's tokens and [CLS] masked out."""
        torch = require("torch", "local")
        logits = self.net["span"](hidden)
        allowed = torch.zeros(hidden.shape[:2], dtype=torch.bool)
        for i in range(hidden.shape[0]):
            ids = enc.sequence_ids(i)
            allowed[i] = torch.tensor([s == 1 for s in ids])
        allowed[:, 0] = True
        start = logits[..., 0].masked_fill(~allowed, -1e4)
        end = logits[..., 1].masked_fill(~allowed, -1e4)
        return start, end, allowed

    def _choice_scores(self, enc: Any, hidden: Any) -> Any:
        torch = require("torch", "local")
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.net["choice"](torch.cat([hidden[:, 0], mean], dim=-1)).squeeze(-1)

    # ------------------------------------------------------------ training

    def fit(
        self,
        span_items: Sequence[SpanItem],
        choice_items: Sequence[ChoiceItem],
        *,
        epochs: int = 3,
        lr: float = 5e-5,
        head_lr: float = 1e-3,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = False,
        description: str = "training",
        max_steps: int | None = None,
    ) -> list[float]:
        """Train both heads (and the encoder) jointly; returns the mean loss of each epoch.

        ``max_steps`` caps the optimizer steps: on large data each epoch then sees a fresh
        random share of the items, so training time stays bounded.
        """
        torch = require("torch", "local")
        rng = random.Random(seed)
        torch.manual_seed(seed)
        span_batches_per_epoch = math.ceil(len(span_items) / batch_size) if span_items else 0
        choice_batches = _pack_groups(choice_items, batch_size * 2)
        steps_per_epoch = span_batches_per_epoch + len(choice_batches)
        per_epoch = steps_per_epoch
        if max_steps is not None and steps_per_epoch * epochs > max_steps:
            per_epoch = max(1, max_steps // max(1, epochs))
        total = max(1, min(steps_per_epoch, per_epoch) * epochs)
        head_params = [p for n, p in self.net.named_parameters() if not n.startswith("backbone.")]
        opt = torch.optim.AdamW(
            [
                {"params": [p for p in self.net["backbone"].parameters() if p.requires_grad], "lr": lr},
                {"params": head_params, "lr": head_lr},
            ],
            weight_decay=0.01,
        )
        warm = max(1, total // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / max(1, total - warm))
        )
        losses: list[float] = []
        self.net.train()
        bar = _progress(progress)
        try:
            task = bar.add_task(description, total=total) if bar else None
            for _ in range(epochs):
                spans = list(span_items)
                rng.shuffle(spans)
                batches: list[tuple[str, Any]] = [
                    ("span", spans[i : i + batch_size]) for i in range(0, len(spans), batch_size)
                ]
                groups = list(choice_items)
                rng.shuffle(groups)
                batches += [("choice", b) for b in _pack_groups(groups, batch_size * 2)]
                rng.shuffle(batches)
                batches = batches[:per_epoch]
                epoch_loss = 0.0
                for kind, batch in batches:
                    loss = self._span_loss(batch) if kind == "span" else self._choice_loss(batch)
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    epoch_loss += float(loss.detach())
                    if bar is not None and task is not None:
                        bar.advance(task)
                losses.append(epoch_loss / max(1, len(batches)))
        finally:
            if bar is not None:
                bar.stop()
            self.net.eval()
        return losses

    def _span_loss(self, batch: Sequence[SpanItem]) -> Any:
        torch = require("torch", "local")
        enc = self._encode([b.query for b in batch], [b.text for b in batch])
        hidden = self._hidden(enc)
        start, end, _ = self._span_logits(enc, hidden)
        t_start = torch.zeros_like(start)
        t_end = torch.zeros_like(end)
        for i, item in enumerate(batch):
            toks = [_char_to_tokens(enc, i, s, e) for s, e in item.spans]
            toks = [t for t in toks if t is not None]
            if not toks:
                t_start[i, 0] = 1.0
                t_end[i, 0] = 1.0
                continue
            for s, e in toks:
                t_start[i, s] += 1.0 / len(toks)
                t_end[i, e] += 1.0 / len(toks)
        ls = -(t_start * torch.log_softmax(start, -1)).sum(-1)
        le = -(t_end * torch.log_softmax(end, -1)).sum(-1)
        return ((ls + le) / 2).mean()

    def _choice_loss(self, groups: Sequence[ChoiceItem]) -> Any:
        torch = require("torch", "local")
        queries = [q for g in groups for q in g.queries]
        texts = [g.text for g in groups for _ in g.queries]
        enc = self._encode(queries, texts)
        scores = self._choice_scores(enc, self._hidden(enc))
        losses = []
        at = 0
        for g in groups:
            s = scores[at : at + len(g.queries)]
            at += len(g.queries)
            target = torch.zeros_like(s)
            target[g.targets] = 1.0 / len(g.targets)
            losses.append(-(target * torch.log_softmax(s, -1)).sum())
        return torch.stack(losses).mean()

    # ------------------------------------------------------------ inference

    def extract(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        max_answer_tokens: int = 32,
        multi_threshold: float = 0.2,
        max_spans: int = 8,
        batch_size: int = 64,
        candidates: Sequence[list[tuple[int, int]] | None] | None = None,
    ) -> list[SpanResult]:
        """For each (query, text): the spans that answer it, best first (several when confident).

        ``candidates[i]``, when not None, lists the character spans allowed for pair i (e.g. only
        the runs of words that read as a number): the model then ranks those, never others.
        """
        torch = require("torch", "local")
        out: list[SpanResult | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                enc = self._encode([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
                start, end, _ = self._span_logits(enc, self._hidden(enc))
                ps = torch.softmax(start, -1).numpy()
                pe = torch.softmax(end, -1).numpy()
                for row, i in enumerate(idx):
                    out[i] = _decode(
                        enc,
                        row,
                        pairs[i][1],
                        ps[row],
                        pe[row],
                        max_answer_tokens,
                        multi_threshold,
                        max_spans,
                        None if candidates is None else candidates[i],
                    )
        return [r for r in out if r is not None]

    def choose(
        self, groups: Sequence[tuple[Sequence[str], str]], *, batch_size: int = 64
    ) -> list[list[float]]:
        """For each (queries, text): the softmax over the queries' scores."""
        torch = require("torch", "local")
        flat = [(q, t) for qs, t in groups for q in qs]
        scores: list[float] = [0.0] * len(flat)
        order = sorted(range(len(flat)), key=lambda i: len(flat[i][0]) + len(flat[i][1]))
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                enc = self._encode([flat[i][0] for i in idx], [flat[i][1] for i in idx])
                s = self._choice_scores(enc, self._hidden(enc)).tolist()
                for j, i in enumerate(idx):
                    scores[i] = s[j]
        out = []
        at = 0
        for qs, _ in groups:
            s = scores[at : at + len(qs)]
            at += len(qs)
            m = max(s) if s else 0.0
            ex = [math.exp(v - m) for v in s]
            z = sum(ex) or 1.0
            out.append([v / z for v in ex])
        return out

    # ------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        st = require("safetensors.torch", "local")
        directory.mkdir(parents=True, exist_ok=True)
        self.net["backbone"].save_pretrained(directory / "encoder")
        self.tokenizer.save_pretrained(directory / "encoder")
        heads = {
            k: v.detach().contiguous()
            for k, v in self.net.state_dict().items()
            if not k.startswith("backbone.")
        }
        st.save_file(heads, str(directory / HEADS_FILE))
        cfg = {"base": self.base, "max_length": self.max_length, "train_layers": self.train_layers}
        (directory / ENGINE_FILE).write_text(json.dumps(cfg))

    @classmethod
    def load(cls, directory: Path, threads: int | None = None) -> EncoderEngine:
        st = require("safetensors.torch", "local")
        cfg = json.loads((directory / ENGINE_FILE).read_text())
        eng = cls(
            cfg["base"],
            max_length=cfg["max_length"],
            train_layers=cfg.get("train_layers"),
            threads=threads,
            _path=str(directory / "encoder"),
        )
        missing = eng.net.load_state_dict(st.load_file(str(directory / HEADS_FILE)), strict=False)
        bad = [k for k in missing.missing_keys if not k.startswith("backbone.")]
        if bad or missing.unexpected_keys:
            raise ValueError(
                f"{directory / HEADS_FILE} does not match the model: {bad or missing.unexpected_keys}"
            )
        eng.net.eval()
        return eng


def _freeze_below(backbone: Any, train_layers: int | None) -> None:
    """Train only the top ``train_layers`` layers (None: all): cheaper, and enough on small data."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if train_layers is None or layers is None:
        return
    keep = max(0, len(layers) - train_layers)
    for p in backbone.embeddings.parameters():
        p.requires_grad = False
    for layer in list(layers)[:keep]:
        for p in layer.parameters():
            p.requires_grad = False


def _pack_groups(groups: Sequence[ChoiceItem], max_pairs: int) -> list[list[ChoiceItem]]:
    out: list[list[ChoiceItem]] = []
    cur: list[ChoiceItem] = []
    n = 0
    for g in groups:
        if cur and n + len(g.queries) > max_pairs:
            out.append(cur)
            cur, n = [], 0
        cur.append(g)
        n += len(g.queries)
    if cur:
        out.append(cur)
    return out


def _char_to_tokens(enc: Any, row: int, cs: int, ce: int) -> tuple[int, int] | None:
    seq = enc.sequence_ids(row)
    offsets = enc["offset_mapping"][row].tolist()
    toks = [t for t, (a, b) in enumerate(offsets) if seq[t] == 1 and b > a and a < ce and b > cs]
    return (toks[0], toks[-1]) if toks else None


def _decode(
    enc: Any,
    row: int,
    text: str,
    ps: Any,
    pe: Any,
    max_len: int,
    multi_threshold: float,
    max_spans: int,
    allowed: list[tuple[int, int]] | None = None,
) -> SpanResult:
    import numpy as np

    seq = enc.sequence_ids(row)
    offsets = enc["offset_mapping"][row].tolist()
    ctx = np.array([t for t, s in enumerate(seq) if s == 1 and offsets[t][1] > offsets[t][0]], dtype=np.int64)
    null = float(ps[0] * pe[0])
    null_prob = float(min(ps[0], pe[0]))
    if len(ctx) == 0:
        return SpanResult([], null_prob, None, [])
    ranked = _ranked(ctx, ps, pe, max_len) if allowed is None else _ranked_allowed(enc, row, ps, pe, allowed)
    chosen: list[tuple[int, int, float]] = []
    used: list[tuple[int, int]] = []
    best: Span | None = None
    for score, s_tok, e_tok in ranked:
        if score <= 0:
            break
        prob = float(min(ps[s_tok], pe[e_tok]))
        if best is None:
            best = _span(text, offsets[s_tok][0], offsets[e_tok][1], prob)
            if score < null:
                break
            chosen.append((s_tok, e_tok, prob))
            used.append((s_tok, e_tok))
            continue
        if len(chosen) >= max_spans:
            break
        if ps[s_tok] < multi_threshold or pe[e_tok] < multi_threshold:
            continue
        if any(not (e_tok < a or s_tok > b) for a, b in used):
            continue
        chosen.append((s_tok, e_tok, prob))
        used.append((s_tok, e_tok))
    spans = [_span(text, offsets[s][0], offsets[e][1], p) for s, e, p in chosen]
    top: list[Span] = []
    for score, s_tok, e_tok in ranked[:20]:
        if score <= 0 or len(top) >= 5:
            break
        sp = _span(text, offsets[s_tok][0], offsets[e_tok][1], float(min(ps[s_tok], pe[e_tok])))
        if all((sp.start, sp.end) != (t.start, t.end) for t in top):
            top.append(sp)
    return SpanResult(spans, null_prob, best, top)


def _ranked(ctx: Any, ps: Any, pe: Any, max_len: int) -> list[tuple[float, int, int]]:
    """The 200 best (score, start token, end token) over the text, start <= end < start + max_len."""
    import numpy as np

    m = np.outer(ps[ctx], pe[ctx])
    n = len(ctx)
    band = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), k=max_len)
    m = np.where(band, m, 0.0)
    out = []
    for k in np.argsort(m, axis=None)[::-1][:200]:
        i, j = divmod(int(k), n)
        out.append((float(m[i, j]), int(ctx[i]), int(ctx[j])))
    return out


def _ranked_allowed(
    enc: Any, row: int, ps: Any, pe: Any, allowed: list[tuple[int, int]]
) -> list[tuple[float, int, int]]:
    out = []
    for cs, ce in allowed:
        toks = _char_to_tokens(enc, row, cs, ce)
        if toks is not None:
            out.append((float(ps[toks[0]] * pe[toks[1]]), toks[0], toks[1]))
    return sorted(set(out), reverse=True)


def _span(text: str, start: int, end: int, prob: float) -> Span:
    """A span widened to whole words (a model may stop inside a word piece)."""
    while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return Span(start, end, text[start:end], prob)


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.start()
    return bar
