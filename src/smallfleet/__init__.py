"""smallfleet: large models for reasoning, small models for execution.

The public names below are imported on first use, so ``import smallfleet`` is cheap, and it
changes nothing in the process (its environment, logging, warnings): what the ``smallfleet``
command sets for itself is in :mod:`smallfleet._runtime`.
"""

from __future__ import annotations

import importlib
from typing import Any

from smallfleet.__about__ import __version__

_EXPORTS = {
    "ChatRequest": "smallfleet.types",
    "ChatResponse": "smallfleet.types",
    "ChatChunk": "smallfleet.types",
    "ChatModel": "smallfleet.models.base",
    "ModelRegistry": "smallfleet.models.registry",
    "Settings": "smallfleet.config",
    "load_settings": "smallfleet.config",
    "SmallfleetError": "smallfleet.errors",
    "configure_process": "smallfleet._runtime",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smallfleet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
