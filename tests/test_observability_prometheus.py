"""Prometheus metrics: names, bounded labels, no clashes between rerankers, scrape-time cache and
breaker state, and a real Prometheus server scraping our endpoint (served on a port and mounted in
a WSGI app) through both adapters, numbers read back through its query API."""

from __future__ import annotations

import os
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from support import BrokenRemoteScorer, ConstantTimeScorer, FailingScorer

from loopback.prometheus_server import MISSING, PROMETHEUS, PrometheusServer
from rerank_prod import Candidate, ConfidenceGate, InMemoryCache, Reranker, ResultCache, ScoreCache
from rerank_prod.observability import PrometheusMetrics

CANDIDATES = [
    Candidate("the cat sat on the mat", retrieval_score=0.2),
    Candidate("dogs bark at night", retrieval_score=0.9),
    Candidate("a cat and a dog", retrieval_score=0.5),
]
BASE = {"reranker": "default", "model": "overlap", "scorer": "ConstantTimeScorer"}


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**BASE, **labels})


def test_calls_stages_and_cache_layers_are_counted() -> None:
    registry = CollectorRegistry()
    reranker = Reranker(
        ConstantTimeScorer(),
        result_cache=ResultCache(InMemoryCache()),
        score_cache=ScoreCache(InMemoryCache()),
        observers=[PrometheusMetrics(registry)],
    )
    reranker.rerank("cat", CANDIDATES)
    reranker.rerank("cat", CANDIDATES)  # exact hit
    assert _value(registry, "rerank_prod_call_duration_seconds_count", source="model") == 1
    assert _value(registry, "rerank_prod_call_duration_seconds_count", source="cache") == 1
    assert _value(registry, "rerank_prod_call_duration_seconds_count", source="fallback") == 0
    for stage, count in (("cache.result.read", 2), ("cache.score.read", 1), ("score", 1), ("cache.result.write", 1)):
        assert _value(registry, "rerank_prod_stage_duration_seconds_count", stage=stage) == count, stage
    assert _value(registry, "rerank_prod_cache_requests_total", layer="result", result="hit") == 1
    assert _value(registry, "rerank_prod_cache_requests_total", layer="result", result="miss") == 1
    assert _value(registry, "rerank_prod_cache_requests_total", layer="score", result="miss") == 3
    exposition = generate_latest(registry).decode()
    assert "cat" not in exposition.replace("rerank_prod_", "")  # no query or passage text in any label


def test_fallbacks_gate_skips_and_breaker_state() -> None:
    registry = CollectorRegistry()
    broken = BrokenRemoteScorer(failures=2)
    metrics = PrometheusMetrics(registry, name="remote")
    reranker = Reranker(broken, observers=[metrics])
    for _ in range(3):
        assert reranker.rerank("cat", CANDIDATES).source.kind.value == "fallback"
    labels = {"reranker": "remote", "model": "remote", "scorer": "BrokenRemoteScorer"}

    def value(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **extra})

    assert value("rerank_prod_fallbacks_total", to="retriever_order", reason="ConnectionError") == 2
    assert value("rerank_prod_fallbacks_total", to="retriever_order", reason="CircuitOpenError") == 1
    assert value("rerank_prod_circuit_breaker_state", backend="remote", state="open") == 1
    assert value("rerank_prod_circuit_breaker_state", backend="remote", state="closed") == 0
    assert value("rerank_prod_circuit_breaker_opened_total", backend="remote") == 1
    assert value("rerank_prod_circuit_breaker_rejected_total", backend="remote") == 1

    gated = Reranker(
        ConstantTimeScorer(), gate=ConfidenceGate(min_top_gap=0.1), observers=[PrometheusMetrics(registry)]
    )
    gated.rerank("cat", [Candidate("a", retrieval_score=1.0), Candidate("b", retrieval_score=0.0)])
    assert _value(registry, "rerank_prod_gate_skips_total") == 1
    assert _value(registry, "rerank_prod_stage_duration_seconds_count", stage="gate") == 1


