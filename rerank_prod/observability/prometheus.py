"""Prometheus metrics for rerank calls (the `prometheus` extra: prometheus-client).

    metrics = PrometheusMetrics()                 # prometheus_client's default registry
    reranker = Reranker(scorer, observers=[metrics])
    metrics.serve(9464)                           # or mount metrics.asgi_app() / metrics.wsgi_app()

Every series carries three bounded labels: `reranker` (the name given here), `model` (the primary
scorer's name) and `scorer` (its class). Never query text. Any number of `PrometheusMetrics` and
rerankers share one registry without clashing: the metric families are registered once per registry
and each reranker writes its own label values.

Per call (updated as calls end):
- `rerank_prod_call_duration_seconds{source}` histogram; its `_count` is the calls by source
  (model, cache, partial: anytime answers, fallback, skipped).
- `rerank_prod_stage_duration_seconds{stage}` histogram: cache.result.read, cache.score.read,
  cache.semantic.embed, gate, score, score.fallback, fusion, cache.*.write, ... (every stage the
  pipeline runs; a new one appears by itself).
- `rerank_prod_fallbacks_total{to, reason}`: to = secondary | retriever_order; reason = timeout,
  shed or the failure's exception type (CircuitOpenError, ConnectionError, ...).
- `rerank_prod_gate_skips_total`: calls the confidence gate answered in retriever order.
At scrape time (read from the live objects, nothing double counted):
- `rerank_prod_cache_requests_total{layer, result}`: result = hit | miss | error per cache layer.
- `rerank_prod_circuit_breaker_state{backend, state}` (1 for the current state),
  `rerank_prod_circuit_breaker_opened_total{backend}`, `rerank_prod_circuit_breaker_rejected_total{backend}`.
- Local models' scoring engines, labelled by `backend` (the model) only, since one engine serves
  every reranker of its model in the process: `rerank_prod_engine_requests_total{backend, outcome}`
  (outcome = served, partial, timeout, shed; goodput = the rate of served + partial),
  `rerank_prod_engine_pairs_total{backend, kind}` (kind = scored, wasted: finished after their
  caller's deadline) and `rerank_prod_engine_queue_depth{backend}` (requests waiting).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast
from wsgiref.simple_server import WSGIServer

from rerank_prod.engine import ScoringEngine
from rerank_prod.observability.base import Finished, fallback_reason, scorer_kind
from rerank_prod.observability.base import breakers as reranker_breakers
from rerank_prod.resilience import CircuitBreaker
from rerank_prod.scoring.chunked import ChunkedScorer
from rerank_prod.scoring.dependencies import require_extra
from rerank_prod.types import SourceKind
from rerank_prod.validation import check_int, check_text

require_extra("prometheus_client", "PrometheusMetrics", "prometheus")

from prometheus_client import (  # noqa: E402  (after the check that names the extra)
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    make_asgi_app,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric  # noqa: E402

if TYPE_CHECKING:
    from rerank_prod.pipeline import Reranker

DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: from an exact cache hit (well under 1 ms) to a slow remote call."""

_BASE_LABELS = ("reranker", "model", "scorer")


class _Families:
    """The metric families of one registry, created once however many rerankers report to it."""

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.calls = Histogram(
            "rerank_prod_call_duration_seconds",
            "Latency of rerank calls, by what produced the ranking.",
            (*_BASE_LABELS, "source"),
            registry=registry,
            buckets=buckets,
        )
        self.stages = Histogram(
            "rerank_prod_stage_duration_seconds",
            "Time spent in each stage of a rerank call (cache I/O, gate, scoring, fusion).",
            (*_BASE_LABELS, "stage"),
            registry=registry,
            buckets=buckets,
        )
        self.fallbacks = Counter(
            "rerank_prod_fallbacks",
            "Calls that fell back, by where to and why.",
            (*_BASE_LABELS, "to", "reason"),
            registry=registry,
        )
        self.gate_skips = Counter(
            "rerank_prod_gate_skips",
            "Calls the confidence gate answered in retriever order.",
            _BASE_LABELS,
            registry=registry,
        )
        self.live = _LiveState()
        registry.register(self.live)


_REGISTRIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def _families(registry: CollectorRegistry, buckets: tuple[float, ...]) -> _Families:
    with _REGISTRIES_LOCK:
        families = _REGISTRIES.get(registry)
        if families is None:
            families = _REGISTRIES[registry] = _Families(registry, buckets)
        elif families.buckets != buckets:
            raise ValueError(
                f"buckets {buckets} differ from the ones this registry's rerank_prod histograms were created with "
                f"({families.buckets}); use one set per registry"
            )
        return families


