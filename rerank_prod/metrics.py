"""In-process metrics: call counts by source, fallback reasons, latency percentiles, cache counters,
circuit-breaker states.

Cheap enough to stay on in production; `snapshot()` is what an exporter (Prometheus, StatsD,
logs) reads periodically.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from rerank_prod.cache import CacheStats
from rerank_prod.types import RerankResult, SourceKind
from rerank_prod.validation import check_int


def latency_summary(latencies: Iterable[float]) -> dict[str, float | None]:
    """Mean and p50/p95/p99 (linear interpolation), all None when there is nothing to summarize."""
    values = np.asarray(list(latencies), dtype=np.float64)
    if not values.size:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99]).tolist()
    return {"p50": p50, "p95": p95, "p99": p99, "mean": float(values.mean())}


class _Snapshotting(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class RerankMetrics:
    """Thread-safe counters plus a sliding window of recent latencies."""

    def __init__(self, latency_window: int = 10_000) -> None:
        check_int("latency_window", latency_window)
        self._lock = threading.Lock()
        self._calls = 0
        self._by_source: Counter[str] = Counter()
        self._fallback_reasons: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._caches: dict[str, list[CacheStats]] = {}
        self._breakers: dict[str, _Snapshotting] = {}
        self._scorers: dict[str, _Snapshotting] = {}

    def track_cache(self, layer: str, stats: CacheStats) -> None:
        """Report a cache layer's counters under `snapshot()["cache"][layer]`; layers of the same
        name (several rerankers sharing these metrics) are summed, each stats object counted once."""
        with self._lock:
            tracked = self._caches.setdefault(layer, [])
            if not any(stats is known for known in tracked):
                tracked.append(stats)

    def track_breaker(self, backend: str, breaker: _Snapshotting) -> None:
        """Report a backend's circuit breaker under `snapshot()["circuit_breakers"][backend]`."""
        with self._lock:
            self._breakers[backend] = breaker

    def track_scorer(self, scorer: str, stats: _Snapshotting) -> None:
        """Report a scorer's own counters (e.g. `ChunkedScorer`'s texts chunked / truncated) under
        `snapshot()["scorers"][scorer]`."""
        with self._lock:
            self._scorers[scorer] = stats

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
                "cache": {layer: _summed(tracked) for layer, tracked in self._caches.items()},
            }
            breakers = dict(self._breakers)
            scorers = dict(self._scorers)
        snapshot["circuit_breakers"] = {backend: breaker.snapshot() for backend, breaker in breakers.items()}
        snapshot["scorers"] = {scorer: stats.snapshot() for scorer, stats in scorers.items()}
        snapshot["latency_s"] = latency_summary(latencies)
        return snapshot


def _summed(tracked: list[CacheStats]) -> dict[str, int]:
    total: Counter[str] = Counter({"hits": 0, "misses": 0, "errors": 0})
    for stats in tracked:
        total.update(stats.snapshot())
    return dict(total)
