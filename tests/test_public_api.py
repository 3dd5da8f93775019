"""The public API, pinned: adding or removing a public name is a deliberate change to this list
(and a CHANGELOG line), never a side effect of a refactor."""

from __future__ import annotations

import importlib

import pytest

import rerank_prod

CORE = [
    "RESULT_METADATA_KEYS",
    "BM25Scorer",
    "CacheBackend",
    "Candidate",
    "ChunkedScorer",
    "CircuitBreaker",
    "CircuitOpenError",
    "CohereScorer",
    "ConfidenceGate",
    "CrossEncoderScorer",
    "Deadline",
    "Fusion",
    "Gate",
    "GateDecision",
    "InMemoryCache",
    "LLMListwiseScorer",
    "LLMPointwiseScorer",
    "LocalScorer",
    "OpenAIEmbeddingScorer",
    "RankedCandidate",
    "RedisCache",
    "ReciprocalRankFusion",
    "RerankMetrics",
    "RerankResult",
    "RerankServerScorer",
    "RerankSource",
    "Reranker",
    "ResultCache",
    "RetryPolicy",
    "ScoreCache",
    "Scorer",
    "ScorerError",
    "ScoringTimeout",
    "SemanticCache",
    "SentenceTransformerEmbeddingScorer",
    "SourceKind",
    "TEIScorer",
    "WeightedFusion",
    "capture_score_details",
    "load_reranker",
    "reranker_settings",
]


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("rerank_prod", CORE),
        (
            "langchain_rerank_prod",
            ["RerankProdCompressor", "RerankProdMultiHopRetriever", "RerankProdQueryExpansionRetriever"],
        ),
        (
            "llamaindex_rerank_prod",
            ["RerankProdMultiHopRetriever", "RerankProdPostprocessor", "RerankProdQueryExpansionRetriever"],
        ),
        (
            "rerank_prod.retrieval",
            [
                "ExpandedCandidate",
                "ExpansionResult",
                "Hop",
                "HopCandidate",
                "KeyTermsFollowUp",
                "LLMQueryWriter",
                "MultiHopReranker",
                "MultiHopResult",
                "PseudoRelevanceExpander",
                "QueryExpansionReranker",
                "TermStatistics",
                "candidate_key",
                "combine_hops",
                "hop_weights",
                "merge_ranked_lists",
            ],
        ),
        (
            "rerank_prod.observability",
            [
                "Alert",
                "AlertRule",
                "BoundObserver",
                "CallRecord",
                "Finished",
                "Observation",
                "Observer",
                "OpenTelemetryTracing",
                "PrometheusMetrics",
                "RerankMonitor",
                "WindowStats",
                "breaker_open",
                "fallback_rate_over",
                "gain_below",
                "latency_over",
                "shed_rate_over",
            ],
        ),
        (
            "rerank_prod.batch",
            [
                "REQUEST_SCHEMA",
                "RESULT_SCHEMA",
                "BatchReport",
                "RerankWorker",
                "beir_requests",
                "read_requests",
                "read_results",
                "requests_table",
                "run_batch",
            ],
        ),
    ],
)
def test_public_names_are_pinned(module: str, expected: list[str]) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == sorted(expected)
    for name in imported.__all__:
        assert getattr(imported, name) is not None


def test_every_public_class_documents_itself() -> None:
    for name in rerank_prod.__all__:
        value = getattr(rerank_prod, name)
        if isinstance(value, type):
            assert value.__doc__ and value.__doc__.strip(), f"{name} has no docstring"


def test_exceptions_users_catch_share_one_base() -> None:
    assert issubclass(rerank_prod.ScoringTimeout, rerank_prod.ScorerError)
    assert issubclass(rerank_prod.CircuitOpenError, rerank_prod.ScorerError)
