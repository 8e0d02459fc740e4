"""The embedding cache under threads: bounded, least recently used out first, right answers.

The encoder itself is replaced by a deterministic function of the text (the far side of the
seam), so the test measures the cache, not the model, and needs no weights.
"""

from __future__ import annotations

import hashlib
import random
import sys
import threading
from collections.abc import Iterator, Sequence

import pytest

np = pytest.importorskip("numpy")

from smallfleet import encoders  # noqa: E402
from smallfleet.encoders import EmbeddingCache, embed_cached, embed_one  # noqa: E402

DIM = 8


def _vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> EmbeddingCache:
    """A small cache in place of the process's, over a fake encoder that counts its calls."""
    small = EmbeddingCache(batch_max=32, single_max=8)
    monkeypatch.setattr(encoders, "_CACHE", small)

    def fake_embed(texts: Sequence[str], *args: object, **kwargs: object) -> np.ndarray:
        return np.stack([_vector(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)

    monkeypatch.setattr(encoders, "embed", fake_embed)
    monkeypatch.setattr(encoders, "_embed_single", lambda text, enc: _vector(text))
    return small


@pytest.fixture
def contended() -> Iterator[None]:
    """Threads switch every microsecond: the races of an unlocked cache show within the test
    (the module dict this cache replaced raised KeyError here, two threads evicting one key)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("contended")
def test_threads_hammering_the_cache_get_right_answers_within_the_bound(cache: EmbeddingCache) -> None:
    texts = [f"request {i}" for i in range(200)]
    errors: list[BaseException] = []
    over: list[tuple[int, int]] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait()
            for _ in range(300):
                if rng.random() < 0.5:
                    text = rng.choice(texts)
                    np.testing.assert_array_equal(embed_one(text, "enc"), _vector(text))
                else:
                    some = rng.sample(texts, rng.randint(1, 6))
                    got = embed_cached(some, "enc")
                    np.testing.assert_array_equal(got, np.stack([_vector(t) for t in some]))
                batched, single = cache.sizes()
                if batched > cache.batch_max or single > cache.single_max:
                    over.append((batched, single))
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert not over
    assert cache.sizes() == (cache.batch_max, cache.single_max)  # full, and never past the bound


def test_the_least_recently_used_embedding_is_evicted_first() -> None:
    cache = EmbeddingCache(batch_max=2, single_max=2)
    cache.put("enc", {"a": 1, "b": 2})
    assert cache.get("enc", "a") == 1  # "a" is now the most recently used
    cache.put("enc", {"c": 3})
    assert cache.get("enc", "b") is None and cache.get("enc", "a") == 1 and cache.get("enc", "c") == 3
    cache.put("enc", {"x": 9}, batch=False)
    assert cache.sizes() == (2, 1)
    assert cache.entries(["a", "x", "nope"]) == {("enc", "a"): 1, ("enc", "x"): 9}


def test_unseen_blocks_from_two_threads_hide_only_their_own_texts() -> None:
    cache = EmbeddingCache()
    cache.put("enc", {"mine": 1, "yours": 2, "shared": 3})
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with cache.unseen(["yours"]):
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(5)
    with cache.unseen(["mine"]):
        assert cache.get("enc", "mine") is None and cache.get("enc", "yours") is None
        assert cache.get("enc", "shared") == 3
    release.set()
    t.join()
    assert cache.get("enc", "mine") == 1 and cache.get("enc", "yours") == 2
