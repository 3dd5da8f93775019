"""Cache benchmark: what each cache layer saves on a real re-rank, in memory and in Redis.

Run from the repository root (offline, real cross-encoder and embedder from ../shared):

    HF_HUB_OFFLINE=1 python -m benchmarks.cache_bench [--queries 20] [--redis-url redis://...]

Per SciFact test query (BM25 top-20 candidates), one `Reranker` with all three cache layers sees:
cold (nothing cached: 20 pairs to the model), exact hit (same call again: result cache),
pair-cache partial hit (15 of the candidates plus 5 new ones: only 5 pairs to the model) and
semantic hit (the query lower-cased without punctuation, same candidates: no model call).
Then the semantic index alone: lookup time with 1k / 10k / 100k cached queries (random unit vectors).
Without --redis-url a throwaway redis-server is started on a free loopback port.

Torch and BLAS run on one thread unless OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say otherwise: on a
shared, busy machine more threads than free cores makes every model call several times slower and
the numbers meaningless.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TypeVar

for variable, value in (
    ("HF_HUB_OFFLINE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
    ("OMP_NUM_THREADS", "1"),
    ("OPENBLAS_NUM_THREADS", "1"),
):
    os.environ.setdefault(variable, value)

import numpy as np  # noqa: E402  (thread settings first)

from rerank_prod import (  # noqa: E402  (environment first: offline model loading)
    CacheBackend,
    Candidate,
    CrossEncoderScorer,
    InMemoryCache,
    RedisCache,
    Reranker,
    RerankResult,
    ResultCache,
    ScoreCache,
    SemanticCache,
    SourceKind,
)
from rerank_prod.evaluation.dataset import load_beir  # noqa: E402
from rerank_prod.evaluation.first_stage import bm25_rankings, candidate_sets  # noqa: E402
from rerank_prod.semantic_cache import VectorIndex  # noqa: E402

SHARED = Path(os.environ.get("RERANK_PROD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
CANDIDATES, NEW_CANDIDATES = 20, 5
T = TypeVar("T")
SCENARIOS = ("cold", "exact hit", "pair-cache partial hit", "semantic hit")


def percentiles(samples: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.asarray(samples) * 1000, [50, 95])
    return float(p50), float(p95)


def timed(call: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def plain_variant(query: str) -> str:
    """A paraphrase a user might type: lower case, no punctuation."""
    return re.sub(r"[^\w\s-]", "", query).lower().strip()


def model_pairs(result: RerankResult) -> int:
    return sum(item.source.kind is SourceKind.MODEL for item in result)


# What each scenario must look like to be timed as that scenario.
AS_INTENDED: dict[str, Callable[[RerankResult], bool]] = {
    "cold": lambda result: model_pairs(result) == CANDIDATES,
    "exact hit": lambda result: str(result.source) == "cache",
    "pair-cache partial hit": lambda result: model_pairs(result) == NEW_CANDIDATES,
    "semantic hit": lambda result: str(result.source) == "cache:semantic",
}


def bench_backend(
    name: str,
    backend: CacheBackend,
    scorer: CrossEncoderScorer,
    embedder: str,
    workload: list[tuple[str, list[Candidate]]],
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Latencies of the calls that went as their scenario intends, and how many did not."""
    reranker = Reranker(
        scorer,
        result_cache=ResultCache(backend),
        score_cache=ScoreCache(backend),
        semantic_cache=SemanticCache(backend, embedder),
    )
    latencies: dict[str, list[float]] = {scenario: [] for scenario in SCENARIOS}
    off_scenario = dict.fromkeys(SCENARIOS, 0)
    for query, candidates in workload:
        first, extra = candidates[:CANDIDATES], candidates[CANDIDATES:]
        calls = {
            "cold": (query, first),
            "exact hit": (query, first),
            "pair-cache partial hit": (query, first[NEW_CANDIDATES:] + extra),
            "semantic hit": (plain_variant(query), first),
        }
        for scenario, (text, items) in calls.items():
            elapsed, result = timed(partial(reranker.rerank, text, items))
            if AS_INTENDED[scenario](result):
                latencies[scenario].append(elapsed)
            else:
                off_scenario[scenario] += 1
    print(f"  {name}: cache counters {reranker.metrics.snapshot()['cache']}")
    return latencies, off_scenario


