"""Semantic cache with the real all-MiniLM-L6-v2 embedder and the real cross-encoder."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from loopback.redis_server import RedisServer
from rerank_prod import CrossEncoderScorer, InMemoryCache, RedisCache, Reranker, SemanticCache, SourceKind
from rerank_prod.semantic_cache import VectorIndex
from tests.support import ConstantTimeScorer, CountingScorer

QUERY = "Does smoking increase the risk of lung cancer?"
PARAPHRASES = ["Is lung cancer risk increased by smoking?", "Does smoking raise the risk of lung cancer?"]
UNRELATED = ["Does smoking increase the risk of heart disease?", "What is the capital of France?"]
PASSAGES = [
    "Cigarette smoking is the leading cause of lung cancer, accounting for most cases.",
    "Former smokers keep an elevated risk of lung adenocarcinoma for decades.",
    "Radon exposure is the second most common cause of lung cancer.",
    "Regular exercise lowers resting blood pressure in adults.",
    "Heavy smokers had a twenty-fold higher incidence of squamous cell carcinoma.",
    "Air pollution particulate matter is associated with lung cancer in never-smokers.",
]


def semantic_reranker(scorer, embedder_path: str, backend=None, **options) -> Reranker:
    cache = SemanticCache(backend if backend is not None else InMemoryCache(), embedder_path, **options)
    return Reranker(CountingScorer(scorer), semantic_cache=cache)


def sources(result) -> dict[str, str]:
    return {item.candidate.text: item.metadata()["rerank_source"] for item in result}


def test_paraphrases_hit_and_unrelated_queries_miss(cross_encoder, embedder_path: str) -> None:
    reranker = semantic_reranker(cross_encoder, embedder_path)
    first = reranker.rerank(QUERY, PASSAGES)
    assert len(reranker.scorer.scored_texts) == len(PASSAGES)
    for paraphrase in PARAPHRASES:
        hit = reranker.rerank(paraphrase, PASSAGES)
        assert str(hit.source) == "cache:semantic" and set(sources(hit).values()) == {"cache:semantic"}
        assert [(i.original_rank, i.rerank_score) for i in hit] == [(i.original_rank, i.rerank_score) for i in first]
    assert len(reranker.scorer.scored_texts) == len(PASSAGES)  # no model call for the paraphrases
    for unrelated in UNRELATED:
        assert reranker.rerank(unrelated, PASSAGES).source.kind is SourceKind.MODEL
    assert len(reranker.scorer.scored_texts) == 3 * len(PASSAGES)
    assert reranker.metrics.snapshot()["cache"]["semantic"] == {"hits": 12, "misses": 18, "errors": 0}


async def test_partial_overlap_scores_only_the_unseen_candidates(cross_encoder, embedder_path: str) -> None:
    reranker = semantic_reranker(cross_encoder, embedder_path)
    await reranker.arerank(QUERY, PASSAGES[:3])
    result = await reranker.arerank(PARAPHRASES[0], PASSAGES[1:5])
    assert reranker.scorer.scored_texts == [*PASSAGES[:3], *PASSAGES[3:5]]
    assert sources(result) == {
        **dict.fromkeys(PASSAGES[1:3], "cache:semantic"),
        **dict.fromkeys(PASSAGES[3:5], "model"),
    }
    assert result.source.kind is SourceKind.MODEL
    # the anchor learned the new passages: another paraphrase now needs no model at all
    again = reranker.rerank(PARAPHRASES[1], PASSAGES[:5])
    assert str(again.source) == "cache:semantic" and len(reranker.scorer.scored_texts) == 5


@pytest.mark.parametrize(("mode", "protocol"), [("sync", 2), ("async", 3)])
async def test_replicas_share_semantic_entries_through_redis(
    redis_server: RedisServer, cross_encoder, embedder_path: str, mode: str, protocol: int
) -> None:
    replica_a, replica_b = (
        semantic_reranker(
            cross_encoder, embedder_path, RedisCache(redis_server.url, protocol=protocol), sync_interval_s=0
        )
        for _ in range(2)
    )
    replica_b.rerank("What is the capital of France?", PASSAGES[:1])  # b's index is already synced once
    replica_a.rerank(QUERY, PASSAGES)
    if mode == "sync":
        hit = replica_b.rerank(PARAPHRASES[0], PASSAGES)
    else:
        hit = await replica_b.arerank(PARAPHRASES[0], PASSAGES)
    assert str(hit.source) == "cache:semantic" and replica_b.scorer.scored_texts == PASSAGES[:1]
    fresh = semantic_reranker(cross_encoder, embedder_path, RedisCache(redis_server.url))
    assert str(fresh.rerank(PARAPHRASES[1], PASSAGES).source) == "cache:semantic"  # catches up on start


def test_scorer_or_embedder_change_misses(cross_encoder, cross_encoder_path: str, embedder_path: str) -> None:
    backend = InMemoryCache()
    semantic_reranker(cross_encoder, embedder_path, backend).rerank(QUERY, PASSAGES)
    logits = CrossEncoderScorer(cross_encoder_path, activation="identity")
    assert semantic_reranker(logits, embedder_path, backend).rerank(QUERY, PASSAGES).source.kind is SourceKind.MODEL

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embedder_path, device="cpu")
    for identity in ("minilm-v1", "minilm-v2"):
        cache = SemanticCache(backend, model.encode, embedder_identity=identity)
        reranker = Reranker(CountingScorer(cross_encoder), semantic_cache=cache)
        reranker.rerank(QUERY, PASSAGES)
        assert len(reranker.scorer.scored_texts) == len(PASSAGES)


def test_a_failing_embedder_degrades_to_no_cache(caplog: pytest.LogCaptureFixture) -> None:
    def broken_embedder(query: str) -> list[float]:
        raise ConnectionError("embedding service down")

    cache = SemanticCache(InMemoryCache(), broken_embedder, embedder_identity="remote-embedder")
    reranker = Reranker(ConstantTimeScorer(), semantic_cache=cache)
    with caplog.at_level(logging.WARNING, logger="rerank_prod.cache"):
        result = reranker.rerank("red fox", ["blue sky", "a red fox"])
    assert result[0].candidate.text == "a red fox" and result.source.kind is SourceKind.MODEL
    assert cache.stats.errors == 1 and "semantic cache lookup failed" in caplog.text
    assert len(cache) == 0


def test_corrupt_shared_index_entries_are_ignored(
    redis_server: RedisServer, embedder_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RedisCache(redis_server.url)
    cache = SemanticCache(backend, embedder_path, sync_interval_s=0)
    Reranker(ConstantTimeScorer(), semantic_cache=cache).rerank(QUERY, PASSAGES)
    (log,) = cache._indexes
    nan_vector = np.full(384, np.nan, dtype="<f4").tobytes()
    backend.append_log(
        log, [b"short", b"x" * 64 + b"\x00" * 6, "é".encode() * 32 + b"\x00" * 1536, b"a" * 64 + nan_vector], 100
    )
    with caplog.at_level(logging.WARNING, logger="rerank_prod.cache"):
        hit = Reranker(ConstantTimeScorer(), semantic_cache=cache).rerank(PARAPHRASES[0], PASSAGES)
    assert str(hit.source) == "cache:semantic" and caplog.text.count("malformed semantic index entry") == 4


def test_index_is_bounded_and_evicts_the_least_recently_matched() -> None:
    index = VectorIndex(dim=3, max_entries=3)
    basis = np.eye(3, dtype=np.float32)
    for name, vector in zip("abc", basis, strict=True):
        index.add(name, vector)
    assert index.nearest(basis[0], 0.95) == ("a", 1.0)
    index.add("d", np.array([0.6, 0.8, 0.0], dtype=np.float32))  # evicts b, the least recently matched
    assert len(index) == 3 and "b" not in index and "a" in index
    assert index.nearest(basis[1], 0.95) is None and index.nearest(basis[1], 0.5) == ("d", pytest.approx(0.8))
    with pytest.raises(ValueError, match="3-d"):
        index.nearest(np.ones(4, dtype=np.float32), 0.9)


def test_index_grows_past_its_first_allocation() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(dim=8, max_entries=2500)
    for i, vector in enumerate(vectors):
        index.add(str(i), vector)
    assert len(index) == 2500 and index.nearest(vectors[-1], 0.999) == ("2999", pytest.approx(1.0))


def unit_embedder(query: str) -> list[float]:
    return [1.0, float(len(query))]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"threshold": 0}, ValueError),
        ({"threshold": 1.5}, ValueError),
        ({"max_entries": 0}, ValueError),
        ({"sync_interval_s": -1}, ValueError),
        ({"ttl_s": 0}, ValueError),
        ({"embedder_identity": None}, ValueError),  # a callable needs a name that changes with its vectors
        ({"embedder": 3}, TypeError),
        ({"embedder": " "}, ValueError),
        ({"backend": {}}, TypeError),
    ],
)
def test_bad_semantic_cache_configuration(kwargs: dict, error: type[Exception]) -> None:
    options = {"backend": InMemoryCache(), "embedder": unit_embedder, "embedder_identity": "unit", **kwargs}
    with pytest.raises(error):
        SemanticCache(**options)
