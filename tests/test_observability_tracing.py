"""OpenTelemetry spans, exported to the SDK's in-memory exporter: one span per call with a child per
stage and the documented attributes, the caller's span as parent (sync, async, through both
adapters), failures marked without their messages."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from support import ConstantTimeScorer

from rerank_prod import (
    Candidate,
    ConfidenceGate,
    InMemoryCache,
    Reranker,
    ResultCache,
    ScoreCache,
    ScorerError,
    WeightedFusion,
)
from rerank_prod.observability import OpenTelemetryTracing

CANDIDATES = [
    Candidate("the cat sat on the mat", retrieval_score=0.2),
    Candidate("dogs bark at night", retrieval_score=0.9),
    Candidate("a cat and a dog", retrieval_score=0.5),
]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    spans: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.name, []).append(span)
    return spans


def _children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[str]:
    return [
        span.name
        for span in exporter.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def test_call_span_with_stage_children_and_attributes(provider, exporter) -> None:
    reranker = Reranker(
        ConstantTimeScorer(),
        top_n=2,
        fusion=WeightedFusion(),
        gate=ConfidenceGate(min_top_gap=0.9),
        result_cache=ResultCache(InMemoryCache()),
        score_cache=ScoreCache(InMemoryCache()),
        observers=[OpenTelemetryTracing(provider)],
    )
    reranker.rerank("cat", CANDIDATES)
    reranker.rerank("cat", CANDIDATES)
    first, second = _by_name(exporter)["rerank"]
    assert _children(exporter, first) == [
        "rerank.cache.result.read",
        "rerank.gate",
        "rerank.cache.score.read",
        "rerank.score",
        "rerank.cache.score.write",
        "rerank.fusion",
        "rerank.cache.result.write",
    ]
    assert dict(first.attributes) == {
        "rerank.model": "overlap",
        "rerank.scorer": "ConstantTimeScorer",
        "rerank.candidates_in": 3,
        "rerank.top_n": 2,
        "rerank.candidates_out": 2,
        "rerank.source": "model",
        "rerank.source_detail": "model",
        "rerank.latency_s": first.attributes["rerank.latency_s"],
        "rerank.gate.decision": "rerank",
        "rerank.gate.reason": first.attributes["rerank.gate.reason"],
        "rerank.cache.result_hit": False,
        "rerank.cache.score_hits": 0,
        "rerank.cache.semantic_hits": 0,
    }
    assert first.attributes["rerank.latency_s"] > 0
    assert _children(exporter, second) == ["rerank.cache.result.read"]
    assert second.attributes["rerank.source"] == "cache"
    assert second.attributes["rerank.cache.result_hit"] is True
    assert first.parent is None
    for span in exporter.get_finished_spans():  # no query or passage text anywhere
        assert "cat" not in " ".join(str(value) for value in span.attributes.values())


def test_pair_cache_hits_are_counted(provider, exporter) -> None:
    reranker = Reranker(
        ConstantTimeScorer(), score_cache=ScoreCache(InMemoryCache()), observers=[OpenTelemetryTracing(provider)]
    )
    reranker.rerank("cat", CANDIDATES[:2])
    reranker.rerank("cat", CANDIDATES)
    last = _by_name(exporter)["rerank"][-1]
    assert last.attributes["rerank.cache.score_hits"] == 2
    assert last.attributes["rerank.source"] == "model"


class _LeakyScorer(ConstantTimeScorer):
    """A backend whose error message echoes a secret."""

    def score(self, query, texts, *, deadline=None):
        raise ScorerError("401 Unauthorized for key sk-SECRET-123")


def test_failed_stage_is_marked_without_its_message(provider, exporter) -> None:
    reranker = Reranker(_LeakyScorer(), observers=[OpenTelemetryTracing(provider)])
    result = reranker.rerank("cat", CANDIDATES)
    assert result.source.kind.value == "fallback"
    spans = _by_name(exporter)
    score = spans["rerank.score"][0]
    assert score.status.status_code is StatusCode.ERROR
    assert score.attributes["error.type"] == "ScorerError"
    call = spans["rerank"][0]
    assert call.attributes["rerank.fallback.to"] == "retriever_order"
    assert call.attributes["rerank.fallback.reason"] == "ScorerError"
    for span in exporter.get_finished_spans():
        dumped = span.to_json()
        assert "SECRET" not in dumped, span.name


def test_a_failing_plan_ends_its_span_in_error(provider, exporter) -> None:
    class BrokenFusion(WeightedFusion):
        def fuse(self, query, candidates, scores):
            raise RuntimeError("bug")

    reranker = Reranker(ConstantTimeScorer(), fusion=BrokenFusion(), observers=[OpenTelemetryTracing(provider)])
    with pytest.raises(RuntimeError, match="bug"):
        reranker.rerank("cat", CANDIDATES)
    spans = _by_name(exporter)
    assert spans["rerank"][0].status.status_code is StatusCode.ERROR
    assert spans["rerank.fusion"][0].status.status_code is StatusCode.ERROR
    from opentelemetry import trace

    assert not trace.get_current_span().get_span_context().is_valid  # context restored


def test_caller_span_is_the_parent_sync_and_async(provider, exporter) -> None:
    tracer = provider.get_tracer("app")
    reranker = Reranker(ConstantTimeScorer(delay_s=0.01), observers=[OpenTelemetryTracing(provider)])

    with tracer.start_as_current_span("request") as request:
        reranker.rerank("cat", CANDIDATES)

    async def concurrent_requests() -> None:
        async def one(name: str) -> None:
            with tracer.start_as_current_span(name):
                await reranker.arerank("cat", CANDIDATES)

        await asyncio.gather(one("a"), one("b"))

    asyncio.run(concurrent_requests())
    spans = _by_name(exporter)
    calls = spans["rerank"]
    assert calls[0].parent.span_id == request.get_span_context().span_id
    async_parents = {span.name: span.context.span_id for span in spans["a"] + spans["b"]}
    assert {call.parent.span_id for call in calls[1:]} == set(async_parents.values())
    by_id = {span.context.span_id: span for span in exporter.get_finished_spans()}
    for call in calls:  # each call's stage spans are its own, even interleaved on one loop
        assert _children(exporter, call) == ["rerank.score"]
        assert call.context.trace_id == by_id[call.parent.span_id].context.trace_id


def test_bad_provider_is_rejected() -> None:
    with pytest.raises(TypeError, match="tracer_provider"):
        OpenTelemetryTracing("jaeger")  # type: ignore[arg-type]


@pytest.mark.needs_models
def test_langchain_run_is_the_parent(provider, exporter, cross_encoder) -> None:
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from langchain_rerank_prod import RerankProdCompressor

    class Fixed(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager):
            return [Document(page_content=c.text, metadata={"score": c.retrieval_score}) for c in CANDIDATES]

    compressor = RerankProdCompressor(
        reranker=Reranker(cross_encoder, top_n=2, observers=[OpenTelemetryTracing(provider)])
    )
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=Fixed())
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("chain") as chain:
        assert len(retriever.invoke("where do cats sit?")) == 2

    async def run_async() -> None:
        with tracer.start_as_current_span("achain"):
            await retriever.ainvoke("where do cats sit?")

    asyncio.run(run_async())
    spans = _by_name(exporter)
    sync_call, async_call = spans["rerank"]
    assert sync_call.parent.span_id == chain.get_span_context().span_id
    assert async_call.parent.span_id == spans["achain"][0].context.span_id
    assert sync_call.attributes["rerank.model"] == cross_encoder.name
    assert sync_call.attributes["rerank.candidates_out"] == 2


@pytest.mark.needs_models
def test_llamaindex_query_is_the_parent(provider, exporter, cross_encoder) -> None:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from llamaindex_rerank_prod import RerankProdPostprocessor

    postprocessor = RerankProdPostprocessor(
        reranker=Reranker(cross_encoder, top_n=1, observers=[OpenTelemetryTracing(provider)])
    )
    nodes = [NodeWithScore(node=TextNode(text=c.text), score=c.retrieval_score) for c in CANDIDATES]
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("query") as query:
        postprocessor.postprocess_nodes(nodes, QueryBundle("where do cats sit?"))

    async def run_async() -> None:
        with tracer.start_as_current_span("aquery"):
            await postprocessor.apostprocess_nodes(nodes, QueryBundle("where do cats sit?"))

    asyncio.run(run_async())
    spans = _by_name(exporter)
    sync_call, async_call = spans["rerank"]
    assert sync_call.parent.span_id == query.get_span_context().span_id
    assert async_call.parent.span_id == spans["aquery"][0].context.span_id
    assert _children(exporter, async_call) == ["rerank.score"]
