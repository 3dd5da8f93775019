"""A resumable batch re-ranking job: requests in, result parts and a TREC run file out.

Layout of `out`:
    manifest.json          the configuration and output format; a resumed job must match it
    results/part-*.parquet one file per completed batch (or .jsonl), written atomically (temp + rename)
    run.trec               every ranking as a TREC run file, rewritten when the job completes

An interrupted job leaves only complete parts behind; run it again and it skips every query
already in a part, so each query is re-ranked once however often the job is restarted.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rerank_prod.batch.engines import ENGINES, local_results, ray_results
from rerank_prod.evaluation.configs import Spec, normalize_spec
from rerank_prod.evaluation.dataset import EvalInputError
from rerank_prod.evaluation.first_stage import Ranking, write_run
from rerank_prod.validation import check_int, check_number

FORMATS = ("parquet", "jsonl")
RUN_FILE = "run.trec"


@dataclass(frozen=True)
class BatchReport:
    """What one `run_batch` call did; `pairs_per_s` counts the (query, candidate) pairs it re-ranked.
    `first_result_s`: until the first part was written (start-up: cluster scheduling, model loads)."""

    out: Path
    run_file: Path
    queries: int
    resumed: int
    failed: int
    pairs: int
    wall_s: float
    first_result_s: float | None
    engine: str
    actors: int

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.wall_s if self.wall_s > 0 else 0.0


def _check_manifest(out: Path, spec: Spec, output_format: str) -> None:
    manifest = out / "manifest.json"
    wanted = {"config": spec, "format": output_format}
    if manifest.is_file():
        found = json.loads(manifest.read_text(encoding="utf-8"))
        if found != json.loads(json.dumps(wanted, default=str)):
            raise EvalInputError(
                f"{out} holds results of another configuration or format ({manifest}); "
                "use a new --out directory to start over"
            )
        return
    (out / "results").mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(wanted, indent=2, default=str), encoding="utf-8")


def _parts(out: Path, output_format: str) -> list[Path]:
    return sorted((out / "results").glob(f"part-*.{output_format}"))


def _read_part(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        return cast(list[dict[str, Any]], pq.read_table(path).to_pylist())
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def read_results(out: str | Path) -> list[dict[str, Any]]:
    """Every result row written under `out` so far (any order)."""
    out = Path(out)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return [row for part in _parts(out, manifest["format"]) for row in _read_part(part)]


def _write_part(table: pa.Table, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        pq.write_table(table, temporary)
    else:
        with temporary.open("w", encoding="utf-8") as lines:
            lines.writelines(json.dumps(row) + "\n" for row in table.to_pylist())
    os.replace(temporary, path)


def _pending(requests: pa.Table, done: set[str]) -> pa.Table:
    if not done:
        return requests
    return requests.filter(pc.invert(pc.is_in(requests["query_id"], value_set=pa.array(sorted(done), pa.string()))))


def _rankings(rows: Iterable[dict[str, Any]]) -> dict[str, Ranking]:
    return {
        row["query_id"]: [(item["id"], item["relevance_score"]) for item in row["ranking"]]
        for row in rows
        if row["error"] is None
    }


def run_batch(
    requests: pa.Table,
    spec: Spec,
    out: str | Path,
    *,
    engine: str = "ray",
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    batch_size: int = 8,
    output_format: str = "parquet",
    progress: bool = False,
) -> BatchReport:
    """Re-rank every request (`REQUEST_SCHEMA` rows) with the configuration `spec` (an evaluation
    configuration: `{"name", "scorer", "fusion", "gate", caches, "timeout_s", ...}`, see
    `rerank_prod.evaluation.configs`) and write the results under `out`.

    `engine`: "ray" (Ray Data, `actors` actors of `cpus_per_actor` CPUs and `gpus_per_actor` GPUs,
    each loading the model once) or "local" (this process, the same worker). `batch_size`:
    requests per batch, and per result part. Requests whose `query_id` already has a
    result under `out` are skipped (resume). Raises `EvalInputError` (a ValueError) for settings
    it cannot use or an `out` holding another configuration's results, before any work.
    """
    if engine not in ENGINES:
        raise EvalInputError(f"engine must be one of {ENGINES}, got {engine!r}")
    if output_format not in FORMATS:
        raise EvalInputError(f"output format must be one of {FORMATS}, got {output_format!r}")
    ids = requests["query_id"].to_pylist()
    if len(set(ids)) != len(ids):
        raise EvalInputError("query_id must be unique across the requests")
    spec = normalize_spec(spec, {}, 1)
    out = Path(out)
    started = time.perf_counter()
    check_int("actors", actors)
    check_int("batch_size", batch_size)
    check_number("cpus_per_actor", cpus_per_actor)
    check_number("gpus_per_actor", gpus_per_actor, allow_zero=True)
    _check_manifest(out, spec, output_format)
    done = {row["query_id"] for row in read_results(out)}
    pending = _pending(requests, done)
    results = (
        ray_results(
            pending,
            spec,
            batch_size=batch_size,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor,
            progress=progress,
        )
        if engine == "ray"
        else local_results(pending, spec, batch_size=batch_size)
    )
    job = uuid.uuid4().hex[:8]
    written = failed = 0
    first_result_s = None
    for number, table in enumerate(results):
        _write_part(table, out / "results" / f"part-{job}-{number:06d}.{output_format}")
        if first_result_s is None:
            first_result_s = time.perf_counter() - started
        written += table.num_rows
        failed += table.num_rows - table["error"].null_count
    wall_s = time.perf_counter() - started
    run_file = out / RUN_FILE
    write_run(run_file, _rankings(read_results(out)), str(spec.get("name", "rerank-prod")))
    return BatchReport(
        out=out,
        run_file=run_file,
        queries=written,
        resumed=len(ids) - pending.num_rows,
        failed=failed,
        pairs=int(pc.sum(pc.list_value_length(pending["candidates"])).as_py() or 0),
        wall_s=wall_s,
        first_result_s=first_result_s,
        engine=engine,
        actors=actors if engine == "ray" else 1,
    )