def bench_index(sizes: tuple[int, ...], dim: int = 384, lookups: int = 200) -> list[tuple[int, float, float]]:
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        vectors = rng.standard_normal((size, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = VectorIndex(dim, max_entries=size)
        for i, vector in enumerate(vectors):
            index.add(str(i), vector)
        probes = vectors[rng.integers(0, size, lookups)] + 0.01 * rng.standard_normal((lookups, dim)).astype(np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        samples = [timed(partial(index.nearest, probe, 0.95))[0] for probe in probes]
        rows.append((size, *percentiles(samples)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--redis-url", help="an existing Redis (default: start redis-server on loopback)")
    parser.add_argument(
        "--index-sizes",
        default="1000,10000,100000",
        help="cached-query counts for the semantic index timing (comma-separated; CI's smoke run uses 100)",
    )
    args = parser.parse_args()
    index_sizes = tuple(int(size) for size in args.index_sizes.split(","))

    dataset = load_beir(SHARED / "datasets" / "scifact")
    chosen = dataset.query_ids[: args.queries]
    candidates = candidate_sets(dataset, bm25_rankings(dataset, chosen, CANDIDATES + NEW_CANDIDATES))
    workload = [(dataset.queries[query_id], candidates[query_id]) for query_id in chosen]
    scorer = CrossEncoderScorer(str(SHARED / "models" / "minilm-l6-scifact-ce"))
    embedder = str(SHARED / "models" / "all-MiniLM-L6-v2")
    scorer.score("warm up", ["the model and its threads"] * CANDIDATES)

    with ExitStack() as stack:
        redis_url = args.redis_url
        if redis_url is None:
            from loopback.redis_server import RedisServer

            server = RedisServer(Path(stack.enter_context(tempfile.TemporaryDirectory()))).start()
            stack.callback(server.stop)
            redis_url = server.url
        import torch

        print(
            f"{len(workload)} SciFact test queries, {CANDIDATES} BM25 candidates each; cross-encoder "
            f"minilm-l6-scifact-ce; embedder all-MiniLM-L6-v2; torch threads {torch.get_num_threads()}, "
            f"BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}"
        )
        results = {
            name: bench_backend(name, backend, scorer, embedder, workload)
            for name, backend in (
                ("in-memory", InMemoryCache()),
                ("redis", RedisCache(redis_url, key_prefix="cache-bench:")),
            )
        }

    print()
    print("| backend | scenario | model pairs / call | p50 ms | p95 ms | p50 / cold p50 |")
    print("|---|---|---|---|---|---|")
    pairs = {"cold": CANDIDATES, "exact hit": 0, "pair-cache partial hit": NEW_CANDIDATES, "semantic hit": 0}
    for name, (latencies, _) in results.items():
        cold_p50 = percentiles(latencies["cold"])[0]
        for scenario in SCENARIOS:
            p50, p95 = percentiles(latencies[scenario])
            print(f"| {name} | {scenario} | {pairs[scenario]} | {p50:.2f} | {p95:.2f} | {p50 / cold_p50:.4f} |")
    for name, (_, off_scenario) in results.items():
        print(f"{name}: calls not timed because they did not go as their scenario intends: {off_scenario}")
    print(
        "(a cold call that a *different* query's anchor partly served, or a lower-cased query that fell "
        "below the threshold)"
    )
    print("\n| cached queries | semantic lookup p50 ms | p95 ms | index memory MiB |")
    print("|---|---|---|---|")
    for size, p50, p95 in bench_index(index_sizes):
        print(f"| {size:,} | {p50:.3f} | {p95:.3f} | {size * 384 * 4 / 2**20:.1f} |")
    print("(one float32 matrix-vector product over 384-d unit vectors; query embedding not included)")


if __name__ == "__main__":
    main()
