"""Per-call records and their aggregates: what the monitor keeps, logs and alerts on, and what
`rerank-prod report` reads back.

Label-free quality signals (no relevance judgments needed), computed per call from the model's
own scores over *all* candidates, with k = min(`gain_k`, results returned):

- `gain`: how much better, by the model's scores, the top-k we returned is than the top-k the
  retriever would have returned, as a fraction of the call's score range:
  (mean score of our top-k - mean score of the retriever's top-k) / (max score - min score).
  0 means re-ranking changed nothing the model cares about (the retriever's top-k was already its
  top-k, or every score was equal); 1 is the largest possible gain (the retriever's top-k were the
  model's worst). It can go below 0 when fusion or a threshold keeps lower-scored candidates.
  None when some candidate has no model score (fallback to retriever order, gate skip).
  A window whose mean gain stays near 0 is paying for a model that does not change the answer.
- `moved`: the fraction of our top-k the retriever had *not* put in its top-k (0: same set).
- `margin`: relevance of the first minus the second result (a confidence signal), None when the
  model did not score the call or fewer than two results were returned.
- `top_score`: the first result's raw model score (None when the model did not score it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from rerank_prod.metrics import latency_summary
from rerank_prod.observability.base import Finished, fallback_reason
from rerank_prod.types import SourceKind


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One rerank call, without query or passage text. `ts`: wall-clock end of the call (epoch s)."""

    ts: float
    model: str
    scorer: str
    source: str
    latency_s: float
    candidates: int
    returned: int
    top_score: float | None
    gain: float | None
    moved: float | None
    margin: float | None
    gate: str | None
    fallback_to: str | None = None
    fallback_reason: str | None = None

    def as_event(self) -> dict[str, Any]:
        """The JSON-lines form (`{"event": "call", ...}`)."""
        return {"event": "call", **{name: getattr(self, name) for name in _RECORD_FIELDS}}

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> CallRecord:
        """Inverse of `as_event`; raises KeyError/TypeError/ValueError on a malformed event."""
        values = {name: event[name] for name in _RECORD_FIELDS if name in event}
        record = cls(**values)
        if not all(isinstance(getattr(record, name), (int, float)) for name in ("ts", "latency_s")):
            raise TypeError("ts and latency_s must be numbers")
        return record


_RECORD_FIELDS = tuple(field.name for field in fields(CallRecord))


def record_call(outcome: Finished, *, ts: float, model: str, scorer: str, gain_k: int) -> CallRecord:
    """The record of one finished call (signals defined in the module docstring)."""
    result = outcome.result
    items = result.items
    k = min(gain_k, len(items))
    delivered = [item.original_rank for item in items[:k]]
    moved = sum(1 for rank in delivered if rank >= k) / k if k else None
    scored = items[0].rerank_score is not None if items else False
    margin = items[0].relevance_score - items[1].relevance_score if scored and len(items) > 1 else None
    to = reason = None
    if result.source.kind is SourceKind.FALLBACK:
        to, reason = fallback_reason(result.source)
    gate = None if result.gate is None else ("rerank" if result.gate.rerank else "skip")
    return CallRecord(
        ts=ts,
        model=model,
        scorer=scorer,
        source=result.source.kind.value,
        latency_s=result.latency_s,
        candidates=len(outcome.ranking),
        returned=len(items),
        top_score=items[0].rerank_score if items else None,
        gain=_gain(outcome, delivered),
        moved=moved,
        margin=margin,
        gate=gate,
        fallback_to=to,
        fallback_reason=reason,
    )


def _gain(outcome: Finished, delivered: Sequence[int]) -> float | None:
    """Plain Python: a few dozen floats per call, where numpy's per-call overhead would dominate."""
    scores: list[float] = [0.0] * len(outcome.ranking)
    for index, _, score in outcome.ranking:
        if score is None:
            return None
        scores[index] = score
    if not delivered:
        return None
    spread = max(scores) - min(scores)
    if spread <= 0:
        return 0.0
    k = len(delivered)
    return (sum(scores[i] for i in delivered) - sum(scores[:k])) / k / spread


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Aggregates over the calls that ended in [start, end]. Rates are fractions of `calls`;
    `complete` is False when older records of the window were already dropped (retention or
    the record cap), so the numbers cover less than the window. `breakers_open`: circuit
    breakers open right now (monitor only; None in reports)."""

    window_s: float
    start: float
    end: float
    calls: int
    complete: bool
    latency_mean_s: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    latency_max_s: float | None
    by_source: dict[str, int]
    fallback_rate: float | None
    shed_rate: float | None
    skip_rate: float | None
    gain_mean: float | None
    gain_p50: float | None
    gain_calls: int
    moved_mean: float | None
    top_score_mean: float | None
    breakers_open: int | None = None


NUMERIC_STATISTICS = frozenset(
    field.name for field in fields(WindowStats) if field.name not in {"by_source", "complete", "start", "end"}
)
"""The `WindowStats` fields an alert rule can watch."""


def summarize(
    records: Sequence[CallRecord], *, start: float, end: float, complete: bool = True, breakers_open: int | None = None
) -> WindowStats:
    """Aggregate `records` (already cut to the window [start, end])."""
    calls = len(records)
    latency = latency_summary(r.latency_s for r in records)
    by_source = Counter(r.source for r in records)
    gains = [r.gain for r in records if r.gain is not None]
    moved = [r.moved for r in records if r.moved is not None]
    tops = [r.top_score for r in records if r.top_score is not None]

    def rate(count: int) -> float | None:
        return count / calls if calls else None

    return WindowStats(
        window_s=end - start,
        start=start,
        end=end,
        calls=calls,
        complete=complete,
        latency_mean_s=latency["mean"],
        latency_p50_s=latency["p50"],
        latency_p95_s=latency["p95"],
        latency_p99_s=latency["p99"],
        latency_max_s=max((r.latency_s for r in records), default=None),
        by_source=dict(by_source),
        fallback_rate=rate(by_source[SourceKind.FALLBACK.value]),
        shed_rate=rate(sum(1 for r in records if r.fallback_reason == "shed")),
        skip_rate=rate(sum(1 for r in records if r.gate == "skip")),
        gain_mean=float(np.mean(gains)) if gains else None,
        gain_p50=float(np.median(gains)) if gains else None,
        gain_calls=len(gains),
        moved_mean=float(np.mean(moved)) if moved else None,
        top_score_mean=float(np.mean(tops)) if tops else None,
        breakers_open=breakers_open,
    )
