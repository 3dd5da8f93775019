"""Scorer backends behind one protocol. Optional dependencies are imported when a scorer is built."""

from rerank_prod.scoring.base import Deadline, Scorer, ScorerError, checked_scores
from rerank_prod.scoring.cross_encoder import DEFAULT_CROSS_ENCODER, CrossEncoderScorer

__all__ = ["DEFAULT_CROSS_ENCODER", "CrossEncoderScorer", "Deadline", "Scorer", "ScorerError", "checked_scores"]
