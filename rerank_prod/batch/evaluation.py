"""`rerank-prod eval --ray`: each configuration re-ranks the candidate sets on a Ray actor pool.

Every call is scored live by an actor (no replay of recorded scores), and the latency each query
reports is the one its actor measured, so a configuration's numbers are those of a real re-rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rerank_prod.batch.engines import ray_results
from rerank_prod.batch.records import requests_table
from rerank_prod.evaluation.configs import Spec, build_reranker
from rerank_prod.evaluation.dataset import EvalInputError
from rerank_prod.evaluation.runner import ConfigRun
from rerank_prod.types import Candidate, SourceKind


def run_configs_on_ray(
    specs: Sequence[Spec],
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[Candidate]],
    *,
    actors: int,
    batch_size: int = 8,
) -> list[ConfigRun]:
    """The Ray twin of `runner.run_configs`: the same `ConfigRun`s, for the same report. Every
    configuration is built here first, so a broken one fails before the cluster does any work.
    Batches hold at most `batch_size` queries, fewer when that keeps every actor busy."""
    for spec in specs:
        build_reranker(spec)
    requests = requests_table(queries, candidates, [qid for qid in candidates if candidates[qid]])
    batch_size = max(1, min(batch_size, -(-requests.num_rows // actors)))
    runs = []
    for spec in specs:
        run = ConfigRun(spec, replayed=False)
        run.rankings = {qid: [] for qid in candidates if not candidates[qid]}
        for table in ray_results(requests, spec, batch_size=batch_size, actors=actors):
            for row in table.to_pylist():
                qid = row["query_id"]
                if row["error"] is not None:
                    raise EvalInputError(f"configuration {spec['name']!r}, query {qid!r}: {row['error']}")
                run.rankings[qid] = [(item["id"], item["relevance_score"]) for item in row["ranking"]]
                run.latencies_s[qid] = row["latency_s"]
                run.sources[qid] = row["source"]
                run.gate_skips += row["source"].startswith(f"{SourceKind.SKIPPED.value}:gate")
        runs.append(run)
    return runs
