"""rerank-prod's shared scoring core: framework-neutral, importable without torch or any framework."""

from rerank_prod.cache import CacheBackend, CacheStats, EntryLog, InMemoryCache, ResultCache, ScoreCache
from rerank_prod.cache_redis import RedisCache
from rerank_prod.fusion import ReciprocalRankFusion, WeightedFusion, normalize
from rerank_prod.gate import ConfidenceGate
from rerank_prod.metrics import RerankMetrics
from rerank_prod.pipeline import Reranker, ScoringTimeout
from rerank_prod.scoring import DEFAULT_CROSS_ENCODER, CrossEncoderScorer, Deadline, Scorer, ScorerError
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
    "CacheBackend",
    "CacheStats",
    "Candidate",
    "ConfidenceGate",
    "CrossEncoderScorer",
    "Deadline",
    "EntryLog",
    "GateDecision",
    "InMemoryCache",
    "RankedCandidate",
    "RedisCache",
    "ReciprocalRankFusion",
    "RerankMetrics",
    "RerankResult",
    "RerankSource",
    "Reranker",
    "ResultCache",
    "ScoreCache",
    "Scorer",
    "ScorerError",
    "ScoringTimeout",
    "SemanticCache",
    "SourceKind",
    "VectorIndex",
    "WeightedFusion",
    "normalize",
]
