"""Hybrid score fusion: re-ranker score + retriever score + BM25 over the candidate set.

Scores from different sources live on different scales, so each signal is normalized per query
before it is weighted. Reciprocal-rank fusion is offered for when scales cannot be trusted at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast, runtime_checkable

import numpy as np

from rerank_prod.types import Candidate
from rerank_prod.validation import check_int, check_number

# Beyond this magnitude a variance (squares) could overflow.
_SQUARE_SAFE = 1e150
Normalization = Literal["minmax", "zscore", "sigmoid", "none"]
NORMALIZATIONS: tuple[str, ...] = ("minmax", "zscore", "sigmoid", "none")


def normalize(scores: Sequence[float] | np.ndarray, method: Normalization) -> np.ndarray:
    """Per-query normalization; finite scores give finite results over the whole float range
    (+/-1e308 included: ranges and moments are taken on halved or rescaled values, which cannot
    overflow). All-equal scores carry no ordering information: min-max maps them to 0.5 and
    z-score to 0, instead of dividing by zero."""
    values = np.asarray(scores, dtype=np.float64)
    if method == "none" or values.size == 0:
        return values
    if method == "sigmoid":
        with np.errstate(over="ignore"):  # exp(1e308) is inf, and 1 / (1 + inf) the right 0.0
            return 1.0 / (1.0 + np.exp(-values))
    if method == "minmax":
        low, high = values.min(), values.max()
        if high == low:
            return np.full_like(values, 0.5)
        halved: np.ndarray = (values / 2.0 - low / 2.0) / (high / 2.0 - low / 2.0)  # halving is exact
        return halved
    if method == "zscore":
        scale = np.abs(values).max()
        scaled = values / scale if scale > _SQUARE_SAFE else values  # z-scores do not change with the scale
        std = scaled.std()
        return np.zeros_like(values) if std == 0 else (scaled - scaled.mean()) / std
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")


_LARGEST = np.finfo(np.float64).max


def _weighted_mean(signals: Sequence[tuple[float, np.ndarray]]) -> list[float]:
    """Sum of weight/total * signal: a convex combination of finite values, so finite (the clip
    only absorbs rounding at the very edge of the float range)."""
    total_weight = sum(weight for weight, _ in signals)
    fused = sum((weight / total_weight) * signal for weight, signal in signals)
    return cast(list[float], np.clip(fused, -_LARGEST, _LARGEST).tolist())


def import_bm25() -> tuple[Any, Any]:
    try:
        import bm25s
        import Stemmer
    except ImportError as exc:
        raise ImportError("BM25 fusion needs bm25s and PyStemmer: pip install 'rerank-prod[hybrid]'") from exc
    return bm25s, Stemmer


def bm25_scores(query: str, texts: Sequence[str]) -> np.ndarray:
    """BM25 of the query against the candidate set itself (stemmed, English stop words). A query or
    candidate set with no indexable term (only stop words) matches nothing: all zeros."""
    bm25s, Stemmer = import_bm25()
    stemmer = Stemmer.Stemmer("english")
    query_tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)[0]
    corpus = bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer, show_progress=False)
    if not query_tokens or not corpus.vocab:
        return np.zeros(len(texts))
    index = bm25s.BM25()
    index.index(corpus, show_progress=False)
    return np.asarray(index.get_scores(query_tokens), dtype=np.float64)


def _retrieval_scores(candidates: Sequence[Candidate]) -> np.ndarray | None:
    """Retriever scores as an array with NaN where a candidate has none; None when none has one."""
    scores = [c.retrieval_score for c in candidates]
    if all(s is None for s in scores):
        return None
    return np.array([np.nan if s is None else s for s in scores], dtype=np.float64)


def _check_weights(weights: dict[str, float]) -> None:
    for name, weight in weights.items():
        check_number(name, weight, allow_zero=True)
    if weights["rerank_weight"] == 0:
        raise ValueError("rerank_weight must be > 0: with no model signal, use the retriever order")
    if weights["bm25_weight"]:
        import_bm25()  # a missing extra is a configuration error: say so now, not on the first call


@runtime_checkable
class Fusion(Protocol):
    """Combines the model's scores with other signals into the final relevance score.

    `identity` names every setting that changes the fused scores (result-cache keys include it);
    `fuse` returns one finite score per candidate, higher is more relevant. It runs inside the
    pipeline's own logic: an exception from it is a bug and propagates to the caller.
    """

    @property
    def identity(self) -> str: ...

    def fuse(self, query: str, candidates: Sequence[Candidate], rerank_scores: Sequence[float]) -> list[float]: ...


@dataclass(frozen=True)
class WeightedFusion:
    """Weighted sum of per-query-normalized signals.

    Candidates without a retriever score get the lowest normalized value (0 for min-max); when no
    candidate has one, the retriever signal is left out and the other weights carry the score.
    """

    rerank_weight: float = 0.5
    retrieval_weight: float = 0.5
    bm25_weight: float = 0.0
    rerank_normalization: Normalization = "minmax"
    retrieval_normalization: Normalization = "minmax"
    bm25_normalization: Normalization = "minmax"

    def __post_init__(self) -> None:
        _check_weights(
            {
                "rerank_weight": self.rerank_weight,
                "retrieval_weight": self.retrieval_weight,
                "bm25_weight": self.bm25_weight,
            }
        )
        for name in ("rerank_normalization", "retrieval_normalization", "bm25_normalization"):
            if getattr(self, name) not in NORMALIZATIONS:
                raise ValueError(f"{name} must be one of {NORMALIZATIONS}, got {getattr(self, name)!r}")

    @property
    def identity(self) -> str:
        return (
            f"weighted:rerank={self.rerank_weight}/{self.rerank_normalization}"
            f",retrieval={self.retrieval_weight}/{self.retrieval_normalization}"
            f",bm25={self.bm25_weight}/{self.bm25_normalization}"
        )

    def fuse(self, query: str, candidates: Sequence[Candidate], rerank_scores: Sequence[float]) -> list[float]:
        signals = [(self.rerank_weight, normalize(rerank_scores, self.rerank_normalization))]
        retrieval = _retrieval_scores(candidates)
        if self.retrieval_weight and retrieval is not None:
            present = ~np.isnan(retrieval)
            normalized = np.zeros(len(candidates))
            normalized[present] = normalize(retrieval[present], self.retrieval_normalization)
            if not present.all():
                normalized[~present] = normalized[present].min()
            signals.append((self.retrieval_weight, normalized))
        if self.bm25_weight:
            bm25 = bm25_scores(query, [c.text for c in candidates])
            signals.append((self.bm25_weight, normalize(bm25, self.bm25_normalization)))
        return _weighted_mean(signals)


@dataclass(frozen=True)
class ReciprocalRankFusion:
    """Weighted RRF: sum of weight / (k + rank). The retriever's rank is its input order."""

    k: int = 60
    rerank_weight: float = 1.0
    retrieval_weight: float = 1.0
    bm25_weight: float = 0.0

    def __post_init__(self) -> None:
        check_int("k", self.k)
        _check_weights(
            {
                "rerank_weight": self.rerank_weight,
                "retrieval_weight": self.retrieval_weight,
                "bm25_weight": self.bm25_weight,
            }
        )

    @property
    def identity(self) -> str:
        return f"rrf:k={self.k},rerank={self.rerank_weight},retrieval={self.retrieval_weight},bm25={self.bm25_weight}"

    def _contribution(self, scores: np.ndarray, weight: float) -> np.ndarray:
        ranks = np.empty(len(scores))
        ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
        return weight / (self.k + ranks)

    def fuse(self, query: str, candidates: Sequence[Candidate], rerank_scores: Sequence[float]) -> list[float]:
        count = len(candidates)
        total = self._contribution(np.asarray(rerank_scores, dtype=np.float64), self.rerank_weight)
        if self.retrieval_weight:
            total += self.retrieval_weight / (self.k + np.arange(1, count + 1))
        if self.bm25_weight:
            total += self._contribution(bm25_scores(query, [c.text for c in candidates]), self.bm25_weight)
        return cast(list[float], total.tolist())
