"""Coverage curve and threshold choice on synthetic confidences with a known answer."""

from __future__ import annotations

import random

import pytest

from smallfleet.evals.coverage import (
    accuracy_at_coverage,
    coverage_at_accuracy,
    coverage_curve,
    threshold_for,
)

# Ten answers, most confident first; the 4th and the last three are wrong.
CONF = [0.99, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
OK = [True, True, True, False, True, True, True, False, False, False]


def test_curve_hand_checked() -> None:
    curve = coverage_curve(CONF, OK)
    assert [p.kept for p in curve] == list(range(1, 11))
    assert curve[2].accuracy == 1.0 and curve[2].threshold == 0.9
    assert curve[3].accuracy == pytest.approx(0.75)
    assert curve[6].accuracy == pytest.approx(6 / 7)
    assert curve[-1].coverage == 1.0 and curve[-1].accuracy == pytest.approx(0.6)


def test_threshold_for_picks_lowest_passing() -> None:
    assert threshold_for(CONF, OK, 1.0) == 0.9
    assert threshold_for(CONF, OK, 0.85) == 0.6  # 6/7 ≈ 0.857 at 0.6; 6/8 at 0.5 fails
    assert threshold_for(CONF, OK, 0.5) == 0.3
    assert threshold_for(CONF, OK, 1.0, min_kept=4) is None
    assert threshold_for([0.9, 0.8], [False, False], 0.5) is None
    assert threshold_for([], [], 0.9) is None


def test_ties_are_kept_together() -> None:
    curve = coverage_curve([0.9, 0.9, 0.5], [True, False, True])
    assert [(p.threshold, p.kept) for p in curve] == [(0.9, 2), (0.5, 3)]
    assert curve[0].accuracy == 0.5


def test_accuracy_and_coverage_lookups() -> None:
    assert accuracy_at_coverage(CONF, OK, 0.3) == 1.0
    assert accuracy_at_coverage(CONF, OK, 0.4) == pytest.approx(0.75)
    assert accuracy_at_coverage(CONF, OK, 1.0) == pytest.approx(0.6)
    assert coverage_at_accuracy(CONF, OK, 0.85) == pytest.approx(0.7)
    assert coverage_at_accuracy(CONF, OK, 1.0) == pytest.approx(0.3)
    assert coverage_at_accuracy([0.5], [False], 0.9) == 0.0
    with pytest.raises(ValueError):
        accuracy_at_coverage(CONF, OK, 0.0)
    with pytest.raises(ValueError):
        coverage_curve([0.1], [])


def test_calibrated_synthetic_threshold_generalises() -> None:
    # Confidence c is correct with probability c: a threshold picked on validation for 0.9
    # must sit near 0.8 and hold on fresh test data drawn the same way.
    rng = random.Random(0)

    def draw(n: int) -> tuple[list[float], list[bool]]:
        conf = [rng.uniform(0.5, 1.0) for _ in range(n)]
        return conf, [rng.random() < c for c in conf]

    conf, ok = draw(4000)
    t = threshold_for(conf, ok, 0.9, min_kept=100)
    assert t is not None and 0.75 < t < 0.85  # mean of U(t, 1) is 0.9 at t = 0.8
    test_conf, test_ok = draw(4000)
    kept = [o for c, o in zip(test_conf, test_ok, strict=True) if c >= t]
    assert sum(kept) / len(kept) > 0.88


def test_threshold_for_with_confidence_asks_the_lower_bound_to_reach_the_target() -> None:
    # 100 answers; the 60 most confident are all right, then one in five is wrong
    conf = [1 - i / 100 for i in range(100)]
    ok = [i < 60 or i % 5 != 0 for i in range(100)]
    point = threshold_for(conf, ok, 0.95)
    bounded = threshold_for(conf, ok, 0.95, confidence=0.95)
    assert point is not None and bounded is not None
    assert bounded > point  # the bound asks for more: less coverage at the same target
    assert bounded == pytest.approx(0.41)  # 60/60 reaches 95% at 95%; 60/61 and after do not
    assert threshold_for(conf, ok, 0.99, confidence=0.95) is None  # 299 answers, all right, for 99%
