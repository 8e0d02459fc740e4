"""Process-wide settings smallfleet applies in the processes it owns, never on import.

``import smallfleet`` leaves the process as it found it: the environment, logging, warnings
and torch's threads are the embedding application's. The ``smallfleet`` command and the
worker processes the flywheel starts are smallfleet's own, and call :func:`configure_process`
before anything runs torch; a script that wants the same (the benchmarks) calls
``smallfleet.configure_process()`` first.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["ONEDNN_CACHE_CAPACITY", "configure_process"]

#: oneDNN, torch's CPU kernel library, keeps the kernels it built for every input shape, 1024 by
#: default. In bfloat16 (smallfleet's encoders on CPUs with native bf16) each shape's kernels hold
#: far more memory: a flywheel training worker grew from 1.4 to 2.3 GB with the default, against
#: 1.8 GB with 64 at the same speed. oneDNN reads it when it first builds a kernel.
ONEDNN_CACHE_CAPACITY = "64"


def configure_process(env: MutableMapping[str, str] | None = None) -> None:
    """Cap oneDNN's kernel cache (:data:`ONEDNN_CACHE_CAPACITY`) unless the user set it."""
    target = os.environ if env is None else env
    target.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
