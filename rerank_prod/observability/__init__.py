"""Observability for rerank calls: Prometheus metrics, OpenTelemetry spans, a monitor with alerts.

Each is an observer handed to the pipeline: `Reranker(scorer, observers=[...])`.

- `PrometheusMetrics` (extra `prometheus`): histograms and counters, served or mounted as `/metrics`.
- `OpenTelemetryTracing` (extra `otel`): a span per call, child spans per stage.
- `RerankMonitor`: per-call records, time-windowed aggregates, alert hooks, a JSON-lines log that
  `rerank-prod report` turns into a markdown report.

`PrometheusMetrics` and `OpenTelemetryTracing` import their library on first use, so importing this
package needs neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rerank_prod.observability.alerts import (
    Alert,
    AlertRule,
    breaker_open,
    fallback_rate_over,
    gain_below,
    latency_over,
    shed_rate_over,
)
from rerank_prod.observability.base import BoundObserver, Finished, Observation, Observer
from rerank_prod.observability.monitor import RerankMonitor
from rerank_prod.observability.records import CallRecord, WindowStats

if TYPE_CHECKING:
    from rerank_prod.observability.prometheus import PrometheusMetrics
    from rerank_prod.observability.tracing import OpenTelemetryTracing

_OPTIONAL = {
    "PrometheusMetrics": "rerank_prod.observability.prometheus",
    "OpenTelemetryTracing": "rerank_prod.observability.tracing",
}

__all__ = [
    "Alert",
    "AlertRule",
    "BoundObserver",
    "CallRecord",
    "Finished",
    "Observation",
    "Observer",
    "OpenTelemetryTracing",
    "PrometheusMetrics",
    "RerankMonitor",
    "WindowStats",
    "breaker_open",
    "fallback_rate_over",
    "gain_below",
    "latency_over",
    "shed_rate_over",
]


def __getattr__(name: str) -> Any:
    if name in _OPTIONAL:
        return getattr(importlib.import_module(_OPTIONAL[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
