"""Fault classes of the remote scorers, through their real client libraries (httpx, cohere, openai)
against loopback stand-ins: answers that never come, drip-fed and huge bodies, resets mid-body,
credentials echoed back, and async clients outliving their event loop."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from loopback.standin_servers import (
    FAST_RETRY,
    Fault,
    StandInServer,
    drip,
    echo_credentials,
    hang,
    huge,
    reset_mid_body,
    running,
)
from rerank_prod import (
    CircuitBreaker,
    CohereScorer,
    Deadline,
    LLMPointwiseScorer,
    OpenAIEmbeddingScorer,
    Reranker,
    SourceKind,
    TEIScorer,
)

QUERY = "how do vaccines train the immune system"
PASSAGES = ["Vaccines train the immune system.", "Paris is in France.", "The immune system fights infection."]
KEY = "sk-live-0123456789abcdef-secret"
BUDGET_S = 0.3
SLACK_S = 0.1  # a shared 2-core machine; the fault-matrix benchmark measures the real margin


@dataclass(frozen=True)
class Backend:
    flavor: str
    path: str
    make: Callable[..., Any]
    env_var: str | None = None


BACKENDS = {
    "tei": Backend("tei", "/rerank", lambda url, **kw: TEIScorer(url, **kw)),
    "cohere": Backend("cohere", "/v2/rerank", lambda url, **kw: CohereScorer(base_url=url, **kw), "CO_API_KEY"),
    "openai-chat": Backend(
        "openai",
        "/v1/chat/completions",
        lambda url, **kw: LLMPointwiseScorer("gpt-4o-mini", base_url=url + "/v1", **kw),
        "OPENAI_API_KEY",
    ),
    "openai-embeddings": Backend(
        "openai",
        "/v1/embeddings",
        lambda url, **kw: OpenAIEmbeddingScorer(base_url=url + "/v1", **kw),
        "OPENAI_API_KEY",
    ),
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[Backend, StandInServer]]:
    spec = BACKENDS[request.param]
    with running(spec.flavor, api_key=KEY) as server:
        yield spec, server


def scorer_for(spec: Backend, server: StandInServer, **options: Any) -> Any:
    options.setdefault("api_key", KEY)
    options.setdefault("retry", FAST_RETRY)
    return spec.make(server.url, **options)


async def timed_rerank(reranker: Reranker, mode: str) -> tuple[Any, float]:
    started = time.perf_counter()
    result = reranker.rerank(QUERY, PASSAGES) if mode == "sync" else await reranker.arerank(QUERY, PASSAGES)
    return result, time.perf_counter() - started


def always(server: StandInServer, path: str, fault: Fault) -> None:
    server.fail_next(path, *[fault] * 200)


# --- 3, 4 and friends: every call within budget, labelled; breaker opens, then closes after healing --


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", [drip(0.05), hang(), huge(50 * 2**20), reset_mid_body()], ids=lambda f: str(f))
async def test_transport_faults_are_answered_within_budget(backend, fault: Fault, mode: str) -> None:
    spec, server = backend
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=0.5)
    reranker = Reranker(scorer_for(spec, server, circuit_breaker=breaker), timeout_s=BUDGET_S)
    always(server, spec.path, fault)
    for _ in range(3):
        result, elapsed = await timed_rerank(reranker, mode)
        assert elapsed < BUDGET_S + SLACK_S, (fault, elapsed)
        assert result.source.kind is SourceKind.FALLBACK
    time.sleep(0.15)  # abandoned attempts have ended by now and were counted
    assert breaker.state == "open"
    server.clear_faults()
    time.sleep(0.5)
    healed, elapsed = await timed_rerank(reranker, mode)
    assert healed.source.kind is SourceKind.MODEL and breaker.state == "closed"


@pytest.mark.parametrize("fault", [drip(0.05), hang()], ids=["drip", "hang"])
def test_a_sync_request_ends_at_its_deadline_and_frees_its_worker(backend, fault: Fault) -> None:
    spec, server = backend
    scorer = scorer_for(spec, server)
    always(server, spec.path, fault)
    started = time.perf_counter()
    with pytest.raises(Exception):  # noqa: B017 - each client library has its own timeout type
        scorer.score(QUERY, PASSAGES, deadline=Deadline.after(BUDGET_S))
    assert time.perf_counter() - started < BUDGET_S + SLACK_S


def test_one_drip_call_does_not_jam_the_pointwise_executor() -> None:
    with running("openai") as server:
        scorer = LLMPointwiseScorer("gpt-4o-mini", base_url=server.url + "/v1", max_concurrency=2, retry=FAST_RETRY)
        reranker = Reranker(scorer, timeout_s=BUDGET_S)
        server.fail_next("/v1/chat/completions", drip(0.05), drip(0.05))  # both workers meet a drip
        jammed, _ = asyncio.run(timed_rerank(reranker, "sync"))
        assert jammed.source.kind is SourceKind.FALLBACK
        healthy, elapsed = asyncio.run(timed_rerank(reranker, "sync"))
        assert healthy.source.kind is SourceKind.MODEL and elapsed < BUDGET_S


def test_the_response_size_cap_is_a_setting() -> None:
    with running("tei") as server:
        with pytest.raises(ValueError, match="max_response_bytes"):
            TEIScorer(server.url, max_response_bytes=0)
        tiny = TEIScorer(server.url, max_response_bytes=10, retry=FAST_RETRY)
        with pytest.raises(Exception, match="max_response_bytes"):
            tiny.score(QUERY, PASSAGES)
        assert len(TEIScorer(server.url).score(QUERY, PASSAGES)) == 3


# --- 7: a server that echoes the credentials never gets them into a message --------------------


def _every_message(failure: BaseException) -> str:
    return "".join(traceback.format_exception(failure)) + repr(failure.__dict__)


@pytest.mark.parametrize("source", ["str", "SecretStr", "env"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_echoed_credentials_are_masked_everywhere(
    backend, source: str, mode: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, server = backend
    if source == "env" and spec.env_var is None:
        pytest.skip("this backend takes no key from the environment")
    key_option: Any = {"str": KEY, "SecretStr": SecretStr(KEY), "env": None}[source]
    if source == "env":
        monkeypatch.setenv(spec.env_var, KEY)
    scorer = scorer_for(spec, server, api_key=key_option)
    always(server, spec.path, echo_credentials())
    with caplog.at_level(logging.DEBUG):
        result, _ = await timed_rerank(Reranker(scorer, timeout_s=2.0), mode)
        with pytest.raises(Exception) as raised:
            if mode == "sync":
                scorer.score(QUERY, PASSAGES)
            else:
                await scorer.ascore(QUERY, PASSAGES)
    assert result.source.kind is SourceKind.FALLBACK
    assert "401" in caplog.text or "Authentication" in caplog.text or "error" in str(result.source)
    for text in (caplog.text, str(result.source), _every_message(raised.value)):
        assert KEY not in text


# --- 10: async clients are closed with their event loop -------------------------------------------


@pytest.mark.parametrize("name", list(BACKENDS))
def test_async_clients_close_with_their_event_loop(name: str) -> None:
    spec = BACKENDS[name]
    with running(spec.flavor, api_key=KEY) as server:
        scorer = scorer_for(spec, server)
        clients = []

        async def score_once() -> list[float]:
            clients.append(scorer._aclients.get())
            return await scorer.ascore(QUERY, PASSAGES)

        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            for _ in range(3):
                assert len(asyncio.run(score_once())) == 3
        assert len({id(client) for client in clients}) == 3
        assert scorer._aclients._by_loop == {}  # each loop's client was closed and forgotten at its end
