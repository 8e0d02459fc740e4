"""The shared embedding cache: one embedding per text, however many parts ask for it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from smallfleet import encoders
from smallfleet.encoders import clear_embedding_cache, embed, embed_cached, embed_one, unseen


@pytest.fixture(autouse=True)
def _empty_cache():
    clear_embedding_cache()
    yield
    clear_embedding_cache()


def _calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the texts the encoder model itself is run on (batched and single paths)."""
    seen: list[int] = []
    batched, single = encoders.embed, encoders._embed_single

    def counting_embed(texts, *a, **k):
        seen.append(len(texts))
        return batched(texts, *a, **k)

    def counting_single(text, enc):
        seen.append(1)
        return single(text, enc)

    monkeypatch.setattr(encoders, "embed", counting_embed)
    monkeypatch.setattr(encoders, "_embed_single", counting_single)
    return seen


def test_one_text_is_embedded_once_across_the_batched_and_single_paths(monkeypatch):
    seen = _calls(monkeypatch)
    texts = ["where is my parcel?", "refund order A-1234 please", "where is my parcel?"]
    first = embed_cached(texts)
    assert sum(seen) == 2  # duplicates in one call are embedded once
    again = embed_cached(texts[:2])
    one = embed_one("refund order A-1234 please")
    assert sum(seen) == 2  # both served from the cache
    np.testing.assert_array_equal(again, first[:2])
    np.testing.assert_array_equal(one, first[1])
    # the default encoder's key is the same whether it is named or not
    named = embed_cached(texts[:1], encoders.default_encoder())
    assert sum(seen) == 2
    np.testing.assert_array_equal(named[0], first[0])


def test_single_and_batched_embeddings_agree_and_are_normalised():
    text = "My order never arrived and I want my money back."
    single = embed_one(text)
    clear_embedding_cache()
    batched = embed([text, "a longer text so that the first one is padded in its batch"])[0]
    assert abs(float(np.linalg.norm(single)) - 1.0) < 1e-5
    assert float(single @ batched) > 0.9999


def test_unseen_texts_are_embedded_afresh_and_not_kept_others_are_cached(monkeypatch):
    seen = _calls(monkeypatch)
    embed_cached(["message one", "message two"])
    assert sum(seen) == 2
    with unseen(["message one"]):
        embed_one("message one")
        embed_cached(["message one", "message two", "a tool description"])
        embed_cached(["a tool description"])
        assert sum(seen) == 2 + 1 + 2  # "message one" twice, the description once
    embed_one("message one")
    embed_one("a tool description")
    assert sum(seen) == 5  # the old entry stands, the description was kept
    clear_embedding_cache()
    embed_one("message one")
    assert sum(seen) == 6


def test_texts_embedded_one_at_a_time_are_kept_in_a_small_bounded_cache(monkeypatch):
    """A long-running router embeds one message per request: those are kept for the request
    (its specialist reads them) within a small bound, not in the curation-sized cache."""
    monkeypatch.setattr(encoders, "_CACHE", encoders.EmbeddingCache(single_max=3))
    seen = _calls(monkeypatch)
    for i in range(5):
        embed_one(f"request number {i}")
        embed_cached([f"request number {i}"])  # the specialist's read: a hit
    assert sum(seen) == 5
    assert encoders._CACHE.sizes() == (0, 3)  # three kept one at a time, none batched
    embed_cached(["request number 4"])
    embed_cached(["request number 0"])  # evicted: embedded again
    assert sum(seen) == 6


def test_embeddings_handed_to_another_process_are_not_computed_again(monkeypatch):
    """What a flywheel worker gets: the parent's embeddings of its texts, kept, not recomputed."""
    import pickle

    texts = ["where is my parcel ORD-1", "change my address please"]
    want = embed_cached(texts)
    handed = pickle.loads(pickle.dumps(encoders.cached_embeddings([*texts, "never embedded"])))
    assert sorted(t for _, t in handed) == sorted(texts)
    clear_embedding_cache()
    seen = _calls(monkeypatch)
    encoders.remember_embeddings(handed)
    np.testing.assert_array_equal(embed_cached(texts), want)
    assert seen == []


def test_the_embedding_dtype_casts_the_encoder_and_keeps_the_vectors_float32():
    """``set_dtype``: bfloat16 embeddings (what ``auto`` gives on CPUs with native bf16) are
    float32 vectors close to the float32 ones; a change drops what was computed the other way."""
    import torch

    from smallfleet.errors import UserError

    texts = ["Where is my order ORD-1234?", "Book a table for two at 7pm in Lisbon", "hi"]
    got = {}
    try:
        for dtype in ("float32", "bfloat16"):
            encoders.set_dtype(dtype)
            assert next(encoders.load_encoder().parameters()).dtype == getattr(torch, dtype)
            got[dtype] = embed_cached(texts)
            single = embed_one("a message embedded alone")
            assert got[dtype].dtype == np.float32 and single.dtype == np.float32
        assert encoders.cached_embeddings(["a message embedded alone"])  # kept under bfloat16 …
        encoders.set_dtype("float32")
        assert not encoders.cached_embeddings([*texts, "a message embedded alone"])  # … dropped on a change
        cos = (got["float32"] * got["bfloat16"]).sum(1)
        assert cos.min() > 0.99 and not np.array_equal(got["float32"], got["bfloat16"])
        with pytest.raises(UserError, match="float16"):
            encoders.set_dtype("float16")
    finally:
        encoders.set_dtype("auto")
    assert encoders.inference_dtype() in ("float32", "bfloat16", "int8")
