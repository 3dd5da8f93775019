"""Says once, loudly, when a configured re-ranker never re-ranks: every call so far fell back (a budget
too short for the model, a backend that is down). Per-call `rerank_source` says it too, but nobody reads
every result; this names the cause and the fix where operators look, the `rerank_prod` logger."""

from __future__ import annotations

import logging
import warnings
from collections import Counter

from rerank_prod.types import RerankResult, SourceKind

logger = logging.getLogger("rerank_prod")

CALLS_BEFORE_WARNING = 10
"""Fallbacks in a row, from the first call on, before it is worth saying: a cold start may fall back once."""


class NeverRerankedWatch:
    """Fed every result (by `RerankMetrics.record`, under its lock); warns once when the first
    `CALLS_BEFORE_WARNING` calls that tried a model all fell back. Gate skips are neither."""

    def __init__(self, calls_before_warning: int = CALLS_BEFORE_WARNING) -> None:
        self.calls_before_warning = calls_before_warning
        self._fallbacks: Counter[str] = Counter()
        self._done = False  # a re-ranked call was seen, or the warning was given

    def observe(self, result: RerankResult) -> None:
        if self._done or result.source.kind is SourceKind.SKIPPED:
            return
        if result.source.kind is not SourceKind.FALLBACK:
            self._done = True
            return
        self._fallbacks[result.source.detail] += 1
        if sum(self._fallbacks.values()) >= self.calls_before_warning:
            self._done = True
            self._warn(result)

    def _warn(self, last: RerankResult) -> None:
        reason, count = self._fallbacks.most_common(1)[0]
        message = (
            f"rerank-prod has not re-ranked once: all {sum(self._fallbacks.values())} calls so far fell back "
            f"(most often {count}x: {reason!r}; the last took {last.latency_s:.3f}s). {_fix(reason)}"
        )
        logger.error(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)


def _fix(reason: str) -> str:
    if "timeout" in reason:
        return (
            "The time budget is too short for this model on this hardware: raise timeout_s (measure p95 with "
            "`rerank-prod eval`), score fewer candidates, or use a smaller or faster model."
        )
    return "The scorer fails on every call: check that its backend is reachable and configured (see the log above)."
