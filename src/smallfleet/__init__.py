"""smallfleet: large models for reasoning, small models for execution.

The public names below are imported on first use, so ``import smallfleet`` is cheap.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from smallfleet.__about__ import __version__

#: oneDNN, torch's CPU kernel library, keeps the kernels it built for every input shape, 1024 by
#: default. In bfloat16 (smallfleet's encoders on CPUs with native bf16) each shape's kernels hold
#: far more memory: a flywheel training worker grew from 1.4 to 2.3 GB with the default, against
#: 1.8 GB with 64 at the same speed. Set before torch runs; a value the user set is kept.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

_EXPORTS = {
    "ChatRequest": "smallfleet.types",
    "ChatResponse": "smallfleet.types",
    "ChatChunk": "smallfleet.types",
    "ChatModel": "smallfleet.models.base",
    "ModelRegistry": "smallfleet.models.registry",
    "Settings": "smallfleet.config",
    "load_settings": "smallfleet.config",
    "SmallfleetError": "smallfleet.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smallfleet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
