"""In-memory cache backend, cache keys, expiry, and the two cache layers inside the pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from rerank_prod import (
    Candidate,
    InMemoryCache,
    Reranker,
    RerankMetrics,
    ResultCache,
    ScoreCache,
    SourceKind,
    WeightedFusion,
)
from tests.support import ConstantTimeScorer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    cache = InMemoryCache(ttl_s=10, timer=clock)
    cache.set_many({"a": b"1"})
    cache.set_many({"b": b"2"}, ttl_s=100)
    clock.now = 9.9
    assert cache.get_many(["a", "b"]) == [b"1", b"2"]
    clock.now = 10.1
    assert cache.get_many(["a", "b"]) == [None, b"2"]
    clock.now = 100.1
    assert cache.get_many(["b"]) == [None]
    assert len(cache) == 0


def test_lru_eviction() -> None:
    cache = InMemoryCache(maxsize=2)
    cache.set_many({"a": b"1", "b": b"2"})
    cache.get_many(["a"])  # a is now most recently used
    cache.set_many({"c": b"3"})
    assert cache.get_many(["a", "b", "c"]) == [b"1", None, b"3"]


@pytest.mark.parametrize("kwargs", [{"maxsize": 0}, {"ttl_s": 0}, {"ttl_s": -1}])
def test_bad_cache_configuration(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        InMemoryCache(**kwargs)


def test_layers_require_a_backend() -> None:
    with pytest.raises(TypeError, match="CacheBackend"):
        ResultCache({})  # type: ignore[arg-type]


def test_result_keys_change_with_everything_that_changes_the_ranking() -> None:
    layer = ResultCache(InMemoryCache())
    base = layer.key("model-a||pure", "q", [Candidate("x", retrieval_score=1.0)])
    assert base == layer.key("model-a||pure", "q", [Candidate("x", id="other-id", retrieval_score=1.0)])
    assert base != layer.key("model-b||pure", "q", [Candidate("x", retrieval_score=1.0)])
    assert base != layer.key("model-a||weighted", "q", [Candidate("x", retrieval_score=1.0)])
    assert base != layer.key("model-a||pure", "q2", [Candidate("x", retrieval_score=1.0)])
    assert base != layer.key("model-a||pure", "q", [Candidate("y", retrieval_score=1.0)])
    assert base != layer.key("model-a||pure", "q", [Candidate("x", retrieval_score=2.0)])
    assert "q" not in base.rsplit(":", 1)[1] and base.startswith("rerank-prod:v1:result:")


def test_result_cache_serves_the_second_call() -> None:
    scorer = ConstantTimeScorer()
    reranker = Reranker(scorer, result_cache=ResultCache(InMemoryCache()), top_n=2)
    first = reranker.rerank("red fox", ["a red fox", "blue sky", "red sky"])
    second = reranker.rerank("red fox", ["a red fox", "blue sky", "red sky"], top_n=1)
    assert first.source.kind is SourceKind.MODEL and second.source.kind is SourceKind.CACHE
    assert [i.original_rank for i in second] == [first[0].original_rank]
    assert second[0].relevance_score == first[0].relevance_score
    assert second[0].metadata()["rerank_source"] == "cache"
    assert len(scorer.scored_texts) == 3
    assert reranker.result_cache.stats.snapshot() == {"hits": 1, "misses": 1, "errors": 0}


def test_changing_fusion_misses_the_result_cache() -> None:
    backend = InMemoryCache()
    scorer = ConstantTimeScorer()
    Reranker(scorer, result_cache=ResultCache(backend)).rerank("red", ["red", "blue"])
    fused = Reranker(scorer, result_cache=ResultCache(backend), fusion=WeightedFusion()).rerank("red", ["red", "blue"])
    assert fused.source.kind is SourceKind.MODEL


def test_pair_cache_scores_only_new_pairs() -> None:
    scorer = ConstantTimeScorer()
    reranker = Reranker(scorer, score_cache=ScoreCache(InMemoryCache()))
    reranker.rerank("red fox", ["a red fox", "blue sky"])
    result = reranker.rerank("red fox", ["blue sky", "red sky", "a red fox"])
    assert scorer.scored_texts == ["a red fox", "blue sky", "red sky"]
    assert [item.candidate.text for item in result] == ["a red fox", "red sky", "blue sky"]
    assert reranker.score_cache.stats.snapshot() == {"hits": 2, "misses": 3, "errors": 0}


async def test_pair_cache_async_path() -> None:
    scorer = ConstantTimeScorer()
    reranker = Reranker(scorer, score_cache=ScoreCache(InMemoryCache()), result_cache=ResultCache(InMemoryCache()))
    await reranker.arerank("red fox", ["a red fox", "blue sky"])
    result = await reranker.arerank("red fox", ["blue sky", "a red fox"])
    assert scorer.scored_texts == ["a red fox", "blue sky"]
    assert result[0].candidate.text == "a red fox"


def test_corrupt_and_foreign_entries_are_misses() -> None:
    backend = InMemoryCache()
    scorer = ConstantTimeScorer()
    reranker = Reranker(scorer, result_cache=ResultCache(backend), score_cache=ScoreCache(backend))
    reranker.rerank("red", ["red", "blue"])
    for key in list(backend._entries):
        backend.set_many({key: b"\x00not json"})
    result = reranker.rerank("red", ["red", "blue"])
    assert result.source.kind is SourceKind.MODEL and result[0].candidate.text == "red"
    assert len(scorer.scored_texts) == 4


class BrokenBackend:
    """A cache server that is down: every operation raises."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise ConnectionError("cache down")

    def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        raise ConnectionError("cache down")

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise ConnectionError("cache down")

    async def aset_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        raise ConnectionError("cache down")


async def test_a_failing_cache_never_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    layers = {"result_cache": ResultCache(BrokenBackend()), "score_cache": ScoreCache(BrokenBackend())}
    reranker = Reranker(ConstantTimeScorer(), **layers)
    assert reranker.rerank("red", ["blue", "red"])[0].candidate.text == "red"
    assert (await reranker.arerank("red", ["blue", "red"]))[0].candidate.text == "red"
    assert layers["result_cache"].stats.errors == 4 and layers["score_cache"].stats.errors == 4
    assert "cache read failed" in caplog.text


def test_pair_cache_hits_are_labelled_per_candidate() -> None:
    reranker = Reranker(ConstantTimeScorer(), score_cache=ScoreCache(InMemoryCache()))
    reranker.rerank("red fox", ["a red fox", "blue sky"])
    mixed = reranker.rerank("red fox", ["blue sky", "red sky", "a red fox"])
    assert {i.candidate.text: str(i.source) for i in mixed} == {
        "blue sky": "cache:score",
        "a red fox": "cache:score",
        "red sky": "model",
    }
    assert mixed.source.kind is SourceKind.MODEL  # the model ran for part of the call
    cached = reranker.rerank("red fox", ["red sky", "blue sky"])
    assert str(cached.source) == "cache:score"
    assert reranker.metrics.snapshot()["by_source"]["cache"] == 1


def test_metrics_sum_layers_shared_by_rerankers() -> None:
    metrics = RerankMetrics()
    shared_layer = ResultCache(InMemoryCache())
    for _ in range(2):  # two rerankers, one layer object: counted once
        Reranker(ConstantTimeScorer(), result_cache=shared_layer, metrics=metrics).rerank("red", ["red"])
    Reranker(ConstantTimeScorer(), result_cache=ResultCache(InMemoryCache()), metrics=metrics).rerank("red", ["red"])
    assert metrics.snapshot()["cache"] == {"result": {"hits": 1, "misses": 2, "errors": 0}}
