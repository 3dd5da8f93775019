"""In-process metrics: call counts by source, fallback reasons, gate skips, latency percentiles.

Cheap enough to stay on in production; `snapshot()` is what an exporter (Prometheus, StatsD,
logs) reads periodically.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import numpy as np

from rerank_prod.types import RerankResult, SourceKind


def latency_summary(latencies: Iterable[float]) -> dict[str, float | None]:
    """Mean and p50/p95/p99 (linear interpolation), all None when there is nothing to summarize."""
    values = np.asarray(list(latencies), dtype=np.float64)
    if not values.size:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99]).tolist()
    return {"p50": p50, "p95": p95, "p99": p99, "mean": float(values.mean())}


class RerankMetrics:
    """Thread-safe counters plus a sliding window of recent latencies."""

    def __init__(self, latency_window: int = 10_000) -> None:
        if isinstance(latency_window, bool) or not isinstance(latency_window, int) or latency_window < 1:
            raise ValueError(f"latency_window must be a positive int, got {latency_window!r}")
        self._lock = threading.Lock()
        self._calls = 0
        self._by_source: Counter[str] = Counter()
        self._fallback_reasons: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=latency_window)

    def record(self, result: RerankResult) -> None:
        with self._lock:
            self._calls += 1
            self._by_source[result.source.kind.value] += 1
            if result.source.kind is SourceKind.FALLBACK:
                self._fallback_reasons[result.source.detail] += 1
            self._latencies.append(result.latency_s)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            latencies = list(self._latencies)
            by_source = {kind.value: self._by_source[kind.value] for kind in SourceKind}
            snapshot: dict[str, Any] = {
                "calls": self._calls,
                "by_source": by_source,
                "fallback_reasons": dict(self._fallback_reasons),
            }
        snapshot["latency_s"] = latency_summary(latencies)
        return snapshot
