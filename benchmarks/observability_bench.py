"""Observability overhead: what Prometheus metrics, OpenTelemetry spans and the monitor add to the
cheapest rerank call there is, an exact result-cache hit (target: metrics + tracing add < 0.2 ms at p50).

Run from the repository root:

    python -m benchmarks.observability_bench [--calls 5000] [--runs 2] [--smoke]

The same `Reranker` configuration (20 candidates of ~80 words, in-memory result cache) is built
once per observer set: off, prometheus, otel, metrics+tracing (both), monitor (JSON-lines log on),
and all three. After one
warm-up call fills the cache, every call is an exact hit. Configurations take turns in small
batches (interleaved, order rotated each round) so machine noise hits them alike; the time of each
`rerank()` call is taken around the call. Spans go to the OpenTelemetry SDK (always sampled,
batch processor, an exporter that drops them): the cost an application pays before the network.
Prints p50/p95 per configuration, p50 added over "off" and the ratio, per run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rerank_prod import Candidate, Deadline, InMemoryCache, LocalScorer, Reranker, ResultCache
from rerank_prod.observability import Observer, RerankMonitor

TARGET_ADDED_P50_MS = 0.2
_WORDS = [f"w{i}" for i in range(2000)]


class OverlapScorer(LocalScorer):
    """Word overlap: only the warm-up call scores; every timed call is an exact cache hit."""

    @property
    def name(self) -> str:
        return "overlap"

    @property
    def identity(self) -> str:
        return "bench-overlap"

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        words = set(query.split())
        return [float(len(words & set(text.split()))) for text in texts]


def _observer_sets(log_dir: Path) -> dict[str, Callable[[], list[Observer]]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from prometheus_client import CollectorRegistry

    from rerank_prod.observability import OpenTelemetryTracing, PrometheusMetrics

    class DroppingExporter(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))

    def monitor(name: str) -> RerankMonitor:
        return RerankMonitor(log_path=log_dir / f"{name}.jsonl")

    return {
        "off": list,
        "prometheus": lambda: [PrometheusMetrics(CollectorRegistry())],
        "otel": lambda: [OpenTelemetryTracing(provider)],
        "metrics+tracing": lambda: [PrometheusMetrics(CollectorRegistry()), OpenTelemetryTracing(provider)],
        "monitor+log": lambda: [monitor("monitor")],
        "all three": lambda: [PrometheusMetrics(CollectorRegistry()), OpenTelemetryTracing(provider), monitor("all")],
    }


def _candidates(rng: random.Random, count: int = 20, words: int = 80) -> list[Candidate]:
    return [
        Candidate(" ".join(rng.choices(_WORDS, k=words)), id=f"d{i}", retrieval_score=rng.random())
        for i in range(count)
    ]


def _measure(
    rerankers: dict[str, Reranker], calls: int, batch: int, use_async: bool, rng: random.Random
) -> dict[str, np.ndarray]:
    query, candidates = "w1 w2 w3 w4 w5", _candidates(rng)
    loop = asyncio.new_event_loop()
    try:
        for reranker in rerankers.values():  # fill the cache, warm code paths
            for _ in range(20):
                reranker.rerank(query, candidates)
        times: dict[str, list[float]] = {name: [] for name in rerankers}
        names = list(rerankers)
        for round_index in range(calls // batch):
            for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                reranker, into = rerankers[name], times[name]
                for _ in range(batch):
                    if use_async:
                        started = time.perf_counter()
                        result = loop.run_until_complete(reranker.arerank(query, candidates))
                    else:
                        started = time.perf_counter()
                        result = reranker.rerank(query, candidates)
                    into.append(time.perf_counter() - started)
                    if result.source.kind.value != "cache":
                        raise RuntimeError(f"{name}: expected an exact cache hit, got {result.source}")
    finally:
        loop.close()
    return {name: np.asarray(values) * 1000 for name, values in times.items()}


def _table(times: dict[str, np.ndarray]) -> tuple[str, float]:
    base = float(np.percentile(times["off"], 50))
    lines = [
        "| observers | calls | p50 ms | p95 ms | p50 added ms | p50 ratio vs off |",
        "|---|---|---|---|---|---|",
    ]
    added_all = 0.0
    for name, values in times.items():
        p50, p95 = np.percentile(values, [50, 95]).tolist()
        added = p50 - base
        if name == "metrics+tracing":
            added_all = added
        lines.append(f"| {name} | {values.size} | {p50:.4f} | {p95:.4f} | {added:+.4f} | {p50 / base:.2f}x |")
    return "\n".join(lines), added_all


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per configuration and mode")
    parser.add_argument("--runs", type=int, default=2, help="independent runs (each printed)")
    parser.add_argument("--batch", type=int, default=50, help="calls per configuration per turn")
    parser.add_argument("--smoke", action="store_true", help="a few hundred calls, one run (CI)")
    args = parser.parse_args(argv)
    calls, runs = (300, 1) if args.smoke else (args.calls, args.runs)
    if calls < args.batch or runs < 1:
        parser.error("need --calls >= --batch and --runs >= 1")
    rng = random.Random(13)
    verdicts = []
    with tempfile.TemporaryDirectory() as log_dir:
        sets = _observer_sets(Path(log_dir))
        for run in range(1, runs + 1):
            for mode in ("sync", "async"):
                rerankers = {
                    name: Reranker(
                        OverlapScorer(), top_n=5, result_cache=ResultCache(InMemoryCache()), observers=make()
                    )
                    for name, make in sets.items()
                }
                table, added = _table(_measure(rerankers, calls, args.batch, mode == "async", rng))
                print(f"\n## Run {run}, {mode}: exact cache hit, 20 candidates, top_n=5\n\n{table}")
                verdicts.append(added)
    worst = max(verdicts)
    verdict = "PASS" if worst < TARGET_ADDED_P50_MS else "FAIL"
    print(
        f"\nmetrics + tracing, p50 added over off: {', '.join(f'{v:+.4f}' for v in verdicts)} ms "
        f"(target < {TARGET_ADDED_P50_MS} ms): {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
