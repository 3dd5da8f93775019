"""The rows a batch job reads and writes, as Arrow schemas, and the conversions to and from the core.

A request is one query with its candidates, best first:
    {"query_id": "q1", "query": "...", "candidates": [{"id": "d1", "text": "...", "retrieval_score": 12.3}]}
(JSONL, one per line, or Parquet with the same columns; `retrieval_score` may be null or absent).
A result row keeps the full ranking with the metadata contract of every re-rank call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rerank_prod.evaluation.dataset import EvalInputError
from rerank_prod.types import Candidate, RerankResult

CANDIDATE_TYPE = pa.struct(
    [pa.field("id", pa.string()), pa.field("text", pa.string()), pa.field("retrieval_score", pa.float64())]
)
REQUEST_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string()),
        pa.field("query", pa.string()),
        pa.field("candidates", pa.list_(CANDIDATE_TYPE)),
    ]
)
RANKED_TYPE = pa.struct(  # the candidate's id, then the result metadata contract (RESULT_METADATA_KEYS)
    [
        pa.field("id", pa.string()),
        pa.field("relevance_score", pa.float64()),
        pa.field("rerank_score", pa.float64()),
        pa.field("retrieval_score", pa.float64()),
        pa.field("original_rank", pa.int32()),
        pa.field("rerank_source", pa.string()),
        pa.field("rerank_chunks", pa.int32()),
        pa.field("rerank_best_chunk", pa.int32()),
        pa.field("rerank_truncated", pa.bool_()),
    ]
)
RESULT_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string()),
        pa.field("ranking", pa.list_(RANKED_TYPE)),
        pa.field("source", pa.string()),
        pa.field("latency_s", pa.float64()),
        pa.field("error", pa.string()),
    ]
)
REQUIRED_COLUMNS = ("query_id", "query", "candidates")


def requests_table(
    queries: Mapping[str, str], candidates: Mapping[str, Sequence[Candidate]], query_ids: Sequence[str] | None = None
) -> pa.Table:
    """Requests from the evaluation toolkit's candidate sets (`first_stage.candidate_sets`)."""
    rows = [
        {
            "query_id": qid,
            "query": queries[qid],
            "candidates": [
                {"id": c.id or str(rank), "text": c.text, "retrieval_score": c.retrieval_score}
                for rank, c in enumerate(candidates[qid])
            ],
        }
        for qid in (query_ids if query_ids is not None else list(candidates))
    ]
    return pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)


def beir_requests(
    dataset: str | Path,
    *,
    split: str = "test",
    top_k: int = 100,
    run_file: str | Path | None = None,
    max_queries: int | None = None,
    bm25_k1: float = 0.9,
    bm25_b: float = 0.4,
) -> tuple[str, pa.Table]:
    """(first stage name, requests) for a BEIR directory's judged queries: the evaluation
    toolkit's first stage (BM25, or a TREC run file) gives each query its top-K candidates."""
    from rerank_prod.evaluation.dataset import load_beir
    from rerank_prod.evaluation.first_stage import candidate_sets, first_stage_rankings

    loaded = load_beir(dataset, split)
    query_ids = loaded.query_ids[:max_queries]
    stage, rankings = first_stage_rankings(loaded, query_ids, top_k, run_file=run_file, k1=bm25_k1, b=bm25_b)
    return stage, requests_table(loaded.queries, candidate_sets(loaded, rankings), query_ids)


def read_requests(path: str | Path) -> pa.Table:
    """A JSONL or Parquet file of requests, checked and cast to `REQUEST_SCHEMA`."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"input file {path} not found")
    if path.suffix.lower() == ".parquet":
        table = pq.read_table(path)
    elif path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        table = _read_jsonl(path)
    else:
        raise EvalInputError(f"input file {path}: expected .jsonl or .parquet")
    missing = [column for column in REQUIRED_COLUMNS if column not in table.column_names]
    if missing:
        raise EvalInputError(f"input file {path}: missing columns {missing}; a request has {list(REQUIRED_COLUMNS)}")
    rows = table.select(list(REQUIRED_COLUMNS)).to_pylist()
    for number, row in enumerate(rows, 1):
        _check_request(row, f"{path}: request {number}")
    return pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)


def _read_jsonl(path: Path) -> pa.Table:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise EvalInputError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    if not rows or not all(isinstance(row, dict) for row in rows):
        raise EvalInputError(f"input file {path}: expected one JSON object per line")
    return pa.Table.from_pylist(rows)


def _check_request(row: Mapping[str, Any], where: str) -> None:
    if not isinstance(row["query_id"], (str, int)) or isinstance(row["query_id"], bool):
        raise EvalInputError(f"{where}: query_id must be a string")
    if not isinstance(row["query"], str):
        raise EvalInputError(f"{where}: query must be a string")
    if not isinstance(row["candidates"], list):
        raise EvalInputError(f"{where}: candidates must be a list of {{id, text, retrieval_score}}")
    for candidate in row["candidates"]:
        if not isinstance(candidate, Mapping) or not isinstance(candidate.get("text"), str):
            raise EvalInputError(f"{where}: each candidate needs a text (and an id)")


def candidates_of(request: Mapping[str, Any]) -> list[Candidate]:
    """A request row's candidates as the core's type, in their first-stage order."""
    return [
        Candidate(text=c["text"], id=c["id"], retrieval_score=c.get("retrieval_score")) for c in request["candidates"]
    ]


def result_row(query_id: str, result: RerankResult) -> dict[str, Any]:
    """A `RESULT_SCHEMA` row: the ranking, best first, each item with its id and result metadata."""
    return {
        "query_id": query_id,
        "ranking": [{"id": item.candidate.id, **item.metadata()} for item in result.items],
        "source": str(result.source),
        "latency_s": result.latency_s,
        "error": None,
    }


def failed_row(query_id: str, error: Exception) -> dict[str, Any]:
    """A request the re-ranker refused (invalid input): recorded, so a resumed job does not retry it."""
    return {
        "query_id": query_id,
        "ranking": [],
        "source": None,
        "latency_s": None,
        "error": f"{type(error).__name__}: {error}",
    }
