"""The bound a route's promise rests on: the exact one-sided Clopper–Pearson bound on a share."""

from __future__ import annotations

import random

import pytest

from smallfleet.evals.coverage import (
    certified_threshold,
    clopper_pearson_lower,
    clopper_pearson_upper,
    min_answers,
    threshold_for,
)


def test_all_right_has_a_closed_form() -> None:
    # P(n right of n | p) = p**n, so the bound is (1 - confidence) ** (1 / n)
    for n in (1, 17, 59, 400):
        assert clopper_pearson_lower(n, n, 0.95) == pytest.approx(0.05 ** (1 / n))
    assert clopper_pearson_lower(0, 10) == 0.0 and clopper_pearson_upper(10, 10) == 1.0
    assert clopper_pearson_lower(0, 0) == 0.0 and clopper_pearson_upper(0, 0) == 1.0


def test_hand_checked_values() -> None:
    # 0 right of 10: the upper bound solves (1 - p)**10 = 0.05
    assert clopper_pearson_upper(0, 10, 0.95) == pytest.approx(1 - 0.05 ** (1 / 10))
    # 1 right of 2: P(X >= 1 | p) = 1 - (1 - p)**2 = 0.05
    assert clopper_pearson_lower(1, 2, 0.95) == pytest.approx(1 - 0.95**0.5)
    lower, upper = clopper_pearson_lower(92, 100), clopper_pearson_upper(92, 100)
    assert 0.85 < lower < 0.92 < upper < 0.97


def test_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    for _ in range(300):
        n = rng.choice([1, 5, 17, 63, 250, 1000, 20_000])
        k = rng.randint(1, n - 1) if n > 1 else 1
        c = rng.choice([0.8, 0.9, 0.95, 0.99])
        assert clopper_pearson_lower(k, n, c) == pytest.approx(stats.beta.ppf(1 - c, k, n - k + 1), abs=1e-9)
        if k < n:
            assert clopper_pearson_upper(k, n, c) == pytest.approx(stats.beta.ppf(c, k + 1, n - k), abs=1e-9)


def test_the_bound_holds_its_confidence() -> None:
    # drawn 2000 times at a true share of 0.9, the 95% lower bound is above 0.9 at most 5% of the time
    rng = random.Random(5)
    misses = sum(
        clopper_pearson_lower(sum(rng.random() < 0.9 for _ in range(60)), 60) > 0.9 for _ in range(2000)
    )
    assert misses / 2000 <= 0.05 + 0.015


def test_min_answers() -> None:
    assert min_answers(0.95, 0.95) == 59  # 0.95**59 < 0.05 <= 0.95**58
    assert clopper_pearson_lower(59, 59) >= 0.95 > clopper_pearson_lower(58, 58)
    assert min_answers(0.8, 0.95) == 14
    assert min_answers(0.99, 0.95) == 299
    assert min_answers(1.0) is None


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        clopper_pearson_lower(3, 2)
    with pytest.raises(ValueError):
        clopper_pearson_lower(1, 2, confidence=1.0)


def test_a_threshold_chosen_on_a_small_validation_set_is_refused() -> None:
    """Where the bound cannot reach the target, however good the answers look."""
    # 40 validation answers, every one right: the point estimate says 100% at any threshold,
    # yet with 40 answers the 95% lower bound is 0.05 ** (1 / 40) ≈ 92.8% < 95%
    rng = random.Random(7)
    conf = [rng.uniform(0.5, 1.0) for _ in range(40)]
    ok = [True] * 40
    assert threshold_for(conf, ok, 0.95) == min(conf)
    assert threshold_for(conf, ok, 0.95, confidence=0.95) is None
    # the same answers, 59 of them, reach it; 95% at 90% confidence takes 45
    conf59 = [rng.uniform(0.5, 1.0) for _ in range(59)]
    assert threshold_for(conf59, [True] * 59, 0.95, confidence=0.95) == min(conf59)
    assert threshold_for(conf, ok, 0.95, confidence=0.90) is None
    assert min_answers(0.95, 0.90) == 45


def test_a_certified_threshold_holds_without_a_correction_for_the_scan() -> None:
    """Chosen and certified on one set of answers: too few → refused; an early error does not end it."""
    rng = random.Random(3)
    conf = [rng.uniform(0.5, 1.0) for _ in range(40)]
    assert certified_threshold(conf, [True] * 40, 0.95) is None  # 40 answers cannot promise 95%
    # 2,000 answers: the top 80% are 99% right, the rest 60%
    conf = sorted((rng.random() for _ in range(2000)), reverse=True)
    ok = [rng.random() < (0.99 if i < 1600 else 0.6) for i in range(2000)]
    ok[0] = False  # the most confident answer is wrong: no matter, each coverage level is tested alone
    thr = certified_threshold(conf, ok, 0.95)
    assert thr is not None
    kept = [o for c, o in zip(conf, ok, strict=True) if c >= thr]
    assert 0.7 <= len(kept) / 2000 <= 0.95
    assert clopper_pearson_lower(sum(kept), len(kept), 0.95) >= 0.95
    # the guarantee in simulation: the true accuracy above the chosen threshold reaches the target
    misses = 0
    for trial in range(200):
        r = random.Random(trial)
        c = [r.random() for _ in range(300)]
        truth = [0.9 + 0.1 * x for x in c]  # P(right | confidence x)
        o = [r.random() < t for t in truth]
        t = certified_threshold(c, o, 0.95)
        if t is not None:
            above = [x for x in truth if x >= 0.9 + 0.1 * t]
            misses += sum(above) / len(above) < 0.95  # expected accuracy of what is kept
    assert misses <= 0.05 * 200 + 5
