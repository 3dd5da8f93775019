"""BM25 over the candidate set: the lexical order the articles name as a fallback (and a cheap scorer)."""

from __future__ import annotations

from collections.abc import Sequence

from rerank_prod.deadline import Deadline
from rerank_prod.errors import ScoringTimeout
from rerank_prod.fusion import bm25_scores, import_bm25
from rerank_prod.scoring.base import LocalScorer, checked_scores


class BM25Scorer(LocalScorer):
    """Scores each text by BM25 against the query, with the call's candidates as the corpus.

    Milliseconds for a hundred passages and no model weights, so it suits `fallback_scorer`: when
    the primary model times out or fails, the call still gets a query-aware order instead of the
    retriever's. Scores depend on the other texts (IDF over the candidate set), so the pair and
    semantic caches never hold them. Needs the `hybrid` extra (bm25s, PyStemmer).
    """

    independent_scores = False

    def __init__(self) -> None:
        import_bm25()  # a missing extra is a configuration error: say so at construction

    @property
    def name(self) -> str:
        return "bm25"

    @property
    def identity(self) -> str:
        return "bm25:candidate-set|stemmer=english|stopwords=en"

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        """One BM25 score per text (0 for texts sharing no term with the query); raises
        `ScoringTimeout` instead of starting when the budget is already spent."""
        if not texts:
            return []
        if deadline is not None and deadline.expired:
            raise ScoringTimeout("bm25: budget spent before scoring")
        return checked_scores(bm25_scores(query, texts).tolist(), len(texts), self.name)

    def __repr__(self) -> str:
        return "BM25Scorer()"
