"""The encoder machinery both extractive specialists share: spans and choices on one encoder.

One pretrained sentence encoder (the bundled all-MiniLM-L6-v2 by default) reads a
*pack*: every query asked of one text, then the text, ``q1 | q2 | … [SEP] text``.
A query describes what is wanted ("location (string): the city and state, e.g. San
Francisco, CA") and is represented by the mean of its own tokens' states, so one
forward pass answers all the fields of an object or all the arguments of a call
(a pack is split only when the queries do not fit beside the text). Two small heads:

* a **span head**: each token's start and end logits are its state's product with a
  projection of the query's vector (plus a query-free prior), over the text's tokens
  and a "no answer" option at ``[CLS]``; trained with cross-entropy (a soft target
  when the value occurs several times or there are several values). Spans are mapped
  back to the original text with the tokenizer's offsets, so casing and punctuation
  are kept.
* a **choice head**: one score per query from its vector and the text's; a group of
  queries sharing a text (the values of an enum, true/false) is a softmax over the
  group, trained with cross-entropy.

Because everything is conditioned on a *description*, the model carries over to
fields and tools it has never seen, as long as they are described.

**Separate lower layers.** The encoder's frozen lower layers (``separate_layers``, by
default all the layers that do not train) read the queries and the text *apart*: the
queries' states are computed once and cached (a cluster asks the same questions of
every request), the text's once per request whatever is asked of it, and only the
upper layers read ``queries [SEP] text`` together. On the demo's tool calls the queries
are about 70% of a pack's tokens, so this is where most of the encoder's work went.

**bfloat16, int8.** Where the CPU computes bf16 natively (``dtype="auto"``: AMX, AVX512-BF16),
training computes in bf16 with float32 weights (autocast), and answers come from a bf16
copy of the encoder, the heads staying in float32. Elsewhere on x86 (``auto`` = ``int8``)
training computes in float32 and answers come from a copy whose linear layers are int8
(:func:`smallfleet.encoders.quantize_int8`). The saved weights are always float32: the
bf16 or int8 copy is made at the first answer after loading or fitting.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallfleet._extras import require
from smallfleet.encoders import inference_dtype, quantize_int8
from smallfleet.specialists._encoder import run_layers

__all__ = ["ChoiceItem", "EncoderEngine", "Span", "SpanItem", "SpanResult"]

MAX_QUERY_CHARS = 400
QUERY_SEP = " | "
HEADS_FILE = "heads.safetensors"
SEPARATE_MODEL_TYPES = ("bert",)  # encoders whose layers run apart as below (absolute positions)
QUERY_CACHE_SIZE = 512  # query parts' lower-layer states kept (about 100 KB each)
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
        pack: int | None = None,
        train_layers: int | None = None,
        separate_layers: int | None = None,
        query_slots: bool | None = None,
        threads: int | None = None,
        seed: int = 0,
        dtype: str = "auto",
        _path: str | None = None,
    ) -> None:
        from smallfleet.encoders import default_encoder

        torch = require("torch", "local")
        transformers = require("transformers", "local")
        if threads:
            torch.set_num_threads(threads)
        self.base = base or default_encoder()
        self.max_length = max_length
        self.pack = pack  # the most decisions one pass answers (None: all that fit; 1: one per pass)
        self.train_layers = train_layers
        self.dtype = inference_dtype(dtype)  # what the encoder answers in (weights stay float32)
        self._infer_backbone: Any = None  # the encoder in ``dtype``, made at the first answer
        path = _path or self.base
        transformers.utils.logging.disable_progress_bar()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        backbone = transformers.AutoModel.from_pretrained(path)
        frozen = _freeze_below(backbone, train_layers)
        # the lower layers that read queries and text apart: only frozen ones (so cached
        # states stay valid while training), only where positions are absolute embeddings
        if backbone.config.model_type not in SEPARATE_MODEL_TYPES:
            frozen = 0
        # By default the lower layers read queries and text apart, and each query is one vector
        # in the upper layers, where a pass answers several decisions (a fixed schema: most of the
        # saving, and enums learned better); with one decision per pass (``pack=1``, the setting
        # for tools and fields never seen in training) every layer reads every token of both,
        # which carries better to new descriptions and new multi-word values.
        if separate_layers is None:
            separate_layers = frozen if pack != 1 else 0
        self.separate_layers = max(0, min(separate_layers, frozen))
        self.query_slots = bool((pack != 1 if query_slots is None else query_slots) and self.separate_layers)
        hidden = backbone.config.hidden_size
        torch.manual_seed(seed)
        nn = torch.nn
        self.net = nn.ModuleDict(
            {
                "backbone": backbone,
                "span": nn.Linear(hidden, 2),
                "start": nn.Linear(hidden, hidden),
                "end": nn.Linear(hidden, hidden),
                "choice": nn.Sequential(nn.Dropout(0.1), nn.Linear(2 * hidden, 1)),
            }
        )
        self.net.eval()
        self._qlen_cache: dict[str, int] = {}
        self._query_states: dict[tuple[int, ...], Any] = {}  # lower-layer states of query parts
        self._text_states: dict[tuple[int, ...], Any] | None = None  # of texts, kept while fitting

    @classmethod
    def from_params(
        cls, base: str | None, params: dict[str, Any], threads: int | None = None
    ) -> EncoderEngine:
        """A new engine from a specialist's parameters (the keys this constructor takes)."""
        keys = ("max_length", "pack", "train_layers", "separate_layers", "query_slots", "seed")
        dtype = params.get("dtype", "auto")
        return cls(base, threads=threads, dtype=dtype, **{k: params[k] for k in keys})

    def _backbone(self) -> Any:
        """The encoder a pass runs through: the float32 one while training, else one in ``dtype``."""
        bb = self.net["backbone"]
        if self.net.training or self.dtype == "float32":
            return bb
        if self._infer_backbone is None:
            torch = require("torch", "local")
            infer = copy.deepcopy(bb)
            if self.dtype == "int8":
                self._infer_backbone = quantize_int8(infer)
            else:
                self._infer_backbone = infer.to(getattr(torch, self.dtype)).eval()
            self._query_states = {}  # states cached by the other copy
        return self._infer_backbone

    # ------------------------------------------------------------ packing

    def _qlens(self, queries: Sequence[str]) -> list[int]:
        """Token counts of queries (cached: the same field queries come back on every request)."""
        todo = [q for q in dict.fromkeys(queries) if q not in self._qlen_cache]
        if todo:
            ids = self.tokenizer([_query(q) for q in todo], add_special_tokens=False)["input_ids"]
            for q, x in zip(todo, ids, strict=True):
                self._qlen_cache[q] = len(x)
        return [self._qlen_cache[q] for q in queries]

    def _packs(
        self, text: str, queries: Sequence[str], groups: Sequence[int] | None = None
    ) -> list[list[int]]:
        """Split the queries asked of one text into packs that fit, each answered in one pass.

        Returns lists of query indices; the queries of a ``groups`` id (a choice group) stay
        together where they fit. The text gets the room it needs first.
        """
        n_text = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        budget = max(48, self.max_length - 3 - min(n_text, self.max_length // 2))
        lens = self._qlens(queries)
        units: list[list[int]] = []
        for k in range(len(queries)):
            if groups is not None and units and groups[k] is not None and groups[units[-1][-1]] == groups[k]:
                units[-1].append(k)
            else:
                units.append([k])
        packs: list[list[int]] = []
        cur: list[int] = []
        used = 0
        for unit in units:
            cost = sum(lens[k] + 1 for k in unit)
            if cur and (
                used + cost > budget or (self.pack is not None and _n_units(cur, groups) >= self.pack)
            ):
                packs.append(cur)
                cur, used = [], 0
            if cost > budget:  # a group too large for one pack: split it
                for k in unit:
                    if cur and used + lens[k] + 1 > budget:
                        packs.append(cur)
                        cur, used = [], 0
                    cur.append(k)
                    used += lens[k] + 1
                continue
            cur += unit
            used += cost
        if cur:
            packs.append(cur)
        return packs

    # ------------------------------------------------------------ forward

    def _encode(
        self, packs: Sequence[tuple[Sequence[str], str, Sequence[int | None] | None]]
    ) -> tuple[Any, list[list[tuple[int, int]]]]:
        """Tokenise ``(queries, text, groups)`` packs as ``q1 | q2 | … [SEP] text``.

        Returns, per pack, the char range of each query's pooled part. The queries of one
        choice group (``"reason: why = damaged"``, ``"reason: why = wrong item"``) are
        written once with their shared prefix (``reason: why = damaged | wrong item``), and
        each is pooled over its value only, so the values are told apart, not averaged away.
        """
        firsts, ranges = [], []
        for queries, _, groups in packs:
            qs = [_query(q) for q in queries]
            prefix = _group_prefixes(qs, groups)
            parts, spans, at = [], [], 0
            for k, q in enumerate(qs):
                p = prefix[k]
                shared = (
                    k > 0 and p and groups is not None and groups[k] == groups[k - 1] and prefix[k - 1] == p
                )
                written = q[len(p) :] if shared else q
                start = at if shared else at + len(p)
                spans.append((start, at + len(written)))
                parts.append(written)
                at += len(written) + len(QUERY_SEP)
            firsts.append(QUERY_SEP.join(parts))
            ranges.append(spans)
        enc = self.tokenizer(
            firsts,
            [t for _, t, _ in packs],
            truncation="only_second",
            max_length=self.max_length,
            padding=True,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        return enc, ranges

    def _forward(self, enc: Any, ranges: list[list[tuple[int, int]]]) -> tuple[Any, Any, Any, Any]:
        """One pass: each query's start and end logits over its pack (text tokens and [CLS] only,
        [CLS] being "no answer") and its choice score.

        A query is represented by the mean of its own tokens' states; a token's start (end)
        logit is its state's product with a projection of that query vector.
        """
        import numpy as np

        torch = require("torch", "local")
        hidden = self._hidden(enc, ranges)  # B, T, H
        b, t, h = hidden.shape
        offsets = enc["offset_mapping"].numpy()
        n_q = sum(len(r) for r in ranges)
        pool = np.zeros((n_q, b * t), dtype=np.float32)
        text_pool = np.zeros((n_q, b * t), dtype=np.float32)
        allowed = np.zeros((n_q, t), dtype=bool)
        rows = np.zeros(n_q, dtype=np.int64)
        q = 0
        for i, spans in enumerate(ranges):
            seq = np.array([-1 if s is None else s for s in enc.sequence_ids(i)])
            real = offsets[i, :, 1] > offsets[i, :, 0]
            in_text = (seq == 1) & real
            text_w = in_text / max(1, in_text.sum())
            ok = in_text.copy()
            ok[0] = True
            for toks in _query_tokens(enc, i, spans):
                pool[q, i * t + toks] = 1.0 / len(toks)
                text_pool[q, i * t : (i + 1) * t] = text_w
                allowed[q] = ok
                rows[q] = i
                q += 1
        flat = hidden.reshape(b * t, h)
        qvec = torch.from_numpy(pool) @ flat  # Q, H
        tvec = torch.from_numpy(text_pool) @ flat  # Q, H
        per_row = hidden[torch.from_numpy(rows)]  # Q, T, H
        scale = h**-0.5
        prior = self.net["span"](hidden)[torch.from_numpy(rows)]  # Q, T, 2: what reads as a value at all
        start = torch.einsum("qth,qh->qt", per_row, self.net["start"](qvec)) * scale + prior[..., 0]
        end = torch.einsum("qth,qh->qt", per_row, self.net["end"](qvec)) * scale + prior[..., 1]
        mask = torch.from_numpy(allowed)
        start = start.masked_fill(~mask, -1e4)
        end = end.masked_fill(~mask, -1e4)
        choice = self.net["choice"](torch.cat([qvec, tvec], dim=-1)).squeeze(-1)
        return start, end, choice, rows

    def _hidden(self, enc: Any, ranges: list[list[tuple[int, int]]]) -> Any:
        """The encoder's last states of a batch of packs (``[B, T, H]``, the packs' token layout).

        The lower ``separate_layers`` run on the query part (``[CLS] q1 | … [SEP]``, cached)
        and on the text apart. With ``query_slots``, each query then enters the upper layers
        as one vector (the mean of its lower states), so they read ``[CLS] q1 … qm [SEP] text``
        and a query's upper state is written back over its tokens; otherwise they read every token.
        """
        bb = self._backbone()
        k = self.separate_layers
        if not k:
            inputs = {n: v for n, v in enc.items() if n in ("input_ids", "attention_mask", "token_type_ids")}
            return bb(**inputs).last_hidden_state.float()
        torch = require("torch", "local")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        b, t = ids.shape
        parts = []
        for i in range(b):
            seq = enc.sequence_ids(i)
            cut = next(j for j in range(1, len(seq)) if seq[j] is None) + 1  # after the first [SEP]
            row = ids[i, : int(mask[i].sum())].tolist()
            parts.append((tuple(row[:cut]), tuple(row[cut:])))
        texts = self._text_states if self._text_states is not None else {}
        queries = self._bottom([a for a, _ in parts], 0, self._query_states, QUERY_CACHE_SIZE)
        rest = self._bottom([x for _, x in parts], 1, texts, None)
        dtype = next(iter(queries.values())).dtype
        if not self.query_slots:
            hidden = torch.zeros((b, t, bb.config.hidden_size), dtype=dtype)
            for i, (a, x) in enumerate(parts):
                hidden[i, : len(a)] = queries[a]
                hidden[i, len(a) : len(a) + len(x)] = rest[x]
            return self._top(hidden, mask).float()
        slots = [_query_tokens(enc, i, spans) for i, spans in enumerate(ranges)]
        n = max(2 + len(sl) + len(x) for sl, (_, x) in zip(slots, parts, strict=True))
        short = torch.zeros((b, n, bb.config.hidden_size), dtype=dtype)
        short_mask = torch.zeros((b, n), dtype=torch.long)
        # where each position of the packs' layout reads its upper state from: [CLS], each
        # query's tokens its slot, the text; the rest (n) a zero row
        where = torch.full((b, t), n, dtype=torch.long)
        for i, ((a, x), sl) in enumerate(zip(parts, slots, strict=True)):
            qa = queries[a]
            m = len(sl)
            short[i, 0] = qa[0]
            where[i, 0] = 0
            for j, toks in enumerate(sl):
                short[i, 1 + j] = qa[toks].mean(0)
                where[i, torch.as_tensor(toks)] = 1 + j
            short[i, 1 + m] = qa[len(a) - 1]
            short[i, 2 + m : 2 + m + len(x)] = rest[x]
            short_mask[i, : 2 + m + len(x)] = 1
            where[i, len(a) : len(a) + len(x)] = torch.arange(len(x)) + 2 + m
        top = self._top(short, short_mask).float()
        top = torch.cat([top, top.new_zeros((b, 1, top.shape[-1]))], dim=1)
        return torch.gather(top, 1, where.unsqueeze(-1).expand(b, t, top.shape[-1]))

    def _top(self, hidden: Any, mask: Any) -> Any:
        """The upper layers (those above ``separate_layers``) over states ``[B, T, H]``."""
        bb = self._backbone()
        return run_layers(bb.config, bb.encoder.layer[self.separate_layers :], hidden, mask)

    def _bottom(
        self, keys: Sequence[tuple[int, ...]], token_type: int, cache: dict[Any, Any], limit: int | None
    ) -> dict[tuple[int, ...], Any]:
        """Lower-layer states of token sequences (query parts from position 0, texts from 1, as
        if after ``[CLS]``), from ``cache`` or computed in batches and added to it."""
        torch = require("torch", "local")
        bb = self._backbone()
        todo = sorted((x for x in dict.fromkeys(keys) if x not in cache), key=len)
        pad = self.tokenizer.pad_token_id or 0
        with torch.no_grad():
            for b in range(0, len(todo), 64):
                chunk = todo[b : b + 64]
                n = max(len(x) for x in chunk)
                ids = torch.tensor([list(x) + [pad] * (n - len(x)) for x in chunk])
                mask = torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in chunk])
                pos = (torch.arange(n) + token_type).unsqueeze(0).expand(len(chunk), n)
                hidden = bb.embeddings(
                    input_ids=ids, token_type_ids=torch.full_like(ids, token_type), position_ids=pos
                )
                hidden = run_layers(bb.config, bb.encoder.layer[: self.separate_layers], hidden, mask)
                for x, h in zip(chunk, hidden, strict=True):
                    cache[x] = h[: len(x)].clone()
        found = {x: cache[x] for x in keys}
        if limit is not None and len(cache) > limit:
            for x in list(cache)[: len(cache) - limit]:
                del cache[x]
        return found

    # ------------------------------------------------------------ training

    def _train_units(
        self, span_items: Sequence[SpanItem], choice_items: Sequence[ChoiceItem]
    ) -> list[list[tuple[list[tuple[str, Any]], str]]]:
        """Training units: the packs of everything asked of one text (span queries and choice
        groups, as :meth:`answer` packs them), with what each query should answer; a unit's
        packs always share a batch."""
        by_text: dict[str, tuple[list[SpanItem], list[ChoiceItem]]] = {}
        for si in span_items:
            by_text.setdefault(si.text, ([], []))[0].append(si)
        for ci in choice_items:
            by_text.setdefault(ci.text, ([], []))[1].append(ci)
        units = []
        for text, (spans, choices) in by_text.items():
            slots: list[tuple[str, Any]] = [(si.query, ("span", si.spans)) for si in spans]
            slots += [
                (q, ("choice", (g, 1.0 / len(c.targets) if k in c.targets else 0.0)))
                for g, c in enumerate(choices)
                for k, q in enumerate(c.queries)
            ]
            groups = [_slot_group(t) for _, t in slots]
            packs = self._packs(text, [q for q, _ in slots], groups)
            units.append([([slots[k] for k in pack], text) for pack in packs])
        return units

    def _loss(self, packs: Sequence[tuple[list[tuple[str, Any]], str]]) -> Any:
        torch = require("torch", "local")
        enc, ranges = self._encode(
            [([q for q, _ in slots], text, [_slot_group(t) for _, t in slots]) for slots, text in packs]
        )
        start, end, choice, _ = self._forward(enc, ranges)
        span_losses, groups = [], {}
        q = 0
        for i, (slots, text) in enumerate(packs):
            for _, (kind, target) in slots:
                if kind == "span":
                    toks = [_char_to_tokens(enc, i, s, e) for s, e in target]
                    toks = [x for x in toks if x is not None] or [(0, 0)]
                    ts = torch.zeros(start.shape[1])
                    te = torch.zeros(start.shape[1])
                    for s, e in toks:
                        ts[s] += 1.0 / len(toks)
                        te[e] += 1.0 / len(toks)
                    ls = -(ts * torch.log_softmax(start[q], -1)).sum()
                    le = -(te * torch.log_softmax(end[q], -1)).sum()
                    span_losses.append((ls + le) / 2)
                else:
                    g, weight = target
                    groups.setdefault((text, g), []).append((q, weight))
                q += 1
        loss = torch.stack(span_losses).mean() if span_losses else choice.sum() * 0.0
        if groups:
            choice_losses = []
            for members in groups.values():
                idx = torch.tensor([m for m, _ in members])
                target = torch.tensor([w for _, w in members])
                choice_losses.append(-(target * torch.log_softmax(choice[idx], -1)).sum())
            loss = loss + torch.stack(choice_losses).mean()
        return loss

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
        """Train the heads (and the encoder's top layers) on all items; the mean loss of each epoch.

        Every query asked of one text is answered in the same pass; a step takes texts
        until it holds ``batch_size`` decisions (a span query, a choice group). ``max_steps`` caps the
        optimizer steps: on large data each epoch then sees a fresh random share of the
        texts, so training time stays bounded.
        """
        torch = require("torch", "local")
        rng = random.Random(seed)
        torch.manual_seed(seed)
        units = self._train_units(span_items, choice_items)
        if not units:
            return []
        n_decisions = sum(_decisions(unit) for unit in units)
        steps_per_epoch = max(1, math.ceil(n_decisions / batch_size))
        per_epoch = steps_per_epoch
        if max_steps is not None and steps_per_epoch * epochs > max_steps:
            per_epoch = max(1, max_steps // max(1, epochs))
        total = max(1, per_epoch * epochs)
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
        # lower-layer states made under inference mode cannot feed a backward pass, and texts
        # come back every epoch: fresh caches for the fit, dropped after it; the weights change
        self._query_states, self._text_states = {}, {}
        self._infer_backbone = None
        try:
            task = bar.add_task(description, total=total) if bar else None
            for _ in range(epochs):
                order = list(units)
                rng.shuffle(order)
                batches: list[list[Any]] = [[]]
                n_q = 0
                for unit in order:
                    if n_q >= batch_size:
                        batches.append([])
                        n_q = 0
                    batches[-1] += unit
                    n_q += _decisions(unit)
                batches = [b for b in batches if b][:per_epoch]
                epoch_loss = 0.0
                for batch in batches:
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"):
                        loss = self._loss(batch)  # float32 weights, bf16 compute where native
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
            self._query_states, self._text_states = {}, None
        return losses

    # ------------------------------------------------------------ inference

    def _run_packs(
        self, packs: list[tuple[list[int], list[str], str, list[int] | None]], batch_size: int
    ) -> dict[int, tuple[Any, int, Any, Any, float]]:
        """Forward every pack; for each query index: (enc, row, start probs, end probs, choice score)."""
        torch = require("torch", "local")
        out: dict[int, tuple[Any, int, Any, Any, float]] = {}
        order = sorted(range(len(packs)), key=lambda p: sum(map(len, packs[p][1])) + len(packs[p][2]))
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                batch = [packs[p] for p in order[b : b + batch_size]]
                enc, ranges = self._encode([(qs, text, groups) for _, qs, text, groups in batch])
                start, end, choice, rows = self._forward(enc, ranges)
                ps = torch.softmax(start, -1).numpy()
                pe = torch.softmax(end, -1).numpy()
                scores = choice.tolist()
                q = 0
                for ids, _, _, _ in batch:
                    for k in ids:
                        out[k] = (enc, int(rows[q]), ps[q], pe[q], scores[q])
                        q += 1
        return out

    def answer(
        self,
        pairs: Sequence[tuple[str, str]],
        groups: Sequence[tuple[Sequence[str], str]] = (),
        *,
        max_answer_tokens: int = 32,
        multi_threshold: float = 0.2,
        max_spans: int = 8,
        batch_size: int = 32,
        candidates: Sequence[list[tuple[int, int]] | None] | None = None,
    ) -> tuple[list[SpanResult], list[list[float]]]:
        """Span queries and choice groups together: everything asked of one text in one pass.

        For each (query, text) of ``pairs``: the spans that answer it, best first (several
        when confident); ``candidates[i]``, when not None, lists the character spans allowed
        for pair i (e.g. only the runs of words that read as a number), and the model then
        ranks those, never others. For each (queries, text) of ``groups``: the softmax over
        the queries' scores.
        """
        asked = [(q, text, None) for q, text in pairs]
        asked += [(q, text, g) for g, (qs, text) in enumerate(groups) for q in qs]
        by_text: dict[str, list[int]] = {}
        for k, (_, text, _) in enumerate(asked):
            by_text.setdefault(text, []).append(k)
        packs = []
        for text, idx in by_text.items():
            for pack in self._packs(text, [asked[k][0] for k in idx], [asked[k][2] for k in idx]):
                ids = [idx[k] for k in pack]
                packs.append((ids, [asked[k][0] for k in ids], text, [asked[k][2] for k in ids]))
        ran = self._run_packs(packs, batch_size)
        spans = []
        for i, (_, text) in enumerate(pairs):
            enc, row, ps, pe, _ = ran[i]
            allowed = None if candidates is None else candidates[i]
            spans.append(
                _decode(enc, row, text, ps, pe, max_answer_tokens, multi_threshold, max_spans, allowed)
            )
        probs = []
        at = len(pairs)
        for qs, _ in groups:
            sc = [ran[at + j][4] for j in range(len(qs))]
            at += len(qs)
            m = max(sc) if sc else 0.0
            ex = [math.exp(v - m) for v in sc]
            z = sum(ex) or 1.0
            probs.append([v / z for v in ex])
        return spans, probs

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
        cfg.update(pack=self.pack, separate_layers=self.separate_layers, query_slots=self.query_slots)
        (directory / ENGINE_FILE).write_text(json.dumps(cfg))

    @classmethod
    def load(cls, directory: Path, threads: int | None = None, dtype: str = "auto") -> EncoderEngine:
        st = require("safetensors.torch", "local")
        cfg = json.loads((directory / ENGINE_FILE).read_text())
        eng = cls(
            cfg["base"],
            max_length=cfg["max_length"],
            pack=cfg.get("pack"),
            train_layers=cfg.get("train_layers"),
            separate_layers=cfg.get("separate_layers", 0),  # engines saved before: all joint
            query_slots=cfg.get("query_slots", False),
            threads=threads,
            dtype=dtype,
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


def _query_tokens(enc: Any, row: int, spans: Sequence[tuple[int, int]]) -> list[Any]:
    """The token indices of each query of a pack (char ``spans`` of the first sequence); a query
    cut by truncation gets all the queries' tokens."""
    import numpy as np

    seq = np.array([-1 if s is None else s for s in enc.sequence_ids(row)])
    offsets = enc["offset_mapping"][row].numpy()
    real = offsets[:, 1] > offsets[:, 0]
    out = []
    for qs, qe in spans:
        m = (seq == 0) & real & (offsets[:, 0] >= qs) & (offsets[:, 1] <= qe)
        if not m.any():
            m = (seq == 0) & real
        out.append(np.flatnonzero(m))
    return out


def _n_units(members: Sequence[int], groups: Sequence[int | None] | None) -> int:
    """How many decisions the queries ``members`` make: each span query one, each choice group one."""
    if groups is None:
        return len(members)
    return sum(1 for k in members if groups[k] is None) + len({groups[k] for k in members} - {None})


def _decisions(unit: Sequence[tuple[list[tuple[str, Any]], str]]) -> int:
    """What a training unit teaches: one decision per span query and per choice group."""
    groups = [_slot_group(t) for slots, _ in unit for _, t in slots]
    return _n_units(range(len(groups)), groups)


def _slot_group(target: Any) -> int | None:
    kind, value = target
    return value[0] if kind == "choice" else None


def _group_prefixes(queries: Sequence[str], groups: Sequence[int | None] | None) -> list[str]:
    """Each query's prefix shared with the rest of its choice group (up to its last ``" = "``)."""
    out = [""] * len(queries)
    if groups is None:
        return out
    members: dict[int, list[int]] = {}
    for k, g in enumerate(groups):
        if g is not None:
            members.setdefault(g, []).append(k)
    for ks in members.values():
        if len(ks) < 2:
            continue
        common = os.path.commonprefix([queries[k] for k in ks])  # noqa: RUF071 (strings, not paths)
        cut = common.rfind(" = ")
        if cut > 0:
            for k in ks:
                out[k] = common[: cut + 3]
    return out


def _freeze_below(backbone: Any, train_layers: int | None) -> int:
    """Train only the top ``train_layers`` layers (None: all): cheaper, and enough on small data.

    Returns how many layers are frozen."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if train_layers is None or layers is None:
        return 0
    keep = max(0, len(layers) - train_layers)
    for p in backbone.embeddings.parameters():
        p.requires_grad = False
    for layer in list(layers)[:keep]:
        for p in layer.parameters():
            p.requires_grad = False
    return keep


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
