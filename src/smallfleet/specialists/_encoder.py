"""Shared machinery of the encoder specialists: a Hugging Face encoder whose top layers learn.

Used by :mod:`smallfleet.specialists.classifier`; the other encoder kinds
(extractor, tool_caller) may use it too: :class:`EncoderBackbone` loads any
Hugging Face encoder (the bundled all-MiniLM-L6-v2 by default), tokenises
(text, pair) inputs, and trains cheaply on a CPU by running the frozen lower
layers **once** (:meth:`EncoderBackbone.frozen_states`) and then only the top
``trainable_layers`` each epoch (:meth:`EncoderBackbone.top`). At inference the
whole encoder runs once per batch (:meth:`EncoderBackbone.encode`).

Why not fine-tune everything: on 2 CPU cores a full fine-tune of MiniLM-L6 on
2,000 examples takes several minutes per epoch-set, while caching the lower
layers and training the top one reaches the same accuracy on intent-like tasks
in well under a minute (figures in docs/specialists.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smallfleet._extras import require
from smallfleet.types import ChatRequest

if TYPE_CHECKING:
    import torch

__all__ = [
    "EncoderBackbone",
    "progress",
    "request_text_pair",
    "resolve_encoder",
    "run_layers",
]


def resolve_encoder(name_or_path: str | None) -> str:
    """A loadable path or id: the bundled encoder for ``None`` or its Hugging Face id."""
    from smallfleet.encoders import DEFAULT_ENCODER_ID, default_encoder

    if name_or_path in (None, "", DEFAULT_ENCODER_ID, "all-MiniLM-L6-v2"):
        return default_encoder()
    return str(name_or_path)


def request_text_pair(request: ChatRequest) -> tuple[str, str]:
    """What identifies a request: (the last user message, the system prompt).

    The user message comes first so that truncation cuts a long system prompt
    before it cuts what the user asked.
    """
    user = request.last_user_text()
    system = request.system_text()
    return user, system


@contextlib.contextmanager
def progress(description: str, total: int, enabled: bool = True) -> Iterator[Any]:
    """A progress bar (``advance(n)`` on what it yields); silent when not enabled. On a terminal a
    rich bar; otherwise a log line every 15 s (:mod:`smallfleet._progress`)."""
    from smallfleet._progress import Progress

    with Progress(enabled, transient=True) as bar:
        task = bar.add_task(description, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                bar.advance(task, n)

        yield _Bar()


class EncoderBackbone:
    """A Hugging Face encoder (``AutoModel``) with mean pooling and trainable top layers.

    ``num_layers`` keeps only the first N transformer layers (a faster, smaller
    encoder); ``trainable_layers`` is how many of the (kept) top layers learn.
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        *,
        max_length: int = 128,
        num_layers: int | None = None,
        trainable_layers: int = 1,
    ) -> None:
        require("torch", "local")
        transformers = require("transformers", "local")
        self.name = name_or_path
        path = resolve_encoder(name_or_path)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            self.model = transformers.AutoModel.from_pretrained(path)
        except OSError as e:
            from smallfleet.errors import UserError

            raise UserError(f"Cannot load the encoder {path!r}: {e}") from None
        self.model.eval()
        self.max_length = max_length
        layers = self._layer_list()
        if num_layers is not None and layers is not None and 0 < num_layers < len(layers):
            del layers[num_layers:]
            self.model.config.num_hidden_layers = num_layers
        n = len(layers) if layers is not None else 0
        self.trainable_layers = min(trainable_layers, n) if layers is not None else 0
        self.num_layers = n
        for p in self.model.parameters():
            p.requires_grad_(False)
        for layer in self.top_layers():
            for p in layer.parameters():
                p.requires_grad_(True)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _layer_list(self) -> Any:
        enc = getattr(self.model, "encoder", None)
        return getattr(enc, "layer", None)

    def top_layers(self) -> list[Any]:
        layers = self._layer_list()
        if layers is None or self.trainable_layers == 0:
            return []
        return list(layers[len(layers) - self.trainable_layers :])

    def tokenize(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        kw: dict[str, Any] = dict(
            padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        if pairs is not None and any(pairs):
            return self.tokenizer(list(texts), list(pairs), **kw)
        return self.tokenizer(list(texts), **kw)

    @staticmethod
    def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of the token states where ``mask`` is 1."""
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def frozen_states(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        batch_size: int = 64,
        bar: Any = None,
    ) -> list[torch.Tensor]:
        """Per input, the token states below the trainable layers (``[len_i, dim]``), computed once."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + len(pairs[i] if pairs else ""))
        out: list[torch.Tensor | None] = [None] * len(texts)
        below = self.num_layers - self.trainable_layers
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = self.tokenize([texts[i] for i in idx], [pairs[i] for i in idx] if pairs else None)
                res = self.model(**enc, output_hidden_states=True)
                states = res.hidden_states[below]
                for j, i in enumerate(idx):
                    n = int(enc["attention_mask"][j].sum())
                    out[i] = states[j, :n].clone()
                if bar is not None:
                    bar.advance(len(idx))
        return out  # type: ignore[return-value]

    def top(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pad cached states into a batch, run the trainable layers (with grad), mean-pool: ``[b, dim]``."""
        import torch

        n = max(s.shape[0] for s in states)
        hidden = states[0].new_zeros((len(states), n, states[0].shape[1]))
        mask = torch.zeros((len(states), n), dtype=torch.long)
        for i, s in enumerate(states):
            hidden[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = 1
        hidden = run_layers(self.model.config, self.top_layers(), hidden, mask)
        return self.pool(hidden, mask)

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> torch.Tensor:
        """Pooled embeddings of one batch through the whole encoder (call under ``inference_mode``)."""
        enc = self.tokenize(texts, pairs)
        out = self.model(**enc)
        return self.pool(out.last_hidden_state, enc["attention_mask"]).float()

    def to_dtype(self, dtype: str) -> None:
        """Make the encoder what inference computes in (``float32``, ``bfloat16`` or ``int8``,
        see :func:`smallfleet.encoders.inference_dtype`); train in float32 before this.

        int8 replaces the linear layers (:func:`smallfleet.encoders.quantize_int8`), so the
        trainable layers' float32 weights must be taken (:meth:`top_state_dict`) first."""
        import torch

        if dtype == "int8":
            from smallfleet.encoders import quantize_int8

            quantize_int8(self.model)
            return
        self.model.to(getattr(torch, dtype))

    def train_mode(self, on: bool) -> None:
        for layer in self.top_layers():
            layer.train(on)

    def top_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights that changed in training: the trainable layers."""
        names = {id(p) for layer in self.top_layers() for p in layer.parameters()}
        return {
            k: v.detach().clone().contiguous() for k, v in self.model.named_parameters() if id(v) in names
        }

    def load_top_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [k for k in state if k not in dict(self.model.named_parameters())]
        if missing:
            from smallfleet.errors import UserError

            raise UserError(f"Saved encoder weights do not fit the base encoder: {missing[:3]} …")
        self.model.load_state_dict(state, strict=False)


def run_layers(config: Any, layers: Sequence[Any], hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run transformer ``layers`` (of a Hugging Face encoder with ``config``) over ``hidden``
    ``[B, T, H]`` with the padding ``mask`` ``[B, T]``."""
    if not layers:
        return hidden
    from transformers.masking_utils import create_bidirectional_mask

    attn = create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=mask)
    for layer in layers:
        out = layer(hidden, attention_mask=attn)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
