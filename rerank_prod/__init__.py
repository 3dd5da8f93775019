"""rerank-prod's shared scoring core: framework-neutral, importable without torch or any framework."""

from rerank_prod.cache import CacheBackend, CacheStats, EntryLog, InMemoryCache, ResultCache, ScoreCache
from rerank_prod.cache_redis import RedisCache
from rerank_prod.deadline import Deadline
from rerank_prod.errors import ScorerError, ScoringTimeout
from rerank_prod.fusion import ReciprocalRankFusion, WeightedFusion, normalize
from rerank_prod.gate import ConfidenceGate
from rerank_prod.metrics import RerankMetrics
from rerank_prod.pipeline import Reranker
from rerank_prod.resilience import (
    BudgetExhausted,
    CircuitBreaker,
    CircuitOpenError,
    MalformedResponse,
    RetryPolicy,
)
from rerank_prod.scoring import (
    DEFAULT_CROSS_ENCODER,
    CohereScorer,
    CrossEncoderScorer,
    LLMListwiseScorer,
    LLMPointwiseScorer,
    OpenAIEmbeddingScorer,
    RerankServerScorer,
    Scorer,
    SentenceTransformerEmbeddingScorer,
    TEIScorer,
)
from rerank_prod.semantic_cache import SemanticCache, VectorIndex
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
    "DEFAULT_CROSS_ENCODER",
    "RESULT_METADATA_KEYS",
    "BudgetExhausted",
    "CacheBackend",
    "CacheStats",
    "Candidate",
    "CircuitBreaker",
    "CircuitOpenError",
    "CohereScorer",
    "ConfidenceGate",
    "CrossEncoderScorer",
    "Deadline",
    "EntryLog",
    "GateDecision",
    "InMemoryCache",
    "LLMListwiseScorer",
    "LLMPointwiseScorer",
    "MalformedResponse",
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
    "VectorIndex",
    "WeightedFusion",
    "normalize",
]
