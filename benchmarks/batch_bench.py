"""Batch re-ranking throughput: one process vs Ray Data actor pools, on the same requests.

Run from the repository root (offline, real cross-encoder from ../shared, SciFact BM25 candidates):

    python -m benchmarks.batch_bench [--queries 24] [--top-k 20] [--actors 1,2] [--repeats 2]
    python -m benchmarks.batch_bench --smoke        # seconds of work, for CI

Every system runs the same `run_batch` job (the model configuration, 50/50 fusion with BM25) into
a fresh output directory, writing Parquet parts. The single process has the model loaded already
(an untimed warm-up job first: a process loads it once); each Ray job starts its actors and every
actor loads the model, so Ray's wall time includes that start-up ("first result s" shows it).
Systems are interleaved within each repeat, so load from other processes on the machine hits them
alike; every repeat is printed, then the medians.
Throughput is (query, candidate) pairs per second of wall time; the ratio is against the single
process with as many torch threads as the machine has cores. A local Ray cluster is started with
the machine's CPUs on 127.0.0.1 (or joined with --ray-address).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RERANK_PROD_SHARED", REPO_ROOT.parent / "shared"))


def _positive_ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _systems(actors: list[int], cores: int) -> list[tuple[str, dict[str, Any]]]:
    systems: list[tuple[str, dict[str, Any]]] = [(f"single process, {cores} torch threads", {"engine": "local"})]
    if cores > 1:
        systems.append(("single process, 1 torch thread", {"engine": "local", "threads": 1}))
    systems += [
        (f"Ray Data, {count} actor{'s' if count > 1 else ''} x 1 CPU", {"engine": "ray", "actors": count})
        for count in actors
    ]
    return systems


def _run(requests: Any, spec: dict[str, Any], options: dict[str, Any], batch_size: int, workdir: Path) -> Any:
    import torch

    from rerank_prod.batch import run_batch

    threads = torch.get_num_threads()
    torch.set_num_threads(options.get("threads", threads))
    try:
        return run_batch(
            requests,
            spec,
            Path(tempfile.mkdtemp(dir=workdir)),
            engine=options["engine"],
            actors=options.get("actors", 1),
            batch_size=batch_size,
        )
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=24, help="SciFact test queries (default 24)")
    parser.add_argument("--top-k", type=int, default=20, help="BM25 candidates per query (default 20)")
    parser.add_argument("--actors", type=_positive_ints, default=[1, 2], help="Ray actor counts (default 1,2)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--queries-per-batch", type=int, default=4, help="requests per Ray batch (default 4)")
    parser.add_argument("--model", default=str(SHARED / "models" / "minilm-l6-scifact-ce"))
    parser.add_argument("--dataset", default=str(SHARED / "datasets" / "scifact"))
    parser.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--smoke", action="store_true", help="4 queries x 5 candidates, 1 actor, 1 round")
    args = parser.parse_args()
    if args.smoke:
        args.queries, args.top_k, args.actors, args.repeats, args.queries_per_batch = 4, 5, [1], 1, 2

    import ray

    from rerank_prod.batch import beir_requests
    from rerank_prod.evaluation.configs import normalize_spec

    cores = os.cpu_count() or 1
    scorer = {"type": "cross-encoder", "model": args.model, "activation": "identity", "batch_size": 32}
    spec = normalize_spec({"name": "fusion 50/50", "fusion": {"type": "weighted"}}, scorer, 1)
    stage, requests = beir_requests(args.dataset, top_k=args.top_k, max_queries=args.queries)
    pairs = sum(len(candidates) for candidates in requests["candidates"].to_pylist())
    started = time.perf_counter()
    if args.ray_address:
        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False)
    else:
        env = {"PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        ray.init(
            num_cpus=cores,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
            runtime_env={"env_vars": env},
        )
    ray_start_s = time.perf_counter() - started
    systems = _systems(args.actors, cores)
    print(
        f"{len(requests)} SciFact test queries x {args.top_k} {stage} candidates = {pairs} pairs; "
        f"{cores} CPU cores; Ray cluster start {ray_start_s:.1f} s (not counted below)\n"
    )
    walls: dict[str, list[float]] = {name: [] for name, _ in systems}
    firsts: dict[str, list[float]] = {name: [] for name, _ in systems}
    with tempfile.TemporaryDirectory() as workdir:
        _run(requests.slice(0, 1), spec, {"engine": "local"}, args.queries_per_batch, Path(workdir))  # warm-up
        for round_number in range(1, args.repeats + 1):
            print(f"round {round_number}")
            for name, options in systems:
                report = _run(requests, spec, options, args.queries_per_batch, Path(workdir))
                assert report.queries == len(requests) and report.failed == 0
                walls[name].append(report.wall_s)
                firsts[name].append(report.first_result_s)
                print(
                    f"  {name:40s} {report.wall_s:7.1f} s  {report.pairs_per_s:7.1f} pairs/s  "
                    f"first result after {report.first_result_s:5.1f} s"
                )
    ray.shutdown()
    reference = statistics.median(walls[systems[0][0]])
    print("\n| system | wall s (median) | first result s | pairs/s | vs single process |")
    print("|---|---|---|---|---|")
    for name, _ in systems:
        wall = statistics.median(walls[name])
        first = statistics.median(firsts[name])
        print(f"| {name} | {wall:.1f} | {first:.1f} | {pairs / wall:.1f} | {reference / wall:.2f}x |")


if __name__ == "__main__":
    main()
