"""rerank-prod's shared scoring core: framework-neutral, importable without torch or any framework.

The names below are the public API: what users construct, implement, read and catch. Everything
else (modules' other names, e.g. `rerank_prod.resilience.BudgetExhausted` or
`rerank_prod.semantic_cache.VectorIndex`) is internal and may change between releases;
`rerank_prod.effects` and `rerank_prod.validation` are internal as a whole. The observability
and retrieval (multi-hop, query expansion) subpackages have their own public names
(`rerank_prod.observability.__all__`, `rerank_prod.retrieval.__all__`).
"""

from rerank_prod.cache import CacheBackend, InMemoryCache, ResultCache, ScoreCache
from rerank_prod.cache_redis import RedisCache
from rerank_prod.config_file import load_reranker, reranker_settings
from rerank_prod.deadline import Deadline
from rerank_prod.errors import ScorerError, ScoringTimeout
from rerank_prod.fusion import Fusion, ReciprocalRankFusion, WeightedFusion
from rerank_prod.gate import ConfidenceGate, Gate
from rerank_prod.metrics import RerankMetrics
from rerank_prod.pipeline import Reranker
from rerank_prod.resilience import CircuitBreaker, CircuitOpenError, RetryPolicy
from rerank_prod.scoring import (
    BM25Scorer,
    CohereScorer,
    CrossEncoderScorer,
    LLMListwiseScorer,
    LLMPointwiseScorer,
    LocalScorer,
    OpenAIEmbeddingScorer,
    RerankServerScorer,
    Scorer,
    SentenceTransformerEmbeddingScorer,
    TEIScorer,
)
from rerank_prod.scoring.chunked import ChunkedScorer
from rerank_prod.scoring.details import capture_score_details
from rerank_prod.semantic_cache import SemanticCache
from rerank_prod.types import (
    RESULT_METADATA_KEYS,
    Candidate,
    GateDecision,
    RankedCandidate,
    RerankResult,
    RerankSource,
    SourceKind,
)

__version__ = "0.1.0"

__all__ = [
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
