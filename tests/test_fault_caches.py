"""Fault classes of the core and its caches: lone surrogates, float-range extremes, corrupt result
entries, a long query with a pair cache, and a hung (SIGSTOPped) real Redis."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from loopback.redis_server import RedisServer
from rerank_prod import (
    Candidate,
    InMemoryCache,
    RedisCache,
    Reranker,
    ResultCache,
    ScoreCache,
    SourceKind,
    WeightedFusion,
)
from rerank_prod import cache as cache_module
from rerank_prod.cache import CACHE_FORMAT_VERSION, digest
from tests.support import ConstantTimeScorer

QUERY = "vitamin d and bone fractures"
PASSAGES = ["vitamin d lowers fracture risk", "mice on a high-fat diet", "bone density and vitamin d"]


async def rerank(reranker: Reranker, mode: str, query: str, candidates: list):
    return reranker.rerank(query, candidates) if mode == "sync" else await reranker.arerank(query, candidates)


def caching(backend, **options) -> Reranker:
    return Reranker(ConstantTimeScorer(), result_cache=ResultCache(backend), score_cache=ScoreCache(backend), **options)


# --- 1: a lone surrogate never turns a cache into a crash ----------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_lone_surrogates_are_cached_like_any_text(mode: str) -> None:
    reranker = caching(InMemoryCache())
    broken = json.loads('"vitamin d \\ud800 bones"')  # what a badly decoded document gives
    first = await rerank(reranker, mode, broken, [broken, "mice", "\udfff lone low surrogate"])
    again = await rerank(reranker, mode, broken, [broken, "mice", "\udfff lone low surrogate"])
    assert first.source.kind is SourceKind.MODEL and again.source.kind is SourceKind.CACHE
    assert reranker.metrics.snapshot()["cache"]["result"]["errors"] == 0


def test_distinct_surrogate_strings_get_distinct_keys() -> None:
    keys = {digest(text) for text in ("\ud800", "\ud801", "\udfff", "\ufffd", "?", "")}
    assert len(keys) == 6
    assert digest("vitamin d") == hashlib.sha256(b'["vitamin d"]').hexdigest()  # valid text: keys unchanged


# --- 2: finite scores in, finite scores out ------------------------------------------------------


@pytest.mark.parametrize("normalization", ["minmax", "zscore", "sigmoid", "none"])
def test_fusion_over_the_whole_float_range_is_finite(normalization: str) -> None:
    fusion = WeightedFusion(rerank_normalization=normalization, retrieval_normalization=normalization)
    reranker = Reranker(ConstantTimeScorer(), fusion=fusion, result_cache=ResultCache(InMemoryCache()))
    candidates = [
        Candidate(PASSAGES[0], retrieval_score=1e308),
        Candidate(PASSAGES[1], retrieval_score=-1e308),
        Candidate(PASSAGES[2], retrieval_score=1.7976931348623157e308),
    ]
    for _ in range(2):  # model, then the result-cache path
        result = reranker.rerank(QUERY, candidates)
        scores = [item.relevance_score for item in result]
        assert all(math.isfinite(score) for score in scores), scores
        assert scores == sorted(scores, reverse=True)
    assert result.source.kind is SourceKind.CACHE


# --- 6: corrupt result entries are misses, counted as errors -------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        [[0, float("nan"), 0.5], [1, 0.2, 0.2], [2, 0.1, 0.1]],
        [[0, float("inf"), 0.5], [1, 0.2, 0.2], [2, 0.1, 0.1]],
        [[0, 0.9, float("-inf")], [1, 0.2, 0.2], [2, 0.1, 0.1]],
        [[0, 0.1, 0.1], [1, 0.2, 0.2], [2, 0.9, 0.9]],  # lowest first
        [[0, 0.9, 0.9], [0, 0.2, 0.2], [2, 0.1, 0.1]],  # a rank twice
        [[0, 0.9, 0.9], [1, 0.2, 0.2], [7, 0.1, 0.1]],  # a rank that does not exist
        [[True, 0.9, 0.9], [1, 0.2, 0.2], [2, 0.1, 0.1]],
        [[0, "0.9", 0.9], [1, 0.2, 0.2], [2, 0.1, 0.1]],
    ],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_implausible_result_entries_are_misses(entry: list, mode: str) -> None:
    backend = InMemoryCache()
    reranker = Reranker(ConstantTimeScorer(), result_cache=ResultCache(backend))
    key = reranker.result_cache.key(reranker.cache_identity, QUERY, [Candidate(text) for text in PASSAGES])
    payload = json.dumps({"v": CACHE_FORMAT_VERSION, "d": entry}).encode()  # json writes NaN/Infinity
    backend.set_many({key: payload})
    result = await rerank(reranker, mode, QUERY, PASSAGES)
    assert result.source.kind is SourceKind.MODEL
    assert all(math.isfinite(item.relevance_score) for item in result)
    assert reranker.metrics.snapshot()["cache"]["result"]["errors"] == 1


def test_a_plausible_result_entry_is_served() -> None:
    backend = InMemoryCache()
    reranker = Reranker(ConstantTimeScorer(), result_cache=ResultCache(backend))
    key = reranker.result_cache.key(reranker.cache_identity, QUERY, [Candidate(text) for text in PASSAGES])
    entry = [[2, 0.9, 0.9], [0, 0.9, 0.8], [1, 0.1, None]]  # ties allowed, a fallback score may be None
    backend.set_many({key: json.dumps({"v": CACHE_FORMAT_VERSION, "d": entry}).encode()})
    result = reranker.rerank(QUERY, PASSAGES)
    assert str(result.source) == "cache" and [item.original_rank for item in result] == [2, 0, 1]


# --- a cache backend that misbehaves is never the reason a call fails ---------------------------


class AnsweringNonsense(InMemoryCache):
    """A backend whose reads return the wrong number of values and writes raise odd errors."""

    def get_many(self, keys):
        return [b"not json", 42]

    def set_many(self, items, ttl_s=None):
        raise RecursionError("a backend bug")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_nonsensical_backend_means_no_cache(mode: str) -> None:
    reranker = caching(AnsweringNonsense())
    result = await rerank(reranker, mode, QUERY, PASSAGES)
    assert result.source.kind is SourceKind.MODEL
    assert reranker.metrics.snapshot()["cache"]["result"]["errors"] >= 1


# --- 8: a long query is hashed once per call, not once per pair ------------------------------------


def test_the_query_is_hashed_once_for_all_pair_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = []
    real_sha256 = hashlib.sha256

    def counting_sha256(data: bytes = b""):
        hashed.append(len(data))
        return real_sha256(data)

    monkeypatch.setattr(cache_module.hashlib, "sha256", counting_sha256)
    query = "vitamin d " * 100_000  # 1 MB
    keys = ScoreCache(InMemoryCache()).keys("scorer", query, [f"passage {i}" for i in range(200)])
    assert len(set(keys)) == 200
    assert sum(hashed) < 1.1 * len(query) + 200 * 200  # the query once, then short per-pair payloads


# --- 5: a hung Redis (SIGSTOP) costs one bounded wait, then is skipped until it answers again -----


@contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_hung_redis_is_bounded_then_skipped_then_used_again(redis_server: RedisServer, mode: str) -> None:
    backend = RedisCache(redis_server.url)
    result_cache, score_cache = ResultCache(backend, timeout_s=0.05), ScoreCache(backend, timeout_s=0.05)
    reranker = Reranker(ConstantTimeScorer(), result_cache=result_cache, score_cache=score_cache)
    await rerank(reranker, mode, QUERY, PASSAGES)
    assert (await rerank(reranker, mode, QUERY, PASSAGES)).source.kind is SourceKind.CACHE
    breaker = result_cache._guard.breaker
    with paused(redis_server):
        latencies = []
        for _ in range(5):
            started = time.perf_counter()
            hung = await rerank(reranker, mode, QUERY + " again", PASSAGES)
            latencies.append(time.perf_counter() - started)
            assert hung.source.kind is SourceKind.MODEL  # "no cache" never becomes "no model"
        assert breaker.state == "open"
    assert latencies[0] < 0.05 + 0.1  # one bounded wait; the rest of that call skipped Redis
    assert max(latencies[1:]) < 0.03  # later calls do not touch Redis while its breaker is open
    breaker.cooldown_s = 0.2  # heal faster than the default for the test
    deadline = time.monotonic() + 5
    while breaker.state != "closed" and time.monotonic() < deadline:
        await rerank(reranker, mode, QUERY, PASSAGES)
        time.sleep(0.05)
    assert breaker.state == "closed"
    assert (await rerank(reranker, mode, QUERY, PASSAGES)).source.kind is SourceKind.CACHE
