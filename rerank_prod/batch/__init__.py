"""Offline batch re-ranking: a large set of (query, candidates) through one `Reranker`
configuration, in this process or on a Ray cluster (Ray Data, one model per actor), written as
Parquet/JSONL parts and a TREC run file, resumable (`pip install 'rerank-prod[ray]'`).

    from rerank_prod.batch import beir_requests, run_batch
    stage, requests = beir_requests("scifact/", top_k=100)
    report = run_batch(requests, {"name": "model", "scorer": {"model": "path/or/hub-id"}}, "out/", actors=4)
"""

from rerank_prod.batch.job import BatchReport, read_results, run_batch
from rerank_prod.batch.records import REQUEST_SCHEMA, RESULT_SCHEMA, beir_requests, read_requests, requests_table
from rerank_prod.batch.worker import RerankWorker

__all__ = [
    "REQUEST_SCHEMA",
    "RESULT_SCHEMA",
    "BatchReport",
    "RerankWorker",
    "beir_requests",
    "read_requests",
    "read_results",
    "requests_table",
    "run_batch",
]
