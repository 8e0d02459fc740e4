"""smallfleet.flywheel: from recorded traffic to promoted specialists.

    run = run_flywheel(store, FlywheelOptions(...))   # curate → cluster → train → evaluate → promote

The names below are imported on first use (module ``__getattr__``), so importing the package
does no work and ``smallfleet --help`` stays fast. The curation function is
``smallfleet.flywheel.curate.curate``: the package's ``curate`` is its module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallfleet.flywheel.cluster import (
        ClusterInfo,
        Clustering,
        ClusterMatcher,
        Signature,
        cluster_records,
        signature,
    )
    from smallfleet.flywheel.curate import DROP_REASONS, Curated
    from smallfleet.flywheel.naming import route_name
    from smallfleet.flywheel.pipeline import (
        CandidateResult,
        ClusterResult,
        FlywheelOptions,
        FlywheelRun,
        run_flywheel,
        train_and_evaluate,
        train_candidate,
    )

_EXPORTS = {
    "CandidateResult": "smallfleet.flywheel.pipeline",
    "ClusterInfo": "smallfleet.flywheel.cluster",
    "ClusterMatcher": "smallfleet.flywheel.cluster",
    "ClusterResult": "smallfleet.flywheel.pipeline",
    "Clustering": "smallfleet.flywheel.cluster",
    "Curated": "smallfleet.flywheel.curate",
    "DROP_REASONS": "smallfleet.flywheel.curate",
    "FlywheelOptions": "smallfleet.flywheel.pipeline",
    "FlywheelRun": "smallfleet.flywheel.pipeline",
    "Signature": "smallfleet.flywheel.cluster",
    "cluster_records": "smallfleet.flywheel.cluster",
    "route_name": "smallfleet.flywheel.naming",
    "run_flywheel": "smallfleet.flywheel.pipeline",
    "signature": "smallfleet.flywheel.cluster",
    "train_and_evaluate": "smallfleet.flywheel.pipeline",
    "train_candidate": "smallfleet.flywheel.pipeline",
}

__all__ = [
    "DROP_REASONS",
    "CandidateResult",
    "ClusterInfo",
    "ClusterMatcher",
    "ClusterResult",
    "Clustering",
    "Curated",
    "FlywheelOptions",
    "FlywheelRun",
    "Signature",
    "cluster_records",
    "route_name",
    "run_flywheel",
    "signature",
    "train_and_evaluate",
    "train_candidate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smallfleet.flywheel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
