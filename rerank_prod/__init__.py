"""rerank-prod's shared scoring core: framework-neutral, importable without torch or any framework."""

from rerank_prod.cache import CacheBackend, InMemoryCache, ResultCache, ScoreCache
from rerank_prod.fusion import ReciprocalRankFusion, WeightedFusion, normalize
from rerank_prod.gate import ConfidenceGate
from rerank_prod.metrics import RerankMetrics
from rerank_prod.pipeline import Reranker, ScoringTimeout
from rerank_prod.scoring import DEFAULT_CROSS_ENCODER, CrossEncoderScorer, Deadline, Scorer, ScorerError
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
    "Candidate",
    "ConfidenceGate",
    "CrossEncoderScorer",
    "Deadline",
    "GateDecision",
    "InMemoryCache",
    "RankedCandidate",
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
    "SourceKind",
    "WeightedFusion",
    "normalize",
]
