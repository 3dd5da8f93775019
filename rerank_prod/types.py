"""The core's data types: what goes into a rerank call and what comes out.

Adapters translate framework objects (LangChain `Document`, LlamaIndex `NodeWithScore`) to
`Candidate` and read `RankedCandidate.metadata()` back, so both frameworks see the same contract.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from numbers import Real
from typing import Any


def as_finite_float(value: object, what: str) -> float:
    """Plain, finite Python float from any real number (numpy included); bools are rejected."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number}")
    return number


@dataclass(frozen=True, slots=True)
class Candidate:
    """One retrieved passage. `retrieval_score` must be higher-is-better (similarity, BM25)."""

    text: str
    id: str | None = None
    retrieval_score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Candidate.text must be str, got {type(self.text).__name__}")
        if self.id is not None and not isinstance(self.id, str):
            raise TypeError(f"Candidate.id must be str or None, got {type(self.id).__name__}")
        if self.retrieval_score is not None:
            score = as_finite_float(self.retrieval_score, "Candidate.retrieval_score")
            object.__setattr__(self, "retrieval_score", score)


class SourceKind(str, Enum):
    """Why a result is in the order it is in."""

    MODEL = "model"
    CACHE = "cache"
    FALLBACK = "fallback"
    SKIPPED = "skipped"
    PARTIAL = "partial"
    """The budget ended mid-scoring: the scored candidates first (by the model), the rest in retriever order."""


@dataclass(frozen=True, slots=True)
class RerankSource:
    """`kind` plus a short human-readable detail; `str()` is what lands in `rerank_source`."""

    kind: SourceKind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.detail}" if self.detail else self.kind.value


@dataclass(frozen=True, slots=True)
class RankedCandidate:
    """A candidate in its final position, with the scores that put it there. `score_details`: what
    the scorer said about this pair when it scored it in this call (None when it did not: cache,
    fallback to retriever order, gate skip), e.g. `ChunkedScorer`'s windows."""

    candidate: Candidate
    original_rank: int
    relevance_score: float
    rerank_score: float | None
    source: RerankSource
    score_details: Mapping[str, Any] | None = None

    @property
    def retrieval_score(self) -> float | None:
        return self.candidate.retrieval_score

    def metadata(self) -> dict[str, Any]:
        """The result contract shared by both adapters (plain Python types only). The chunking keys
        are None unless a `ChunkedScorer` scored the pair in this call: `rerank_chunks` windows
        scored, `rerank_best_chunk` the 0-based window with the highest score (the text's score
        under the default max), `rerank_truncated` whether part of the text went unscored."""
        details = self.score_details or {}
        chunks, best, truncated = (details.get(key) for key in ("chunks_scored", "best_chunk", "truncated"))
        return {
            "relevance_score": self.relevance_score,
            "rerank_score": self.rerank_score,
            "retrieval_score": self.retrieval_score,
            "original_rank": self.original_rank,
            "rerank_source": str(self.source),
            "rerank_chunks": None if chunks is None else int(chunks),
            "rerank_best_chunk": None if best is None else int(best),
            "rerank_truncated": None if truncated is None else bool(truncated),
        }


RESULT_METADATA_KEYS = (
    "relevance_score",
    "rerank_score",
    "retrieval_score",
    "original_rank",
    "rerank_source",
    "rerank_chunks",
    "rerank_best_chunk",
    "rerank_truncated",
)


@dataclass(frozen=True, slots=True)
class GateDecision:
    """What the selective re-ranking gate decided for one call, and the numbers behind it."""

    rerank: bool
    reason: str
    top_gap: float | None = None
    top_k_std: float | None = None
    top_k_variance: float | None = None


@dataclass(frozen=True, slots=True)
class RerankResult:
    """The selected candidates, best first, and how the call went."""

    query: str
    items: tuple[RankedCandidate, ...]
    source: RerankSource
    latency_s: float
    gate: GateDecision | None = None

    def __iter__(self) -> Iterator[RankedCandidate]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> RankedCandidate:
        return self.items[index]
