"""Cohere Rerank v2 through the real `cohere` SDK against a loopback stand-in of /v2/rerank."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import httpx
import pytest
from cohere.errors import UnauthorizedError
from pydantic import SecretStr

from loopback.standin_servers import FAST_RETRY, StandInServer, best_first, drop, raw, running, slow, status
from rerank_prod import CohereScorer, Deadline, Reranker, RetryPolicy, ScoreCache, SourceKind
from rerank_prod.cache import InMemoryCache, ResultCache
from rerank_prod.resilience import BudgetExhausted

QUERY = "what is the capital of the united states"
DOCUMENTS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean.",
]
BEST_FIRST = best_first(QUERY, DOCUMENTS)
KEY = "co-test-key-do-not-leak"


@pytest.fixture
def cohere_server() -> Iterator[StandInServer]:
    with running("cohere", api_key=KEY) as server:
        yield server


def scorer_for(server: StandInServer, **options: object) -> CohereScorer:
    settings: dict[str, object] = {
        "api_key": SecretStr(KEY),
        "base_url": server.url,
        "retry": FAST_RETRY,
        "request_timeout_s": 2.0,
    }
    return CohereScorer("rerank-v3.5", **{**settings, **options})  # type: ignore[arg-type]


def test_ranks_by_relevance_score_through_the_sdk(cohere_server: StandInServer) -> None:
    result = Reranker(scorer_for(cohere_server), timeout_s=5.0).rerank(QUERY, DOCUMENTS)
    assert result.source.kind is SourceKind.MODEL
    assert [item.original_rank for item in result] == BEST_FIRST
    assert all(0.0 <= item.relevance_score <= 1.0 for item in result)
    request = cohere_server.requests_to("/v2/rerank")[0]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "rerank-v3.5" and request.body["documents"] == DOCUMENTS


async def test_async_client(cohere_server: StandInServer) -> None:
    result = await Reranker(scorer_for(cohere_server), timeout_s=5.0).arerank(QUERY, DOCUMENTS)
    assert [item.original_rank for item in result] == BEST_FIRST


def test_top_n_and_max_tokens_are_sent_and_unreturned_candidates_follow(cohere_server: StandInServer) -> None:
    scorer = scorer_for(cohere_server, top_n=2, max_tokens_per_doc=512)
    reranker = Reranker(scorer, score_cache=ScoreCache(InMemoryCache()))
    result = reranker.rerank(QUERY, DOCUMENTS)
    body = cohere_server.requests[0].body
    assert body["top_n"] == 2 and body["max_tokens_per_doc"] == 512
    assert [item.original_rank for item in result][:2] == BEST_FIRST[:2]
    assert [item.rerank_score for item in result][2:] == [0.0, 0.0]
    assert not scorer.independent_scores  # so the pair cache is bypassed: a repeat call asks again
    reranker.rerank(QUERY, DOCUMENTS)
    assert len(cohere_server.requests) == 2


def test_key_from_environment(cohere_server: StandInServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.setenv("COHERE_API_KEY", KEY)
    scorer = CohereScorer(base_url=cohere_server.url)
    assert len(scorer.score(QUERY, DOCUMENTS)) == 4
    monkeypatch.setenv("CO_API_KEY", "preferred-key")
    with pytest.raises(UnauthorizedError):  # scorers raise; only the Reranker turns failures into fallbacks
        CohereScorer(base_url=cohere_server.url, retry=RetryPolicy(max_attempts=1)).score(QUERY, DOCUMENTS)
    assert cohere_server.requests[-1].headers["Authorization"] == "Bearer preferred-key"


def test_missing_key_is_a_construction_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="CO_API_KEY"):
        CohereScorer()
    with pytest.raises(ValueError, match="top_n"):
        CohereScorer(api_key="k", top_n=0)


@pytest.mark.parametrize(
    "fault",
    [
        status(429, retry_after=0.2),
        status(503),
        status(500),
        drop(),
        raw(b'{"results": [{"index": 0,'),
        raw(b'{"id": "x", "results": [{"index": 7, "relevance_score": 0.9}], "meta": null}'),
        raw(
            b'{"id": "x", "results": [{"index": 0, "relevance_score": 1.5}, {"index": 1, "relevance_score": 0.1},'
            b' {"index": 2, "relevance_score": 0.1}, {"index": 3, "relevance_score": 0.1}]}'
        ),
    ],
    ids=["429-retry-after", "503", "500", "dropped", "truncated-json", "out-of-range-index", "score-above-1"],
)
def test_each_fault_ends_in_a_correct_result_after_retry(cohere_server: StandInServer, fault: object) -> None:
    cohere_server.fail_next("/v2/rerank", fault)  # type: ignore[arg-type]
    started = time.monotonic()
    result = Reranker(scorer_for(cohere_server), timeout_s=3.0).rerank(QUERY, DOCUMENTS)
    assert result.source.kind is SourceKind.MODEL
    assert [item.original_rank for item in result] == BEST_FIRST
    assert len(cohere_server.requests) == 2  # ours is the only retry: the SDK's are off
    assert time.monotonic() - started < 3.0


async def test_persistent_fault_falls_back_within_the_budget(cohere_server: StandInServer) -> None:
    cohere_server.fail_next("/v2/rerank", status(503), status(503), status(503))
    result = await Reranker(scorer_for(cohere_server), timeout_s=3.0).arerank(QUERY, DOCUMENTS)
    assert str(result.source) == "fallback:retriever order: error ServiceUnavailableError"
    assert [item.original_rank for item in result] == [0, 1, 2, 3]


def test_slow_answer_falls_back_within_the_budget(cohere_server: StandInServer) -> None:
    cohere_server.fail_next("/v2/rerank", slow(1.5), slow(1.5))
    started = time.monotonic()
    result = Reranker(scorer_for(cohere_server), timeout_s=0.4).rerank(QUERY, DOCUMENTS)
    assert time.monotonic() - started < 1.2  # budget 0.4s plus slack for a loaded machine; the answer took 1.5s
    assert result.source.kind is SourceKind.FALLBACK


def test_the_key_never_leaks(cohere_server: StandInServer, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "co-wrong-key-also-secret"
    scorer = CohereScorer(api_key=SecretStr(wrong), base_url=cohere_server.url, retry=RetryPolicy(max_attempts=1))
    cache = ResultCache(InMemoryCache())
    reranker = Reranker(scorer, result_cache=cache)
    with caplog.at_level(logging.DEBUG):
        result = reranker.rerank(QUERY, DOCUMENTS)
    assert str(result.source) == "fallback:retriever order: error UnauthorizedError"
    cache_key = cache.key(reranker.cache_identity, QUERY, [])
    for text in (
        repr(scorer),
        scorer.identity,
        caplog.text,
        str(result.source),
        cache_key,
        reranker.cache_identity,
        repr(reranker),
    ):
        assert wrong not in text
    assert "UnauthorizedError" in caplog.text


def test_each_request_is_bounded_by_what_is_left_of_the_budget(cohere_server: StandInServer) -> None:
    """Called directly (no pipeline thread to abandon it), the SDK request itself must time out."""
    cohere_server.fail_next("/v2/rerank", slow(1.5), slow(1.5), slow(1.5))
    started = time.monotonic()
    with pytest.raises((httpx.TimeoutException, BudgetExhausted)):
        scorer_for(cohere_server, request_timeout_s=30.0).score(QUERY, DOCUMENTS, deadline=Deadline.after(0.4))
    assert time.monotonic() - started < 1.2  # the 0.4s budget, not the 30s request timeout or the 1.5s answer


def test_async_client_survives_a_new_event_loop(cohere_server: StandInServer) -> None:
    reranker = Reranker(scorer_for(cohere_server), timeout_s=3.0)
    for _ in range(2):  # e.g. a script calling asyncio.run per request
        assert asyncio.run(reranker.arerank(QUERY, DOCUMENTS)).source.kind is SourceKind.MODEL
