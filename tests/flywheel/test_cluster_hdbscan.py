"""HDBSCAN's epsilon merge crashes in scikit-learn 1.9 under numpy >= 2.4 on some data: clustering goes on."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import HDBSCAN

from smallfleet.flywheel.cluster import _hdbscan


def _blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 0.05, size=(20, 4))
    return np.concatenate([c + rng.normal(0, 0.02, size=(100, 4)) for c in centres])


def test_tight_blobs_are_clustered_whatever_numpy_does() -> None:
    labels = _hdbscan(HDBSCAN, _blobs(), 10)  # this data reaches the failing branch with numpy 2.4
    assert len(labels) == 2000 and (labels >= 0).any()


def test_a_failing_epsilon_merge_falls_back_to_none() -> None:
    calls: list[float] = []

    class Flaky:
        def __init__(self, cluster_selection_epsilon: float, **kw: object) -> None:
            self.kw = kw
            self.eps = cluster_selection_epsilon
            calls.append(cluster_selection_epsilon)

        def fit_predict(self, z: np.ndarray) -> np.ndarray:
            if self.eps:
                raise TypeError("only 0-dimensional arrays can be converted to Python scalars")
            return HDBSCAN(cluster_selection_epsilon=0.0, **self.kw).fit_predict(z)

    labels = _hdbscan(Flaky, _blobs(), 10)
    assert calls == [0.15, 0.0] and (labels >= 0).any()
