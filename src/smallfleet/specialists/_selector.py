"""Choosing among described options by sentence similarity, with a learned "none".

The pretrained sentence encoder already knows that "Quote for AAPL, please" is
close to "get stock price: Get the latest share price of a listed company". The
selector keeps that knowledge frozen (so it carries over to tools never seen in
training) and learns only how to read it: a few weights over similarity features
and the score of "none", fitted with a softmax cross-entropy on the training
groups. Embeddings come from the shared cache (:func:`smallfleet.encoders.embed_cached`),
so a tool set is embedded once, and a message the flywheel or the router's cluster matcher
has embedded already costs nothing more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SimilaritySelector"]

N_FEATURES = 3


@dataclass
class SimilaritySelector:
    """softmax([w · features(text, option_i)]_i + [none]) with features from a frozen encoder."""

    base: str | None = None
    weights: list[float] = field(default_factory=lambda: [20.0, 5.0, 5.0])
    none: float = 6.0

    def _embed(self, texts: Sequence[str]) -> Any:
        from transformers.utils import logging as hf_logging

        from smallfleet.encoders import embed_cached

        hf_logging.disable_progress_bar()  # no weight-loading bar in the middle of a predict
        return embed_cached(list(texts), self.base)

    def features(self, groups: Sequence[tuple[Sequence[Sequence[str]], str]]) -> list[Any]:
        """Per group ((option views...), text): an array (n_options, N_FEATURES) of cosine similarities.

        Each option is given as views (e.g. its full description, its name, its parameters);
        feature k is the cosine between the text and view k.
        """
        texts = [t for _, t in groups]
        t_emb = self._embed(texts)
        views = [v for opts, _ in groups for o in opts for v in o]
        v_emb = self._embed(views)
        out = []
        at = 0
        for gi, (opts, _) in enumerate(groups):
            rows = []
            for o in opts:
                sims = v_emb[at : at + len(o)] @ t_emb[gi]
                at += len(o)
                rows.append(list(sims) + [0.0] * (N_FEATURES - len(o)))
            out.append(rows)
        return out

    def probs(self, feats: Sequence[Any], with_none: Sequence[bool]) -> list[list[float]]:
        out = []
        for rows, allow_none in zip(feats, with_none, strict=True):
            scores = [sum(w * f for w, f in zip(self.weights, r, strict=True)) for r in rows]
            if allow_none:
                scores.append(self.none)
            m = max(scores)
            ex = [math.exp(s - m) for s in scores]
            z = sum(ex)
            out.append([e / z for e in ex])
        return out

    def fit(self, feats: Sequence[Any], targets: Sequence[Sequence[int]], steps: int = 300) -> float:
        """Fit the weights and the none score (softmax cross-entropy; target n_options = none)."""
        import torch

        w = torch.tensor(self.weights, requires_grad=True)
        b = torch.tensor(self.none, requires_grad=True)
        k = max(len(rows) for rows in feats) + 1
        x = torch.zeros(len(feats), k, N_FEATURES)
        allowed = torch.zeros(len(feats), k, dtype=torch.bool)
        target = torch.zeros(len(feats), k)
        is_none = torch.zeros(len(feats), k, dtype=torch.bool)
        for g, (rows, t) in enumerate(zip(feats, targets, strict=True)):
            n = len(rows)
            x[g, :n] = torch.tensor([list(map(float, r)) for r in rows])
            allowed[g, : n + 1] = True
            is_none[g, n] = True
            for i in t:
                target[g, i] = 1.0 / len(t)
        opt = torch.optim.Adam([w, b], lr=0.1)
        loss = torch.tensor(0.0)
        for _ in range(steps):
            scores = torch.where(is_none, b, x @ w).masked_fill(~allowed, -1e4)
            loss = -(target * torch.log_softmax(scores, -1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.weights = [float(v) for v in w.detach()]
        self.none = float(b.detach())
        return float(loss.detach())

    def state(self) -> dict[str, Any]:
        return {"weights": self.weights, "none": self.none}