def test_secondary_fallback_reason() -> None:
    registry = CollectorRegistry()
    reranker = Reranker(
        FailingScorer(), fallback_scorer=ConstantTimeScorer(name="backup"), observers=[PrometheusMetrics(registry)]
    )
    reranker.rerank("cat", CANDIDATES)
    labels = {**BASE, "scorer": "FailingScorer", "to": "secondary", "reason": "ConnectionError"}
    assert registry.get_sample_value("rerank_prod_fallbacks_total", labels) == 1
    assert _value(registry, "rerank_prod_stage_duration_seconds_count", scorer="FailingScorer", stage="score.fallback")


def test_many_rerankers_share_a_registry_without_clashing() -> None:
    registry = CollectorRegistry()
    shared_cache = ResultCache(InMemoryCache())
    first, second = PrometheusMetrics(registry, name="search"), PrometheusMetrics(registry, name="chat")
    rerankers = [
        Reranker(ConstantTimeScorer(), result_cache=shared_cache, observers=[first]),
        Reranker(ConstantTimeScorer(), result_cache=shared_cache, observers=[first]),  # same labels, same cache
        Reranker(ConstantTimeScorer(name="other"), observers=[second]),
    ]
    for reranker in rerankers:
        reranker.rerank("cat", CANDIDATES)
    assert _value(registry, "rerank_prod_call_duration_seconds_count", reranker="search", source="model") == 1
    assert _value(registry, "rerank_prod_call_duration_seconds_count", reranker="search", source="cache") == 1
    labels = {"reranker": "chat", "model": "other", "scorer": "ConstantTimeScorer", "source": "model"}
    assert registry.get_sample_value("rerank_prod_call_duration_seconds_count", labels) == 1
    # one cache object behind two rerankers with the same labels is counted once
    assert _value(registry, "rerank_prod_cache_requests_total", reranker="search", layer="result", result="hit") == 1
    # the global registry twice: no duplicate registration
    PrometheusMetrics(name="a"), PrometheusMetrics(name="b")
    assert REGISTRY.get_sample_value("rerank_prod_gate_skips_total", {**BASE, "reranker": "a"}) is None
    with pytest.raises(ValueError, match="buckets"):
        PrometheusMetrics(registry, buckets=(0.1, 1.0))


@pytest.mark.needs_models
def test_scoring_engine_counters_and_queue(cross_encoder) -> None:
    registry = CollectorRegistry()
    reranker = Reranker(cross_encoder, observers=[PrometheusMetrics(registry)])

    def engine(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"backend": cross_encoder.name, **labels})

    served, pairs = (
        engine("rerank_prod_engine_requests_total", outcome="served"),
        engine("rerank_prod_engine_pairs_total", kind="scored"),
    )
    reranker.rerank("what do cats do?", ["Cats purr.", "Stocks fell.", "Kittens play."])
    assert engine("rerank_prod_engine_requests_total", outcome="served") == served + 1
    assert engine("rerank_prod_engine_pairs_total", kind="scored") == pairs + 3
    assert engine("rerank_prod_engine_queue_depth") == 0
    assert engine("rerank_prod_engine_requests_total", outcome="shed") is not None


def test_chunking_counters_and_the_wrapped_engine(cross_encoder) -> None:
    from rerank_prod import ChunkedScorer

    registry = CollectorRegistry()
    reranker = Reranker(ChunkedScorer(cross_encoder, max_chunks=2), observers=[PrometheusMetrics(registry)])

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"backend": cross_encoder.name, **labels})

    served = value("rerank_prod_engine_requests_total", outcome="served")
    long_text = "Cats sleep most of the day and hunt at dusk. " * 200
    reranker.rerank("what do cats do?", ["Cats purr.", long_text])
    assert value("rerank_prod_chunking_total", kind="texts") == 2
    assert value("rerank_prod_chunking_total", kind="chunked") == 1
    assert value("rerank_prod_chunking_total", kind="chunks") == 3  # 1 + the long text's first 2 windows
    assert value("rerank_prod_chunking_total", kind="truncated") == 1
    assert value("rerank_prod_engine_requests_total", outcome="served") == served + 1  # the inner engine


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(TypeError, match="registry"):
        PrometheusMetrics(registry="default")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        PrometheusMetrics(CollectorRegistry(), name=" ")
    with pytest.raises(ValueError, match="buckets"):
        PrometheusMetrics(CollectorRegistry(), buckets=(1.0, 0.5))
    with pytest.raises(TypeError, match=r"observers\[0\]"):
        Reranker(ConstantTimeScorer(), observers=[object()])  # type: ignore[list-item]


