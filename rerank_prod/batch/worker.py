"""The unit of work of a batch job: one `Reranker`, built once, re-ranking a batch of requests.

Ray Data constructs it once per actor (`map_batches(RerankWorker, concurrency=N)`), so each actor
loads the model once and keeps it for every batch it is handed; the single-process engine uses the
same class, so both engines produce the same rows.
"""

from __future__ import annotations

import pyarrow as pa

from rerank_prod.batch.records import RESULT_SCHEMA, candidates_of, failed_row, result_row
from rerank_prod.evaluation.configs import Spec, build_reranker


class RerankWorker:
    """Callable on an Arrow table of requests (`REQUEST_SCHEMA`) -> a table of results (`RESULT_SCHEMA`).

    `spec` is an evaluation configuration (`rerank_prod.evaluation.configs`): plain data, so it
    travels to every actor and each builds the same `Reranker` (fusion, gate, caches, budgets).
    A request the re-ranker refuses (e.g. an empty query) becomes a row with `error` set; backend
    failures never reach here (the re-ranker degrades and says so in `source`).
    """

    def __init__(self, spec: Spec) -> None:
        self.reranker = build_reranker(spec)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for request in batch.to_pylist():
            try:
                result = self.reranker.rerank(request["query"], candidates_of(request))
            except ValueError as refused:
                rows.append(failed_row(request["query_id"], refused))
                continue
            rows.append(result_row(request["query_id"], result))
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
