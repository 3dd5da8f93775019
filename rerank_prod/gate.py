"""Selective re-ranking: skip the model when the retriever is already confident.

A retriever is confident when, after min-max normalization of its scores for this query, the
best candidate stands clearly above the second (top gap) and/or the top-k scores are spread out
rather than flat (top-k standard deviation). Flat top scores are where a re-ranker earns its cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from rerank_prod.fusion import normalize
from rerank_prod.types import Candidate, GateDecision
from rerank_prod.validation import check_int, check_number


@runtime_checkable
class Gate(Protocol):
    """Decides per call whether the model should re-rank (`GateDecision.rerank`) and says why."""

    def decide(self, candidates: Sequence[Candidate]) -> GateDecision: ...


@dataclass(frozen=True)
class ConfidenceGate:
    """Skips re-ranking when every enabled signal says the retriever is confident.

    `min_top_gap`: skip when (top1 - top2) / (max - min) >= this. `min_top_k_std`: skip when the
    standard deviation of the normalized top-`top_k` scores >= this. None disables a signal.
    Candidates without retriever scores are always re-ranked.
    """

    min_top_gap: float | None = 0.3
    min_top_k_std: float | None = None
    top_k: int = 5

    def __post_init__(self) -> None:
        if self.min_top_gap is None and self.min_top_k_std is None:
            raise ValueError("ConfidenceGate needs min_top_gap or min_top_k_std (or both)")
        for name in ("min_top_gap", "min_top_k_std"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), allow_zero=True, at_most=1)
        check_int("top_k", self.top_k, minimum=2)

    def decide(self, candidates: Sequence[Candidate]) -> GateDecision:
        scores = [c.retrieval_score for c in candidates]
        if len(scores) < 2:
            return GateDecision(rerank=True, reason="fewer than 2 candidates")
        if any(s is None for s in scores):
            return GateDecision(rerank=True, reason="no retriever scores")
        top = np.sort(normalize([s for s in scores if s is not None], "minmax"))[::-1]
        gap = float(top[0] - top[1])
        spread = float(top[: self.top_k].std())
        checks = []
        if self.min_top_gap is not None:
            checks.append((gap >= self.min_top_gap, f"top gap {gap:.3f} {{}} {self.min_top_gap}"))
        if self.min_top_k_std is not None:
            checks.append(
                (spread >= self.min_top_k_std, f"top-{self.top_k} std {spread:.3f} {{}} {self.min_top_k_std}")
            )
        confident = all(passed for passed, _ in checks)
        reason = ", ".join(text.format(">=" if passed else "<") for passed, text in checks)
        return GateDecision(rerank=not confident, reason=reason, top_gap=gap, top_k_std=spread)
