"""Exceptions users catch or see in `rerank_source`, below every module that raises them."""

from __future__ import annotations

from typing import Any


class ScorerError(RuntimeError):
    """A backend could not produce scores; the pipeline turns this into a fallback."""


class ScoringTimeout(ScorerError):
    """The scorer did not answer within the call's time budget."""


class ScoringShed(ScoringTimeout):
    """Refused before any work: the queue ahead of the request would not let it finish in its budget."""


class PartialScores(ScoringTimeout):
    """The budget ended mid-way: `scores` holds the first `len(scores)` of `total` texts, in order."""

    def __init__(self, scores: list[float], total: int, elapsed_s: float) -> None:
        super().__init__(f"partial: {len(scores)}/{total} scored in {elapsed_s:.2f}s")
        self.scores = scores
        self.total = total
        self.elapsed_s = elapsed_s
        self.details: list[dict[str, Any]] = []
        """Per scored text, what the scorers recorded about it (set by the pipeline)."""
