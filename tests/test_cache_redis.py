"""Redis as the shared cache of several replicas, against a real redis-server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from loopback.redis_server import RedisServer
from rerank_prod import (
    CrossEncoderScorer,
    RedisCache,
    Reranker,
    ResultCache,
    ScoreCache,
    SemanticCache,
    SourceKind,
)
from tests.support import ConstantTimeScorer, CountingScorer

QUERY = "Vitamin D supplementation reduces the risk of bone fractures in older adults."
PASSAGES = [
    "Daily vitamin D and calcium supplements lowered hip fracture rates among elderly women.",
    "The reduction in fracture risk was not significant in community-dwelling older men.",
    "Gut microbiota composition changes with a high-fat diet in mice.",
    "Bone mineral density rose after two years of vitamin D3 at 800 IU per day.",
]


async def rerank(reranker: Reranker, mode: str, query: str, passages: list[str]):
    return reranker.rerank(query, passages) if mode == "sync" else await reranker.arerank(query, passages)


def raw_client(server: RedisServer):
    import redis

    return redis.Redis.from_url(server.url)


def caching_reranker(scorer, url: str, **backend_options) -> Reranker:
    backend = RedisCache(url, **backend_options)
    return Reranker(scorer, result_cache=ResultCache(backend), score_cache=ScoreCache(backend))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_two_replicas_share_hits_through_redis(redis_server: RedisServer, cross_encoder, mode: str) -> None:
    replica_a, replica_b = (caching_reranker(CountingScorer(cross_encoder), redis_server.url) for _ in range(2))
    first = await rerank(replica_a, mode, QUERY, PASSAGES)
    shared = await rerank(replica_b, mode, QUERY, PASSAGES)
    assert first.source.kind is SourceKind.MODEL and str(shared.source) == "cache"
    assert replica_b.scorer.scored_texts == []
    assert [(i.original_rank, i.relevance_score) for i in shared] == [
        (i.original_rank, i.relevance_score) for i in first
    ]

    extra = "Vitamin D deficiency is common in nursing-home residents."
    grown = await rerank(replica_b, mode, QUERY, [*PASSAGES, extra])
    assert replica_b.scorer.scored_texts == [extra]  # only the new pair went to the model
    sources = {item.candidate.text: item.metadata()["rerank_source"] for item in grown}
    assert sources == {**dict.fromkeys(PASSAGES, "cache:score"), extra: "model"}
    assert replica_b.metrics.snapshot()["cache"] == {
        "result": {"hits": 1, "misses": 1, "errors": 0},
        "score": {"hits": 4, "misses": 1, "errors": 0},
    }


async def test_concurrent_async_calls_share_one_client(redis_server: RedisServer) -> None:
    backend = RedisCache(redis_server.url)
    # 40 connections opened at once can take longer than a cache operation's default bound on a
    # busy machine (the calls would then run without the cache); this test is about sharing.
    reranker = Reranker(
        ConstantTimeScorer(),
        result_cache=ResultCache(backend, timeout_s=5.0),
        score_cache=ScoreCache(backend, timeout_s=5.0),
    )
    queries = [f"{QUERY} ({i % 5})" for i in range(40)]
    results = await asyncio.gather(*(reranker.arerank(query, PASSAGES) for query in queries))
    assert all(len(result) == len(PASSAGES) for result in results)
    counts = reranker.metrics.snapshot()["cache"]
    assert counts["result"]["errors"] == counts["score"]["errors"] == 0
    assert counts["result"]["hits"] + counts["result"]["misses"] == 40


def test_one_round_trip_per_read(redis_server: RedisServer) -> None:
    reranker = caching_reranker(ConstantTimeScorer(), redis_server.url)
    reranker.rerank(QUERY, PASSAGES)
    commands = raw_client(redis_server).info("commandstats")
    assert commands["cmdstat_mget"]["calls"] == 2  # one for the result layer, one for all pairs
    assert "cmdstat_get" not in commands
    assert commands["cmdstat_set"]["calls"] == 1 + len(PASSAGES)  # sent as pipelines


async def test_entries_expire_after_their_ttl(redis_server: RedisServer) -> None:
    scorer = ConstantTimeScorer()
    # 2 s: the first async call opens its own connection, which took 0.55 s once on a loaded machine
    reranker = Reranker(scorer, result_cache=ResultCache(RedisCache(redis_server.url), ttl_s=2.0))
    reranker.rerank(QUERY, PASSAGES)
    client = raw_client(redis_server)
    (key,) = client.keys("*")
    assert 0 < client.pttl(key) <= 2000
    assert (await reranker.arerank(QUERY, PASSAGES)).source.kind is SourceKind.CACHE
    time.sleep(2.1)
    assert reranker.rerank(QUERY, PASSAGES).source.kind is SourceKind.MODEL


def test_backend_default_ttl_applies_when_the_layer_sets_none(redis_server: RedisServer) -> None:
    Reranker(ConstantTimeScorer(), score_cache=ScoreCache(RedisCache(redis_server.url, ttl_s=30))).rerank(
        QUERY, PASSAGES
    )
    client = raw_client(redis_server)
    assert all(29_000 < client.pttl(key) <= 30_000 for key in client.keys("*"))


def test_a_model_or_settings_change_misses(redis_server: RedisServer, cross_encoder_path: str) -> None:
    sigmoid = caching_reranker(CountingScorer(CrossEncoderScorer(cross_encoder_path)), redis_server.url)
    logits = caching_reranker(
        CountingScorer(CrossEncoderScorer(cross_encoder_path, activation="identity")), redis_server.url
    )
    first = sigmoid.rerank(QUERY, PASSAGES)
    changed = logits.rerank(QUERY, PASSAGES)
    assert changed.source.kind is SourceKind.MODEL and len(logits.scorer.scored_texts) == len(PASSAGES)
    assert changed[0].rerank_score != first[0].rerank_score  # logits, not the cached probabilities


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_redis_outage_degrades_then_recovers(
    redis_server: RedisServer, embedder_path: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RedisCache(redis_server.url)
    scorer = ConstantTimeScorer()
    reranker = Reranker(
        scorer,
        result_cache=ResultCache(backend),
        score_cache=ScoreCache(backend),
        semantic_cache=SemanticCache(backend, embedder_path, sync_interval_s=0),
    )
    first = await rerank(reranker, mode, QUERY, PASSAGES)
    assert (await rerank(reranker, mode, QUERY, PASSAGES)).source.kind is SourceKind.CACHE
    assert "errors" not in caplog.text and "failed" not in caplog.text

    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="rerank_prod.cache"):
        started = time.perf_counter()
        down = await rerank(reranker, mode, QUERY, PASSAGES)
        elapsed = time.perf_counter() - started
    assert down.source.kind is SourceKind.MODEL and down[0].candidate == first[0].candidate
    assert elapsed < 1.0  # short timeouts, no retry storm
    assert "cache read failed, continuing without it: ConnectionError" in caplog.text
    errors = {layer: counts["errors"] for layer, counts in reranker.metrics.snapshot()["cache"].items()}
    assert errors["result"] >= 2 and errors["score"] >= 2 and errors["semantic"] >= 1

    redis_server.start()  # same port, empty (no persistence)
    caplog.clear()
    assert (await rerank(reranker, mode, QUERY, PASSAGES)).source.kind is SourceKind.MODEL
    assert "failed" not in caplog.text  # reconnected on the first call, nothing lost to the restart
    assert (await rerank(reranker, mode, QUERY, PASSAGES)).source.kind is SourceKind.CACHE
    assert len(raw_client(redis_server).keys("*")) > 0


def test_corrupt_and_old_version_values_are_misses(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    scorer = ConstantTimeScorer()
    reranker = caching_reranker(scorer, redis_server.url)
    reranker.rerank(QUERY, PASSAGES)
    client = raw_client(redis_server)
    keys = client.keys("*")
    client.mset({key: b"\xff garbage" for key in keys[::2]})
    client.mset({key: json.dumps({"v": 0, "d": 0.5}).encode() for key in keys[1::2]})
    with caplog.at_level(logging.WARNING, logger="rerank_prod.cache"):
        result = reranker.rerank(QUERY, PASSAGES)
    assert result.source.kind is SourceKind.MODEL and len(scorer.scored_texts) == 2 * len(PASSAGES)
    assert "unreadable" in caplog.text
    assert reranker.rerank(QUERY, PASSAGES).source.kind is SourceKind.CACHE  # rewritten


def test_key_names_hold_hashes_not_query_text(redis_server: RedisServer, embedder_path: str) -> None:
    backend = RedisCache(redis_server.url, key_prefix="app1:")
    reranker = Reranker(
        ConstantTimeScorer(),
        result_cache=ResultCache(backend),
        score_cache=ScoreCache(backend),
        semantic_cache=SemanticCache(backend, embedder_path),
    )
    reranker.rerank(QUERY, PASSAGES)
    names = [key.decode() for key in raw_client(redis_server).keys("*")]
    assert {name.split(":")[3] for name in names} == {"result", "score", "semantic", "semantic-index"}
    for name in names:
        assert name.startswith("app1:rerank-prod:v1:")
        assert len(name.rsplit(":", 1)[1]) == 64 and all(word not in name for word in ("Vitamin", "bone"))


@pytest.mark.needs_redis
def test_password_in_the_url(tmp_path: Path) -> None:
    with_password = RedisServer(tmp_path, "--requirepass", "s3cret").start()
    try:
        url = with_password.url.replace("redis://", "redis://:s3cret@")
        reranker = caching_reranker(ConstantTimeScorer(), url)
        reranker.rerank(QUERY, PASSAGES)
        assert reranker.rerank(QUERY, PASSAGES).source.kind is SourceKind.CACHE
        wrong = caching_reranker(ConstantTimeScorer(), url.replace("s3cret", "wrong"))
        assert wrong.rerank(QUERY, PASSAGES).source.kind is SourceKind.MODEL
        assert wrong.result_cache.stats.errors == 2  # read and write refused, the call still answered
    finally:
        with_password.stop()


@pytest.mark.needs_redis
def test_tls_with_rediss_url(tmp_path: Path) -> None:
    tls = RedisServer(tmp_path, tls=True).start()
    try:
        assert tls.url.startswith("rediss://")
        reranker = caching_reranker(ConstantTimeScorer(), tls.url, ssl_ca_certs=str(tls.ca_file))
        reranker.rerank(QUERY, PASSAGES)
        assert reranker.rerank(QUERY, PASSAGES).source.kind is SourceKind.CACHE
        assert reranker.result_cache.stats.errors == 0
        untrusted = caching_reranker(ConstantTimeScorer(), tls.url)  # certificates are verified by default
        assert untrusted.rerank(QUERY, PASSAGES).source.kind is SourceKind.MODEL
        # The read fails; the write fails too, or is skipped when a slow handshake made the read time out.
        assert untrusted.result_cache.stats.errors in (1, 2)
    finally:
        tls.stop()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"url": "http://localhost:6379"}, ValueError),
        ({"url": "redis://localhost", "socket_timeout_s": 0}, ValueError),
        ({"url": "redis://localhost", "ttl_s": -1}, ValueError),
        ({"url": "redis://localhost", "key_prefix": 3}, TypeError),
        ({"url": "redis://localhost", "decode_responses": True}, ValueError),
    ],
)
def test_bad_redis_configuration(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        RedisCache(**kwargs)


def test_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(RedisCache("redis://:s3cret@localhost:6379/0"))
