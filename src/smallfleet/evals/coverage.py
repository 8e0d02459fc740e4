"""Coverage curves: how accurate a specialist is on the answers it is sure of.

Sort the answers by confidence, highest first. Keeping only those at or above a
threshold, the *coverage* is the share kept and the *accuracy* is the share of
kept answers that are correct. Lowering the threshold trades accuracy for
coverage; the router keeps what is above the threshold and sends the rest to
the large model.

Ties in confidence are kept or dropped together (a threshold cannot split
them), so the curve has one point per distinct confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "CoveragePoint",
    "accuracy_at_coverage",
    "coverage_at_accuracy",
    "coverage_curve",
    "threshold_for",
]


@dataclass(frozen=True)
class CoveragePoint:
    """Keeping answers with confidence ≥ ``threshold``: ``kept`` of them, ``coverage`` share, ``accuracy``."""

    threshold: float
    coverage: float
    accuracy: float
    kept: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(confidences: Sequence[float], correct: Sequence[bool]) -> None:
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} correctness flags")
    if any(math.isnan(c) for c in confidences):
        raise ValueError("a confidence is NaN")


def coverage_curve(confidences: Sequence[float], correct: Sequence[bool]) -> list[CoveragePoint]:
    """One point per distinct confidence, from the highest threshold (least coverage) down."""
    _check(confidences, correct)
    n = len(confidences)
    order = sorted(range(n), key=lambda i: -confidences[i])
    points: list[CoveragePoint] = []
    hits = 0
    for rank, i in enumerate(order):
        hits += bool(correct[i])
        last_of_tie = rank + 1 == n or confidences[order[rank + 1]] != confidences[i]
        if last_of_tie:
            kept = rank + 1
            points.append(CoveragePoint(float(confidences[i]), kept / n, hits / kept, kept))
    return points


def threshold_for(
    confidences: Sequence[float], correct: Sequence[bool], target_accuracy: float, min_kept: int = 1
) -> float | None:
    """The lowest threshold whose kept answers reach ``target_accuracy`` (at least ``min_kept`` of them).

    Picked on validation data; ``None`` when no threshold reaches the target.
    """
    best: float | None = None
    for p in coverage_curve(confidences, correct):
        if p.kept >= min_kept and p.accuracy >= target_accuracy - 1e-12:
            best = p.threshold  # points go down in threshold, so the last one that passes is lowest
    return best


def accuracy_at_coverage(confidences: Sequence[float], correct: Sequence[bool], coverage: float) -> float:
    """Accuracy of the most confident ``coverage`` share of answers (ties kept together)."""
    if not 0 < coverage <= 1:
        raise ValueError("coverage must be in (0, 1]")
    curve = coverage_curve(confidences, correct)
    if not curve:
        return 0.0
    for p in curve:
        if p.coverage >= coverage - 1e-12:
            return p.accuracy
    return curve[-1].accuracy


def coverage_at_accuracy(
    confidences: Sequence[float], correct: Sequence[bool], target_accuracy: float, min_kept: int = 1
) -> float:
    """The largest coverage whose kept answers reach ``target_accuracy`` (0.0 when none does)."""
    passing = [
        p.coverage
        for p in coverage_curve(confidences, correct)
        if p.kept >= min_kept and p.accuracy >= target_accuracy - 1e-12
    ]
    return max(passing, default=0.0)
