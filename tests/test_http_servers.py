"""TEI and Infinity/vLLM rerank servers through the real httpx clients, against loopback stand-ins."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from loopback.standin_servers import FAST_RETRY, StandInServer, best_first, drop, overlap, raw, running, slow, status
from rerank_prod import (
    CircuitBreaker,
    Deadline,
    Reranker,
    RerankServerScorer,
    RetryPolicy,
    ScoreCache,
    SourceKind,
    TEIScorer,
)
from rerank_prod.cache import InMemoryCache
from rerank_prod.resilience import BudgetExhausted

QUERY = "how do vaccines train the immune system"
PASSAGES = [
    "Paris is the capital of France.",
    "Vaccines train the immune system to recognise a pathogen.",
    "The immune system fights infections.",
    "How trains run on time in Switzerland.",
]
BEST_FIRST = best_first(QUERY, PASSAGES)
SECRET = "tei-secret-token-42"


@pytest.fixture
def tei() -> Iterator[StandInServer]:
    with running("tei", api_key=SECRET) as server:
        yield server


@pytest.fixture
def infinity() -> Iterator[StandInServer]:
    with running("infinity") as server:
        yield server


def tei_scorer(server: StandInServer, **options: object) -> TEIScorer:
    settings: dict[str, object] = {"api_key": SECRET, "retry": FAST_RETRY, "request_timeout_s": 2.0}
    return TEIScorer(server.url, **{**settings, **options})  # type: ignore[arg-type]


def test_tei_scores_map_back_to_candidates(tei: StandInServer) -> None:
    result = Reranker(tei_scorer(tei), timeout_s=5.0).rerank(QUERY, PASSAGES)
    assert result.source.kind is SourceKind.MODEL
    assert [item.original_rank for item in result] == BEST_FIRST
    assert [item.rerank_score for item in result] == [overlap(QUERY, PASSAGES[i]) for i in BEST_FIRST]
    sent = tei.requests_to("/rerank")[0]
    assert sent.headers["Authorization"] == f"Bearer {SECRET}"
    assert sent.body == {"query": QUERY, "texts": PASSAGES, "truncate": True, "raw_scores": False, "return_text": False}


def test_tei_splits_large_candidate_sets_at_its_cap_and_reuses_connections(tei: StandInServer) -> None:
    texts = [f"passage {i} about vaccines" if i % 7 == 0 else f"passage {i}" for i in range(70)]
    scorer = tei_scorer(tei, max_concurrency=2)
    reranker = Reranker(scorer, timeout_s=5.0)
    for _ in range(3):
        result = reranker.rerank(QUERY, texts)
        assert result.source.kind is SourceKind.MODEL
        assert {item.original_rank for item in result.items[:10]} == {i for i in range(70) if i % 7 == 0}
    sizes = [len(request.body["texts"]) for request in tei.requests_to("/rerank")]
    assert sorted(sizes) == sorted([32, 32, 6] * 3)
    assert len({request.client_port for request in tei.requests}) <= 2  # 9 requests over a 2-connection pool


def test_tei_learns_a_lower_server_cap_from_its_422(tei: StandInServer) -> None:
    tei.max_client_batch_size = 10
    scorer = tei_scorer(tei)
    scores = scorer.score(QUERY, [f"vaccines {i}" for i in range(25)])
    assert len(scores) == 25
    sizes = [len(request.body["texts"]) for request in tei.requests_to("/rerank")]
    assert sizes[0] == 25 and sorted(sizes[1:]) == [5, 10, 10]  # one 422, then batches of 10
    tei.requests.clear()
    scorer.score(QUERY, [f"vaccines {i}" for i in range(25)])
    assert len(tei.requests) == 3  # remembered: no second 422


@pytest.mark.parametrize(
    "fault",
    [
        status(429, retry_after=0.2),
        status(503),
        status(500),
        drop(),
        raw(b'[{"index": 0, "score": 0.9'),
        raw(b"<html>502 Bad Gateway</html>"),
        raw(b'[{"index": 99, "score": 0.5}]'),
        raw(
            b'[{"index": 0, "score": 0.5}, {"index": 0, "score": 0.4},'
            b' {"index": 2, "score": 0.3}, {"index": 3, "score": 0.2}]'
        ),
        raw(b'{"error": "model overloaded"}'),
    ],
    ids=[
        "429-retry-after",
        "503",
        "500",
        "dropped",
        "truncated-json",
        "html",
        "bad-index",
        "duplicate-index",
        "object-not-array",
    ],
)
def test_each_fault_ends_in_a_correct_result_after_retry(tei: StandInServer, fault: object) -> None:
    tei.fail_next("/rerank", fault)  # type: ignore[arg-type]
    started = time.monotonic()
    result = Reranker(tei_scorer(tei), timeout_s=3.0).rerank(QUERY, PASSAGES)
    assert result.source.kind is SourceKind.MODEL
    assert [item.original_rank for item in result] == BEST_FIRST
    assert len(tei.requests) == 2
    assert time.monotonic() - started < 3.0


def test_retry_after_is_waited_for(tei: StandInServer) -> None:
    tei.fail_next("/rerank", status(429, retry_after=0.4))
    started = time.monotonic()
    tei_scorer(tei).score(QUERY, PASSAGES, deadline=None)
    assert time.monotonic() - started >= 0.4


def test_slow_server_falls_back_within_the_budget(tei: StandInServer) -> None:
    tei.fail_next("/rerank", slow(1.5), slow(1.5))
    reranker = Reranker(tei_scorer(tei), timeout_s=0.4)
    started = time.monotonic()
    result = reranker.rerank(QUERY, PASSAGES)
    assert time.monotonic() - started < 1.2  # budget 0.4s plus slack for a loaded machine; the answer took 1.5s
    assert result.source.kind is SourceKind.FALLBACK
    assert [item.original_rank for item in result] == [0, 1, 2, 3]


def test_persistent_failure_falls_back_to_a_secondary_scorer(tei: StandInServer, infinity: StandInServer) -> None:
    tei.fail_next("/rerank", status(500), status(500), status(500))
    secondary = RerankServerScorer(infinity.url, model="bge-reranker", retry=FAST_RETRY)
    result = Reranker(tei_scorer(tei), timeout_s=3.0, fallback_scorer=secondary).rerank(QUERY, PASSAGES)
    assert str(result.source) == "fallback:secondary bge-reranker: error BackendHTTPError"
    assert [item.original_rank for item in result] == BEST_FIRST
    assert len(tei.requests) == 3


def test_open_circuit_skips_the_server_and_shows_in_source_and_metrics(tei: StandInServer) -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=0.3)
    scorer = tei_scorer(tei, retry=RetryPolicy(max_attempts=1), circuit_breaker=breaker)
    reranker = Reranker(scorer, timeout_s=2.0)
    tei.fail_next("/rerank", status(503), status(503))
    for _ in range(2):
        assert str(reranker.rerank(QUERY, PASSAGES).source) == "fallback:retriever order: error BackendHTTPError"
    assert breaker.state == "open"
    requests_before = len(tei.requests)
    result = reranker.rerank(QUERY, PASSAGES)
    assert str(result.source) == "fallback:retriever order: error CircuitOpenError"
    assert len(tei.requests) == requests_before  # failed fast, without contacting the server
    snapshot = reranker.metrics.snapshot()
    assert snapshot["fallback_reasons"]["retriever order: error CircuitOpenError"] == 1
    assert snapshot["circuit_breakers"][scorer.name] == {
        "state": "open",
        "consecutive_failures": 2,
        "times_opened": 1,
        "rejected_calls": 1,
    }

    time.sleep(0.35)  # cooldown over: one trial request, which succeeds and closes the circuit
    assert reranker.rerank(QUERY, PASSAGES).source.kind is SourceKind.MODEL
    assert breaker.state == "closed"
    assert reranker.metrics.snapshot()["circuit_breakers"][scorer.name]["state"] == "closed"


async def test_async_path_batches_concurrently_and_retries(tei: StandInServer) -> None:
    tei.fail_next("/rerank", status(503))
    texts = [f"text {i}" for i in range(40)] + ["vaccines train the immune system"]
    scorer = tei_scorer(tei, max_concurrency=3)
    result = await Reranker(scorer, timeout_s=5.0).arerank(QUERY, texts)
    assert result.source.kind is SourceKind.MODEL
    assert result[0].original_rank == 40
    sizes = [len(request.body["texts"]) for request in tei.requests]
    assert len(sizes) == 3 and set(sizes) == {9, 32}  # two batches in parallel, the one that met the 503 retried
    await scorer.aclose()


async def test_async_slow_server_falls_back_within_the_budget(tei: StandInServer) -> None:
    tei.fail_next("/rerank", slow(1.5))
    started = time.monotonic()
    result = await Reranker(tei_scorer(tei), timeout_s=0.4).arerank(QUERY, PASSAGES)
    assert time.monotonic() - started < 1.2  # budget 0.4s plus slack for a loaded machine; the answer took 1.5s
    assert str(result.source) == "fallback:retriever order: timeout after 0.4s"


def test_infinity_vllm_shape(infinity: StandInServer) -> None:
    scorer = RerankServerScorer(infinity.url, model="BAAI/bge-reranker-v2-m3")
    result = Reranker(scorer).rerank(QUERY, PASSAGES)
    assert [item.original_rank for item in result] == BEST_FIRST
    body = infinity.requests[0].body
    assert body == {
        "query": QUERY,
        "documents": PASSAGES,
        "top_n": 4,
        "return_documents": False,
        "model": "BAAI/bge-reranker-v2-m3",
    }
    assert "Authorization" not in infinity.requests[0].headers
    assert scorer.identity == "rerank-server:BAAI/bge-reranker-v2-m3"


def test_score_cache_works_with_remote_scorers(infinity: StandInServer) -> None:
    reranker = Reranker(RerankServerScorer(infinity.url), score_cache=ScoreCache(InMemoryCache()))
    reranker.rerank(QUERY, PASSAGES)
    reranker.rerank(QUERY, [*PASSAGES, "a new passage about vaccines"])
    assert [len(request.body["documents"]) for request in infinity.requests] == [4, 1]


def test_key_stays_out_of_repr_identity_logs_and_errors(tei: StandInServer, caplog: pytest.LogCaptureFixture) -> None:
    scorer = tei_scorer(tei, api_key="wrong-key-but-still-secret", retry=RetryPolicy(max_attempts=1))
    with caplog.at_level(logging.DEBUG, logger="rerank_prod"):
        result = Reranker(scorer).rerank(QUERY, PASSAGES)
    assert str(result.source) == "fallback:retriever order: error BackendHTTPError"  # 401
    for text in (repr(scorer), scorer.identity, scorer.name, caplog.text, str(result.source)):
        assert "still-secret" not in text
    assert "401" in caplog.text


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_batch_size": 0}, ValueError),
        ({"max_concurrency": -1}, ValueError),
        ({"truncate": "yes"}, TypeError),
        ({"request_timeout_s": 0}, ValueError),
        ({"retry": 3}, TypeError),
        ({"api_key": 42}, TypeError),
        ({"circuit_breaker": "on"}, TypeError),
        ({"max_batch": 8}, TypeError),
    ],
)
def test_bad_configuration_fails_at_construction(options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        TEIScorer("http://127.0.0.1:1", **options)  # type: ignore[arg-type]


def test_base_url_must_not_carry_credentials() -> None:
    with pytest.raises(ValueError, match="credentials") as raised:
        TEIScorer("http://admin:hunter2@127.0.0.1:1")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(ValueError, match="http"):
        RerankServerScorer("ftp://127.0.0.1:1")


async def test_each_request_is_bounded_by_what_is_left_of_the_budget(tei: StandInServer) -> None:
    tei.fail_next("/rerank", slow(1.5), slow(1.5), slow(1.5))
    started = time.monotonic()
    with pytest.raises((httpx.TimeoutException, BudgetExhausted)):
        await tei_scorer(tei, request_timeout_s=30.0).ascore(QUERY, PASSAGES, deadline=Deadline.after(0.4))
    assert time.monotonic() - started < 1.2  # the 0.4s budget, not the 30s request timeout or the 1.5s answer


def test_async_pool_per_event_loop(tei: StandInServer) -> None:
    """Connections are reused within a loop; a new loop (a second asyncio.run) gets fresh ones."""
    reranker = Reranker(tei_scorer(tei), timeout_s=3.0)

    async def twice() -> list[str]:
        return [str((await reranker.arerank(QUERY, PASSAGES)).source) for _ in range(2)]

    assert asyncio.run(twice()) + asyncio.run(twice()) == ["model"] * 4
    ports = [request.client_port for request in tei.requests]
    assert ports[0] == ports[1] and ports[2] == ports[3] and ports[1] != ports[2]
