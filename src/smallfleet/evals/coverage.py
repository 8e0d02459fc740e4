"""Coverage curves: how accurate a specialist is on the answers it is sure of.

Sort the answers by confidence, highest first. Keeping only those at or above a
threshold, the *coverage* is the share kept and the *accuracy* is the share of
kept answers that are correct. Lowering the threshold trades accuracy for
coverage; the router keeps what is above the threshold and sends the rest to
the large model.

Ties in confidence are kept or dropped together (a threshold cannot split
them), so the curve has one point per distinct confidence.

A point estimate on a few dozen answers promises more than it delivers, so a threshold
can be chosen on a statistical bound instead: :func:`clopper_pearson_lower` is the
exact one-sided lower bound on a share (``k`` right of ``n``) at a confidence level,
and ``threshold_for(..., confidence=0.95)`` keeps only thresholds whose kept answers'
lower bound reaches the target. The bound of a threshold picked that way is optimistic
on the data that picked it (the best of many tries); :func:`certified_threshold` tests
a few thresholds fixed by coverage, each at a confidence raised for their number (the
union bound), so that the chosen threshold's bound holds on the same answers that chose
it: the flywheel's way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "CERTIFY_LEVELS",
    "CoveragePoint",
    "accuracy_at_coverage",
    "certified_confidence",
    "certified_threshold",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "coverage_at_accuracy",
    "coverage_curve",
    "min_answers",
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
    confidences: Sequence[float],
    correct: Sequence[bool],
    target_accuracy: float,
    min_kept: int = 1,
    confidence: float | None = None,
) -> float | None:
    """The lowest threshold whose kept answers reach ``target_accuracy`` (at least ``min_kept`` of them).

    With ``confidence`` (say 0.95), the kept answers must reach the target with that
    confidence: the one-sided Clopper–Pearson lower bound on their accuracy, not the
    accuracy itself, must reach it. No correction is made for scanning many thresholds,
    so the chosen threshold's bound on these answers is optimistic; check it on held-out
    answers with :func:`clopper_pearson_lower` (one test of one fixed threshold, exact).

    Picked on validation data; ``None`` when no threshold reaches the target.
    """
    best: float | None = None
    for p in coverage_curve(confidences, correct):
        if p.kept < min_kept or p.accuracy < target_accuracy - 1e-12:
            continue  # the bound is below the accuracy: no need to compute it
        right = round(p.accuracy * p.kept)
        if confidence is None or _bound_reaches(right, p.kept, target_accuracy, confidence):
            best = p.threshold  # points go down in threshold, so the last one that passes is lowest
    return best


#: Coverage levels :func:`certified_threshold` tests (5%, 10%, …, 100%); each at ``1 - (1 - c) / LEVELS``.
CERTIFY_LEVELS = 20


def certified_confidence(confidence: float, levels: int = CERTIFY_LEVELS) -> float:
    """The confidence each of ``levels`` tests is made at, so that all hold at ``confidence`` together."""
    return 1.0 - (1.0 - confidence) / levels


def certified_threshold(
    confidences: Sequence[float],
    correct: Sequence[bool],
    target_accuracy: float,
    confidence: float = 0.95,
    levels: int = CERTIFY_LEVELS,
) -> float | None:
    """The lowest threshold whose kept answers reach ``target_accuracy`` with ``confidence``,
    chosen and certified on the same answers.

    The thresholds tested are those keeping 1/``levels``, 2/``levels``, … of the answers
    (ties kept together; they depend on the confidences only, never on which answers are
    right). Each is tested by its kept answers' one-sided Clopper–Pearson lower bound at
    :func:`certified_confidence` (the union bound: with 20 levels at 95%, each at 99.75%),
    so whichever passes, and the lowest passing one chosen, holds at ``confidence`` with
    the scan accounted for. A level keeping fewer answers than any bound needs
    (:func:`min_answers`) is skipped. ``None`` when no level passes.
    """
    _check(confidences, correct)
    each = certified_confidence(confidence, levels)
    need = min_answers(target_accuracy, each)
    n = len(confidences)
    if need is None or n == 0:
        return None
    curve = coverage_curve(confidences, correct)
    best: float | None = None
    i = -1
    for j in range(1, levels + 1):
        goal = math.ceil(j * n / levels)
        while i + 1 < len(curve) and curve[i + 1].kept <= goal:
            i += 1
        if i < 0 or curve[i].kept < need:
            continue
        p = curve[i]
        if _bound_reaches(round(p.accuracy * p.kept), p.kept, target_accuracy, each):
            best = p.threshold  # later levels keep more: a lower threshold
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


# ---------------------------------------------------------------- bounds on a share


def clopper_pearson_lower(k: int, n: int, confidence: float = 0.95) -> float:
    """The one-sided Clopper–Pearson lower bound on a share with ``k`` successes in ``n`` trials.

    The true share is at least this with probability ``confidence`` (exact, never
    below the nominal level): the ``1 - confidence`` quantile of Beta(k, n - k + 1).
    0.0 when ``k`` is 0 (or ``n`` is).
    """
    _check_counts(k, n, confidence)
    if k == 0:
        return 0.0
    alpha = 1.0 - confidence
    if k == n:
        return alpha ** (1.0 / n)  # closed form: P(all n right | p) = p**n
    lo, hi = 0.0, 1.0
    for _ in range(80):  # bisection: P(X >= k | p) grows with p
        mid = (lo + hi) / 2
        if _binom_sf(k, n, mid) > alpha:
            hi = mid
        else:
            lo = mid
    return lo


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """The one-sided Clopper–Pearson upper bound on a share, ``k`` right of ``n`` (1.0 for n = 0)."""
    _check_counts(k, n, confidence)
    return 1.0 - clopper_pearson_lower(n - k, n, confidence)


def min_answers(target_accuracy: float, confidence: float = 0.95) -> int | None:
    """The fewest answers whose lower bound can reach ``target_accuracy``, all of them right.

    With fewer, no threshold can be promised at that confidence, whatever the model does
    (59 answers for 95% at 95% confidence). ``None`` for a target of 1: no finite sample
    promises perfection.
    """
    if target_accuracy >= 1.0:
        return None
    if target_accuracy <= 0.0:
        return 1
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log(target_accuracy)))
    while (1.0 - confidence) ** (1.0 / n) < target_accuracy:  # float rounding at the boundary
        n += 1
    return n


def _check_counts(k: int, n: int, confidence: float) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _bound_reaches(k: int, n: int, target: float, confidence: float) -> bool:
    """Whether ``clopper_pearson_lower(k, n, confidence) >= target``, from one tail probability."""
    if k == 0:
        return target <= 0.0
    return _binom_sf(k, n, target) <= 1.0 - confidence


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), 1 <= k <= n: the regularized incomplete beta I_p(k, n - k + 1)."""
    return _betainc(float(k), float(n - k + 1), p)


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h