async def test_asgi_app_serves_the_registry() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    await Reranker(ConstantTimeScorer(), observers=[metrics]).arerank("cat", CANDIDATES)
    transport = httpx.ASGITransport(app=metrics.asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert 'rerank_prod_call_duration_seconds_count{model="overlap",reranker="default"' in response.text


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def prometheus_binary() -> None:
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING}; CI must provide it")
        pytest.skip(MISSING)


@pytest.mark.needs_services
@pytest.mark.slow
def test_real_prometheus_scrapes_both_adapters(prometheus_binary: None, cross_encoder, tmp_path) -> None:
    """LangChain's compressor reports to a registry served on its own port; LlamaIndex's
    postprocessor to one mounted at /metrics inside a user's WSGI app. Prometheus scrapes both."""
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from langchain_rerank_prod import RerankProdCompressor
    from llamaindex_rerank_prod import RerankProdPostprocessor

    served, mounted = CollectorRegistry(), CollectorRegistry()
    lc_metrics = PrometheusMetrics(served, name="langchain")
    li_metrics = PrometheusMetrics(mounted, name="llamaindex")
    compressor = RerankProdCompressor(
        reranker=Reranker(cross_encoder, top_n=2, result_cache=ResultCache(InMemoryCache()), observers=[lc_metrics])
    )
    postprocessor = RerankProdPostprocessor(reranker=Reranker(cross_encoder, top_n=2, observers=[li_metrics]))

    metrics_app = li_metrics.wsgi_app()

    def user_app(environ, start_response):  # the application's own WSGI app, /metrics mounted in it
        if environ["PATH_INFO"] == "/metrics":
            return metrics_app(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    port_server = lc_metrics.serve(0)
    wsgi_server = make_server("127.0.0.1", 0, user_app, handler_class=_QuietHandler)
    wsgi_thread = threading.Thread(target=wsgi_server.serve_forever, daemon=True)
    wsgi_thread.start()
    targets = [f"127.0.0.1:{port_server.server_port}", f"127.0.0.1:{wsgi_server.server_port}"]
    prometheus = PrometheusServer(tmp_path, targets).start()
    try:
        prometheus.wait_for('count(up{job="rerank"} == 1)', 2)
        texts = ["Cats purr when content.", "The stock market fell.", "Kittens are young cats."]
        documents = [Document(page_content=text, metadata={"score": 0.5}) for text in texts]
        for _ in range(3):  # one model call, then two exact hits
            compressor.compress_documents(documents, "what do cats do?")
        nodes = [NodeWithScore(node=TextNode(text=text), score=0.5) for text in texts]
        for _ in range(2):
            postprocessor.postprocess_nodes(nodes, QueryBundle("what do cats do?"))

        base = f'job="rerank",model="{cross_encoder.name}"'
        calls = "rerank_prod_call_duration_seconds_count"
        prometheus.wait_for(f'sum({calls}{{{base},reranker="langchain",source="model"}})', 1)
        prometheus.wait_for(f'sum({calls}{{{base},reranker="langchain",source="cache"}})', 2)
        prometheus.wait_for(f'sum({calls}{{{base},reranker="llamaindex",source="model"}})', 2)
        prometheus.wait_for(f'sum(rerank_prod_cache_requests_total{{{base},layer="result",result="hit"}})', 2)
        prometheus.wait_for(
            f'sum(rerank_prod_stage_duration_seconds_count{{{base},reranker="llamaindex",stage="score"}})', 2
        )
        p50 = prometheus.query(
            f"histogram_quantile(0.5, sum by (le) (rerank_prod_call_duration_seconds_bucket{{{base}}}))"
        )
        assert p50 and float(p50[0]["value"][1]) > 0
        assert httpx.get(f"http://127.0.0.1:{wsgi_server.server_port}/").text == "hello"
    finally:
        prometheus.stop()
        port_server.shutdown()
        port_server.server_close()
        wsgi_server.shutdown()
        wsgi_server.server_close()
