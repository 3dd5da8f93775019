"""Scorer backends behind one protocol. Optional dependencies are imported when a scorer is built."""

from rerank_prod.scoring.base import LocalScorer, Scorer, checked_scores
from rerank_prod.scoring.bm25 import BM25Scorer
from rerank_prod.scoring.cohere import CohereScorer
from rerank_prod.scoring.cross_encoder import DEFAULT_CROSS_ENCODER, CrossEncoderScorer
from rerank_prod.scoring.embedding import OpenAIEmbeddingScorer, SentenceTransformerEmbeddingScorer
from rerank_prod.scoring.http_servers import RerankServerScorer, TEIScorer
from rerank_prod.scoring.llm import LLMListwiseScorer, LLMPointwiseScorer

__all__ = [
    "BM25Scorer",
    "DEFAULT_CROSS_ENCODER",
    "CohereScorer",
    "CrossEncoderScorer",
    "LLMListwiseScorer",
    "LLMPointwiseScorer",
    "LocalScorer",
    "OpenAIEmbeddingScorer",
    "RerankServerScorer",
    "Scorer",
    "SentenceTransformerEmbeddingScorer",
    "TEIScorer",
    "checked_scores",
]
