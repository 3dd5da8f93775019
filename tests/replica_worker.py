"""One re-ranking replica as its own OS process, for tests/test_replica_processes.py.

    python -m tests.replica_worker REDIS_URL MODEL_PATH ACTIVATION

Builds a `Reranker` with the real cross-encoder and result + pair-score caches on the shared
Redis, prints `{"ready": ...}`, then answers JSON lines on stdin, one JSON line each on stdout:
    {"query": "...", "passages": [...]}                -> {"call": source, "sources": [...], "scores": [...]}
    {"traffic": [{"query", "passages"}, ...], "pause_s": 0.05} -> one such line per call, then {"done": n}
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rerank_prod import CrossEncoderScorer, RedisCache, Reranker, ResultCache, ScoreCache


def answer(reranker: Reranker, query: str, passages: list[str]) -> dict[str, Any]:
    result = reranker.rerank(query, passages)
    by_rank = sorted(result, key=lambda item: item.original_rank)
    cache = reranker.metrics.snapshot()["cache"]
    return {
        "call": str(result.source),
        "sources": [item.metadata()["rerank_source"] for item in by_rank],
        "scores": [item.rerank_score for item in by_rank],
        "cache_errors": sum(layer["errors"] for layer in cache.values()),
    }


def main() -> None:
    url, model, activation = sys.argv[1:4]
    backend = RedisCache(url)
    reranker = Reranker(
        CrossEncoderScorer(model, activation=activation),
        result_cache=ResultCache(backend),
        score_cache=ScoreCache(backend),
    )
    print(json.dumps({"ready": reranker.scorer.identity}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "traffic" in request:
            for call in request["traffic"]:
                print(json.dumps(answer(reranker, call["query"], call["passages"])), flush=True)
                time.sleep(request.get("pause_s", 0.0))
            print(json.dumps({"done": len(request["traffic"])}), flush=True)
        else:
            print(json.dumps(answer(reranker, request["query"], request["passages"])), flush=True)


if __name__ == "__main__":
    main()
