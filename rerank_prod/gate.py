"""Selective re-ranking: skip the model when the retriever is already confident.

A retriever is confident when the best candidate stands clearly above the second (top gap) and
the top-k scores are spread out rather than flat (top-k variance or standard deviation). Flat top
scores are where a re-ranker earns its cost. The signals are read either on the retriever's raw
scores (the articles' "top-5 variance < 0.01 -> re-rank; top gap > 0.3 -> skip", meaningful when the
scores have a known scale such as cosine similarity) or after per-query min-max normalization
(scale-free, for BM25 or scores of unknown range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from rerank_prod.fusion import normalize
from rerank_prod.types import Candidate, GateDecision
from rerank_prod.validation import check_int, check_number

GateScale = Literal["normalized", "raw"]
GATE_SCALES: tuple[str, ...] = ("normalized", "raw")
_SIGNALS = ("min_top_gap", "min_top_k_std", "min_top_k_variance")


@runtime_checkable
class Gate(Protocol):
    """Decides per call whether the model should re-rank (`GateDecision.rerank`) and says why."""

    def decide(self, candidates: Sequence[Candidate]) -> GateDecision: ...


class _Unset(Enum):
    UNSET = "unset"


_UNSET = _Unset.UNSET
DEFAULT_RULE: dict[str, float | None] = {"min_top_gap": 0.3, "min_top_k_variance": 0.05, "min_top_k_std": None}
"""The rule `ConfidenceGate()` applies when no threshold is named: chosen by `rerank-prod tune`'s gate
sweep (see the class docstring)."""


@dataclass(frozen=True, init=False)
class ConfidenceGate:
    """Skips re-ranking only when every enabled signal says the retriever is confident.

    - `min_top_gap`: confident when top1 - top2 >= this.
    - `min_top_k_variance` / `min_top_k_std`: confident when the variance / standard deviation of
      the top-`top_k` scores >= this; below it the top is flat and the model re-ranks.
    - `scale`: "normalized" (default) reads the signals after per-query min-max normalization, so
      thresholds are in [0, 1]; "raw" reads the retriever's own scores.
    The signals you name are the rule, the others are off (None turns a named one off; at least one
    is needed). Because all enabled signals must agree, a flat top always re-ranks whatever the gap:
    `ConfidenceGate(min_top_gap=0.3, min_top_k_variance=0.01, scale="raw")` is the articles' rule.
    Candidates without retriever scores are always re-ranked.

    Naming none gives `DEFAULT_RULE`: top gap >= 0.3 and top-5 variance >= 0.05, normalized (raw
    thresholds depend on the retriever's scale, so there is no raw default). Picked by data, not
    taste: `rerank-prod tune`'s gate sweep on the 80 SciFact train queries the shared cross-encoder
    was not trained on (BM25 top-20, NDCG@10, 5-fold CV), where it ties for the best NDCG@10 behind
    both the 50/50 fusion (+0.0016) and the model alone (+0.0208) while skipping 52.5% of calls, and,
    of the tied rules, loses least on 160 queries the model was trained on (-0.017). The README's
    "How ConfidenceGate()'s default was chosen" has the table.
    """

    min_top_gap: float | None
    min_top_k_std: float | None
    top_k: int
    min_top_k_variance: float | None
    scale: GateScale

    def __init__(
        self,
        min_top_gap: float | None | _Unset = _UNSET,
        min_top_k_std: float | None | _Unset = _UNSET,
        top_k: int = 5,
        min_top_k_variance: float | None | _Unset = _UNSET,
        scale: GateScale = "normalized",
    ) -> None:
        named = {"min_top_gap": min_top_gap, "min_top_k_std": min_top_k_std, "min_top_k_variance": min_top_k_variance}
        if scale not in GATE_SCALES:
            raise ValueError(f"scale must be one of {GATE_SCALES}, got {scale!r}")
        if all(value is _UNSET for value in named.values()):
            if scale == "raw":
                raise ValueError(
                    "a raw-score gate needs its thresholds named (min_top_gap, min_top_k_variance or "
                    "min_top_k_std): they depend on the retriever's score scale"
                )
            signals = dict(DEFAULT_RULE)
        else:
            signals = {name: None if value is _UNSET else value for name, value in named.items()}
        for name, value in signals.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "top_k", top_k)
        object.__setattr__(self, "scale", scale)
        if all(getattr(self, name) is None for name in _SIGNALS):
            raise ValueError("ConfidenceGate needs min_top_gap, min_top_k_variance or min_top_k_std (at least one)")
        bound = 1.0 if self.scale == "normalized" else None
        for name in _SIGNALS:
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), allow_zero=True, at_most=bound)
        check_int("top_k", self.top_k, minimum=2)

    def decide(self, candidates: Sequence[Candidate]) -> GateDecision:
        """Re-rank unless every enabled signal clears its threshold; `reason` lists each check."""
        scores = [c.retrieval_score for c in candidates]
        if len(scores) < 2:
            return GateDecision(rerank=True, reason="fewer than 2 candidates")
        if any(s is None for s in scores):
            return GateDecision(rerank=True, reason="no retriever scores")
        values = np.asarray([s for s in scores if s is not None], dtype=np.float64)
        top = np.sort(normalize(values, "minmax") if self.scale == "normalized" else values)[::-1]
        gap = float(top[0] - top[1])
        variance = float(top[: self.top_k].var())
        spread = float(np.sqrt(variance))
        measured = {"min_top_gap": ("top gap", gap), "min_top_k_variance": (f"top-{self.top_k} variance", variance)}
        measured["min_top_k_std"] = (f"top-{self.top_k} std", spread)
        checks = []
        for name in _SIGNALS:
            threshold = getattr(self, name)
            if threshold is not None:
                label, value = measured[name]
                passed = value >= threshold
                shown = f"{value:.3g}" if name == "min_top_k_variance" else f"{value:.3f}"
                checks.append((passed, f"{label} {shown} {'>=' if passed else '<'} {threshold}"))
        confident = all(passed for passed, _ in checks)
        reason = ", ".join(text for _, text in checks) + (" (raw scores)" if self.scale == "raw" else "")
        return GateDecision(rerank=not confident, reason=reason, top_gap=gap, top_k_std=spread, top_k_variance=variance)
