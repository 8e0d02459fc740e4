"""Evaluation: metrics that fit each output shape, ``evaluate`` for any model, coverage curves."""

from smallfleet.evals.coverage import (
    CoveragePoint,
    accuracy_at_coverage,
    coverage_at_accuracy,
    coverage_curve,
    threshold_for,
)
from smallfleet.evals.evaluate import ExampleResult, ExampleScore, Report, evaluate, score, shape_of
from smallfleet.evals.judge import Judge, Verdict

__all__ = [
    "CoveragePoint",
    "ExampleResult",
    "ExampleScore",
    "Judge",
    "Report",
    "Verdict",
    "accuracy_at_coverage",
    "coverage_at_accuracy",
    "coverage_curve",
    "evaluate",
    "score",
    "shape_of",
    "threshold_for",
]
