"""The ``classifier`` specialist: the answer is one of a small set of strings.

An intent, a category, yes/no, a routing label. Built on a sentence encoder (the
bundled all-MiniLM-L6-v2 by default, any Hugging Face encoder by id or path):
the request's identifying text (the last user message, then the system prompt
unless every training example had the same one) is encoded and mean-pooled, and
a linear head picks the label. Training is two stages: the head alone on the
frozen embeddings, then the top encoder layer fine-tuned with the head (the
layers below are frozen and run once; see :mod:`smallfleet.specialists._encoder`).

The confidence is the class probability, calibrated by temperature scaling on
the validation examples when there are some.

Labels keep the teacher's format: a response such as ``{"intent": "refund"}``
has the label ``refund``, and the classifier answers with the teacher's exact
text for that label (the most frequent one), so a JSON-wrapped label stays JSON.

What the encoder answers in is ``dtype`` (default ``auto``: bfloat16 where the CPU computes
it natively, else float32; ``int8`` on request, see :func:`smallfleet.encoders.inference_dtype`).
``auto`` does not pick int8 for the classifier: a label read straight off the pooled
embedding flips near ties, and on banking77 (77 labels, 2,000 held-out training requests)
int8 agreed with float32 on 98.2% of answers, under the 99.5% kept elsewhere (every
disagreement at a confidence under 0.67). Training computes in float32 and the saved
weights are float32 whatever the dtype, the bfloat16 or int8 encoder being made at load.

Folder layout::

    DIR/specialist.json    kind, base model, labels, outputs, temperature, metrics
    DIR/weights.safetensors  head + the fine-tuned encoder layers
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from smallfleet._extras import require
from smallfleet.encoders import DEFAULT_ENCODER_ID, inference_dtype
from smallfleet.errors import UserError
from smallfleet.specialists._encoder import (
    EncoderBackbone,
    load_tensors,
    progress,
    request_text_pair,
    save_tensors,
)
from smallfleet.specialists.base import Example, Prediction, Specialist, SpecialistMeta, data_hash
from smallfleet.types import ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    import torch

__all__ = ["Classifier", "label_of"]

WEIGHTS_FILE = "weights.safetensors"


def label_of(response: ChatResponse) -> str:
    """The label a teacher response stands for.

    Plain text → the stripped text; a JSON object with one string value (``{"intent": "refund"}``)
    → that value. A response with tool calls has no label.
    """
    msg = response.message
    if msg.tool_calls:
        raise UserError("A classifier learns text labels, but an example's response is a tool call.")
    text = (msg.content or "").strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return text
        if isinstance(obj, dict) and len(obj) == 1:
            (value,) = obj.values()
            if isinstance(value, str):
                return value.strip()
    return text


class Classifier(Specialist):
    """Encoder + linear head over a label set learned from the teacher's responses."""

    kind: ClassVar[str] = "classifier"

    def __init__(
        self,
        base_model: str | None = None,
        *,
        max_length: int = 128,
        num_layers: int | None = None,
        trainable_layers: int = 1,
        epochs: int | None = None,
        batch_size: int = 32,
        lr: float = 1e-4,
        head_lr: float = 1e-3,
        max_labels: int = 2000,
        dtype: str = "auto",
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.base_model = base_model
        self.max_length = max_length
        self.num_layers = num_layers
        self.trainable_layers = trainable_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.head_lr = head_lr
        self.max_labels = max_labels
        self.dtype = dtype
        self._top_state: dict[str, torch.Tensor] = {}
        self.seed = seed
        self.show_progress = progress
        self.labels: list[str] = []
        self.outputs: dict[str, str] = {}
        self.temperature = 1.0
        self.use_system = True
        self.backbone: EncoderBackbone | None = None
        self.head: torch.nn.Linear | None = None
        self.meta = SpecialistMeta(kind=self.kind, base_model=base_model or DEFAULT_ENCODER_ID)

    # ------------------------------------------------------------ training

    def _params(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "num_layers": self.num_layers,
            "trainable_layers": self.trainable_layers,
            "temperature": self.temperature,
            "use_system": self.use_system,
            "dtype": self.dtype,
            "outputs": self.outputs,
        }

    def _serving_dtype(self) -> str:
        """What the encoder answers in: ``dtype``, except that ``auto`` keeps float32 where
        bfloat16 is not native (int8 flips 1.8% of banking77's answers; module docstring)."""
        dtype = inference_dtype(self.dtype)
        return "float32" if dtype == "int8" and self.dtype == "auto" else dtype

    def _inputs(self, requests: Sequence[ChatRequest]) -> tuple[list[str], list[str]]:
        pairs = [request_text_pair(r) for r in requests]
        return [p[0] for p in pairs], [p[1] if self.use_system else "" for p in pairs]

    def fit(self, examples: Sequence[Example], validation: Sequence[Example] | None = None) -> Classifier:
        """Learn the label set and the classifier from ``examples``; calibrate on ``validation``."""
        torch = require("torch", "local")
        if not examples:
            raise UserError("A classifier needs at least one training example.")
        labels = [label_of(ex.response) for ex in examples]
        raw: dict[str, Counter[str]] = defaultdict(Counter)
        for ex, label in zip(examples, labels, strict=True):
            raw[label][(ex.response.message.content or "").strip()] += 1
        if len(raw) > self.max_labels:
            raise UserError(
                f"The responses hold {len(raw)} distinct labels (more than max_labels={self.max_labels}); "
                "this task is not a classification. Try the extractor or generator kind."
            )
        self.labels = sorted(raw)
        self.outputs = {label: texts.most_common(1)[0][0] for label, texts in raw.items()}
        index = {label: i for i, label in enumerate(self.labels)}
        y = torch.tensor([index[label] for label in labels])
        # A system prompt shared by every example tells the labels nothing and triples the tokens.
        self.use_system = len({ex.request.system_text() for ex in examples}) > 1

        started = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = random.Random(self.seed)
        bb = self.backbone = EncoderBackbone(
            self.base_model,
            max_length=self.max_length,
            num_layers=self.num_layers,
            trainable_layers=self.trainable_layers,
        )
        self.head = torch.nn.Linear(bb.dim, len(self.labels))
        texts, pairs = self._inputs([ex.request for ex in examples])
        n = len(examples)
        with progress("encoding", n, self.show_progress) as bar:
            states = bb.frozen_states(texts, pairs, bar=bar)

        # Stage 1: the head alone on the frozen embeddings, full batch (milliseconds).
        with torch.no_grad():
            pooled = torch.cat([bb.top(states[i : i + 256]) for i in range(0, n, 256)])
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)  # keeps confidences honest
        opt = torch.optim.AdamW(self.head.parameters(), lr=1e-2, weight_decay=0.01)
        for _ in range(300):
            loss = loss_fn(self.head(pooled), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        last_loss = float(loss.detach())

        # Stage 2: fine-tune the top encoder layer(s) with the head, in mini-batches.
        top = [p for layer in bb.top_layers() for p in layer.parameters()]
        batches_per_epoch = math.ceil(n / self.batch_size)
        epochs = (
            self.epochs if self.epochs is not None else max(2, min(10, math.ceil(60 / batches_per_epoch)))
        )
        if top and epochs > 0:
            groups = [{"params": self.head.parameters(), "lr": self.head_lr}, {"params": top, "lr": self.lr}]
            opt = torch.optim.AdamW(groups, weight_decay=0.01)
            total = epochs * batches_per_epoch
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.05, 1 - step / total))
            bb.train_mode(True)
            with progress(f"fine-tuning ({len(self.labels)} labels)", total, self.show_progress) as bar:
                for _ in range(epochs):
                    order = list(range(n))
                    rng.shuffle(order)
                    for start in range(0, n, self.batch_size):
                        idx = order[start : start + self.batch_size]
                        loss = loss_fn(self.head(bb.top([states[i] for i in idx])), y[idx])
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                        sched.step()
                        last_loss = float(loss.detach())
                        bar.advance()
        bb.train_mode(False)
        del states
        self._top_state = bb.top_state_dict()  # float32, what save() writes
        bb.to_dtype(self._serving_dtype())

        seconds = round(time.perf_counter() - started, 2)
        metrics: dict[str, Any] = {"train_seconds": seconds, "loss": last_loss}
        if validation:
            metrics.update(self._calibrate(validation))
        self.meta = SpecialistMeta(
            kind=self.kind,
            base_model=self.base_model or DEFAULT_ENCODER_ID,
            data_hash=data_hash(examples),
            n_train=n,
            labels=self.labels,
            metrics=metrics,
            params=self._params(),
        )
        return self

    def _calibrate(self, validation: Sequence[Example]) -> dict[str, Any]:
        """Temperature scaling: the T minimising the validation NLL (labels unseen in training skipped)."""
        torch = require("torch", "local")
        index = {label: i for i, label in enumerate(self.labels)}
        pairs = [(ex.request, index.get(label_of(ex.response))) for ex in validation]
        kept = [(r, i) for r, i in pairs if i is not None]
        if not kept:
            return {}
        logits = self._logits([r for r, _ in kept])
        y = torch.tensor([i for _, i in kept])
        best_t, best_nll = 1.0, math.inf
        # 0.5 .. 20: a validation set the model gets all right would otherwise push T to 0
        # and every confidence to 1.0, which no unseen traffic deserves.
        for k in range(-6, 27):
            t = 10 ** (k / 20)
            nll = float(torch.nn.functional.cross_entropy(logits / t, y))
            if nll < best_nll:
                best_t, best_nll = t, nll
        self.temperature = best_t
        acc = float((logits.argmax(1) == y).float().mean())
        return {"temperature": best_t, "validation_nll": best_nll, "validation_accuracy": acc}

    # ------------------------------------------------------------ inference

    def _logits(self, requests: Sequence[ChatRequest], batch_size: int = 64) -> torch.Tensor:
        torch = require("torch", "local")
        if self.backbone is None or self.head is None:
            raise UserError("This classifier is not trained: call fit() or Classifier.load(dir).")
        texts, pairs = self._inputs(requests)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + len(pairs[i]))
        out = torch.empty((len(texts), len(self.labels)))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                emb = self.backbone.encode([texts[i] for i in idx], [pairs[i] for i in idx])
                out[idx] = self.head(emb)
        return out

    def predict(self, requests: Sequence[ChatRequest]) -> list[Prediction]:
        """Labels and calibrated probabilities for ``requests``, in batches."""
        torch = require("torch", "local")
        if not requests:
            return []
        probs = torch.softmax(self._logits(requests) / self.temperature, dim=1)
        conf, best = probs.max(1)
        out = []
        for c, b in zip(conf.tolist(), best.tolist(), strict=True):
            text = self.outputs[self.labels[b]]
            resp = ChatResponse.of_text(f"smallfleet-{self.kind}", text, Usage.of(0, 1))
            out.append(Prediction(response=resp, confidence=float(c)))
        return out

    # ------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        if self.backbone is None or self.head is None:
            raise UserError("Nothing to save: the classifier is not trained.")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"encoder.{k}": v for k, v in self._top_state.items()}
        tensors["head.weight"] = self.head.weight.detach()
        tensors["head.bias"] = self.head.bias.detach()
        save_tensors(tensors, d / WEIGHTS_FILE)
        self.meta.params = self._params()
        self.meta.labels = self.labels
        self.meta.write(d)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Classifier:
        torch = require("torch", "local")
        d = Path(directory)
        meta = SpecialistMeta.read(d)
        if meta.kind != cls.kind:
            raise UserError(f"{d} holds a {meta.kind!r} specialist, not a classifier.")
        p = meta.params
        self = cls(
            meta.base_model,
            max_length=p.get("max_length", 128),
            num_layers=p.get("num_layers"),
            trainable_layers=p.get("trainable_layers", 1),
            dtype=p.get("dtype", "auto"),
            progress=False,
        )
        self.labels = list(meta.labels or [])
        self.outputs = dict(p.get("outputs", {}))
        self.temperature = float(p.get("temperature", 1.0))
        self.use_system = bool(p.get("use_system", True))
        self.meta = meta
        tensors = load_tensors(d / WEIGHTS_FILE)
        self.backbone = EncoderBackbone(
            meta.base_model,
            max_length=self.max_length,
            num_layers=self.num_layers,
            trainable_layers=self.trainable_layers,
        )
        self._top_state = {
            k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")
        }
        self.backbone.load_top_state_dict(self._top_state)
        self.backbone.to_dtype(self._serving_dtype())
        head = torch.nn.Linear(self.backbone.dim, len(self.labels))
        head.load_state_dict({"weight": tensors["head.weight"], "bias": tensors["head.bias"]})
        self.head = head.eval()
        return self