class PrometheusMetrics:
    """An observer (`Reranker(observers=[...])`) exporting rerank metrics to a Prometheus registry.

    - `registry`: a `prometheus_client.CollectorRegistry` (default: the library's global one,
      which `prometheus_client.start_http_server` and most frameworks' integrations serve).
    - `name`: the `reranker` label value, to tell rerankers with the same model apart (bounded:
      a name you choose, never per-request data).
    - `buckets`: histogram bucket bounds in seconds; one set per registry.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        name: str = "default",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise TypeError(f"registry must be a prometheus_client.CollectorRegistry, got {type(registry).__name__}")
        self.name = check_text("name", name)
        bounds = tuple(float(bound) for bound in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"buckets must be increasing numbers, got {buckets!r}")
        self.registry: CollectorRegistry = REGISTRY if registry is None else registry
        self._families = _families(self.registry, bounds)

    def bind(self, reranker: Reranker) -> _BoundMetrics:
        """Observer hook: called by `Reranker` once; its caches and breakers are read at scrape time."""
        bound = _BoundMetrics(self._families, (self.name, reranker.scorer.name, scorer_kind(reranker)))
        self._families.live.track(bound.labels, reranker)
        return bound

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve `/metrics` on `addr:port` from a daemon thread (port 0: any free port, read
        `server.server_port`). Stop it with `server.shutdown(); server.server_close()`."""
        check_int("port", port, minimum=0)
        server, _ = start_http_server(port, addr, self.registry)
        return server

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving this registry, to mount at e.g. `/metrics` in Starlette/FastAPI."""
        return make_asgi_app(self.registry)

    def wsgi_app(self) -> Callable[..., Any]:
        """A WSGI app serving this registry, to mount in Flask/Django/any WSGI server."""
        return make_wsgi_app(self.registry)

    def __repr__(self) -> str:
        return f"PrometheusMetrics(name={self.name!r})"


class _BoundMetrics:
    """One reranker's series, label children resolved once (an exact cache hit stays cheap)."""

    __slots__ = ("labels", "_families", "_calls", "_stages", "_gate_skips")

    def __init__(self, families: _Families, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self._families = families
        self._calls = {kind: families.calls.labels(*labels, kind.value) for kind in SourceKind}
        self._stages: dict[str, Any] = {}
        self._gate_skips = families.gate_skips.labels(*labels)

    def start(self, candidates: int, top_n: int | None) -> _BoundMetrics:
        return self

    def stage_started(self, stage: str) -> tuple[str, float]:
        return stage, time.perf_counter()

    def stage_ended(self, token: object, error: BaseException | None) -> None:
        stage, started = cast(tuple[str, float], token)
        child = self._stages.get(stage)
        if child is None:
            child = self._stages.setdefault(stage, self._families.stages.labels(*self.labels, stage))
        child.observe(time.perf_counter() - started)

    def finished(self, outcome: Finished) -> None:
        result = outcome.result
        self._calls[result.source.kind].observe(result.latency_s)
        if result.source.kind is SourceKind.FALLBACK:
            self._families.fallbacks.labels(*self.labels, *fallback_reason(result.source)).inc()
        elif result.gate is not None and not result.gate.rerank:
            self._gate_skips.inc()

    def closed(self, error: BaseException | None) -> None:
        return None


class _LiveState:
    """A custom collector: cache and breaker counters read from their owners at scrape time.

    Rerankers are held weakly; series with the same labels are summed, each counter object once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracked: list[tuple[tuple[str, str, str], weakref.ref[Reranker]]] = []

    def track(self, labels: tuple[str, str, str], reranker: Reranker) -> None:
        with self._lock:
            self._tracked = [(lab, ref) for lab, ref in self._tracked if ref() is not None]
            self._tracked.append((labels, weakref.ref(reranker)))

    def describe(self) -> Iterator[Metric]:
        return iter(self._empty_families())

    def _empty_families(self) -> tuple[Any, ...]:
        return (
            CounterMetricFamily(
                "rerank_prod_cache_requests",
                "Cache lookups by layer and outcome.",
                labels=(*_BASE_LABELS, "layer", "result"),
            ),
            GaugeMetricFamily(
                "rerank_prod_circuit_breaker_state",
                "1 for the breaker's current state (closed, open, half_open).",
                labels=(*_BASE_LABELS, "backend", "state"),
            ),
            CounterMetricFamily(
                "rerank_prod_circuit_breaker_opened", "Times the breaker opened.", labels=(*_BASE_LABELS, "backend")
            ),
            CounterMetricFamily(
                "rerank_prod_circuit_breaker_rejected",
                "Calls refused while the breaker was open.",
                labels=(*_BASE_LABELS, "backend"),
            ),
            CounterMetricFamily(
                "rerank_prod_engine_requests",
                "Scoring-engine requests by outcome (served, partial, timeout, shed).",
                labels=("backend", "outcome"),
            ),
            CounterMetricFamily(
                "rerank_prod_engine_pairs",
                "Pairs the scoring engine scored; wasted: finished after their caller's deadline.",
                labels=("backend", "kind"),
            ),
            GaugeMetricFamily(
                "rerank_prod_engine_queue_depth", "Requests waiting in the scoring engine.", labels=("backend",)
            ),
            CounterMetricFamily(
                "rerank_prod_chunking",
                "ChunkedScorer: texts seen, texts split into windows, windows scored, texts with windows "
                "beyond max_chunks left unscored (label kind).",
                labels=("backend", "kind"),
            ),
        )

    def collect(self) -> Iterator[Metric]:
        families = self._empty_families()
        caches, states, opened, rejected, engine_requests, engine_pairs, queue_depth, chunking = families
        cache_totals: dict[tuple[str, ...], dict[str, int]] = {}
        key: tuple[str, ...]
        breakers: dict[tuple[str, ...], dict[str, Any]] = {}
        seen: set[tuple[tuple[str, ...], int]] = set()
        engines: dict[int, tuple[str, ScoringEngine]] = {}
        chunkers: dict[int, ChunkedScorer] = {}
        with self._lock:
            tracked = [(labels, ref()) for labels, ref in self._tracked]
        for labels, reranker in tracked:
            if reranker is None:
                continue
            for layer in (reranker.result_cache, reranker.score_cache, reranker.semantic_cache):
                if layer is None:
                    continue
                key = (*labels, layer.namespace)
                if (key, id(layer.stats)) in seen:
                    continue
                seen.add((key, id(layer.stats)))
                total = cache_totals.setdefault(key, {"hits": 0, "misses": 0, "errors": 0})
                for outcome, count in layer.stats.snapshot().items():
                    total[outcome] += count
            for backend, breaker in reranker_breakers(reranker):
                breakers.setdefault((*labels, backend), breaker.snapshot())
            for scorer in (reranker.scorer, reranker.fallback_scorer):
                if isinstance(scorer, ChunkedScorer):
                    chunkers.setdefault(id(scorer), scorer)
                engine = getattr(scorer.inner if isinstance(scorer, ChunkedScorer) else scorer, "engine", None)
                if isinstance(engine, ScoringEngine):
                    engines.setdefault(id(engine), (scorer.name if scorer is not None else "", engine))
        for key, total in cache_totals.items():
            for outcome, result in (("hits", "hit"), ("misses", "miss"), ("errors", "error")):
                caches.add_metric([*key, result], total[outcome])
        for key, snapshot in breakers.items():
            for state in (CircuitBreaker.CLOSED, CircuitBreaker.OPEN, CircuitBreaker.HALF_OPEN):
                states.add_metric([*key, state], 1.0 if snapshot["state"] == state else 0.0)
            opened.add_metric(list(key), snapshot["times_opened"])
            rejected.add_metric(list(key), snapshot["rejected_calls"])
        per_backend: dict[str, dict[str, float]] = {}
        for backend, engine in engines.values():  # engines of one model name (other settings) are summed
            total_counts = per_backend.setdefault(backend, {})
            for name, value in engine.snapshot().items():
                total_counts[name] = total_counts.get(name, 0.0) + float(value or 0)
        for backend, counts in per_backend.items():
            for outcome in ("served", "partial", "timeout", "shed"):
                engine_requests.add_metric([backend, outcome], counts[outcome])
            engine_pairs.add_metric([backend, "scored"], counts["pairs"])
            engine_pairs.add_metric([backend, "wasted"], counts["wasted_pairs"])
            queue_depth.add_metric([backend], counts["queued_requests"])
        per_chunker: dict[str, dict[str, int]] = {}
        for chunker in chunkers.values():  # chunked scorers of one model name are summed
            chunk_counts = per_chunker.setdefault(chunker.name, {})
            for kind, count in chunker.stats().items():
                chunk_counts[kind] = chunk_counts.get(kind, 0) + count
        for backend, chunk_totals in per_chunker.items():
            for kind, count in chunk_totals.items():
                chunking.add_metric([backend, kind], count)
        yield from families
