"""Batch re-ranking: the real cross-encoder over SciFact BM25 candidates, in this process and on a
local Ray cluster (started here, on 127.0.0.1, with the machine's 2 CPUs); resumable output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray.data", reason="the Ray engine needs the ray extra")

from rerank_prod.batch import beir_requests, read_requests, read_results, requests_table, run_batch  # noqa: E402
from rerank_prod.batch.records import candidates_of  # noqa: E402
from rerank_prod.cli import main  # noqa: E402
from rerank_prod.evaluation.configs import build_reranker, normalize_spec  # noqa: E402
from rerank_prod.evaluation.dataset import EvalInputError  # noqa: E402

pytestmark = pytest.mark.needs_models

REPO_ROOT = Path(__file__).resolve().parent.parent
QUERIES, TOP_K = 6, 5


@pytest.fixture(scope="module")
def spec(cross_encoder_path: str) -> dict:
    """Fusion with BM25 as well as the model: the whole configuration travels to the actors."""
    scorer = {"type": "cross-encoder", "model": cross_encoder_path, "activation": "identity", "batch_size": 32}
    return normalize_spec({"name": "fusion 50/50", "fusion": {"type": "weighted"}}, scorer, 1)


@pytest.fixture(scope="module")
def requests(scifact_dir: Path):
    _, table = beir_requests(scifact_dir, top_k=TOP_K, max_queries=QUERIES)
    return table


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """Workers import this checkout (PYTHONPATH) and load the model offline."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={
            "env_vars": {"PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        },
    )
    yield
    ray.shutdown()


def by_query(out: Path) -> dict[str, dict]:
    return {row["query_id"]: row for row in read_results(out)}


def without_scores(row: dict) -> dict:
    """A result row without its latency and float scores (compared with a tolerance instead)."""
    floats = {"relevance_score", "rerank_score", "retrieval_score"}
    kept = {key: value for key, value in row.items() if key not in {"latency_s", "ranking"}}
    kept["ranking"] = [{k: v for k, v in item.items() if k not in floats} for item in row["ranking"]]
    return kept


def trec_run(path: Path) -> dict[tuple[str, str, str], float]:
    """A TREC run file as (query id, doc id, rank) -> score."""
    rows = (line.split() for line in path.read_text().splitlines())
    return {(qid, doc, rank): float(score) for qid, _, doc, rank, score, _ in rows}


def one_torch_thread():
    """Ray gives each actor as many torch threads as CPUs (1 here); float32 sums depend on the
    thread count, so the single-process reference runs with the same one thread."""
    import torch

    class Threads:
        def __enter__(self) -> None:
            self.before = torch.get_num_threads()
            torch.set_num_threads(1)

        def __exit__(self, *_: object) -> None:
            torch.set_num_threads(self.before)

    return Threads()


@pytest.mark.slow
@pytest.mark.needs_services
def test_ray_results_are_identical_to_the_single_process_path(
    ray_cluster: None, requests, spec: dict, tmp_path: Path
) -> None:
    # fp32: bf16 (what "auto" picks on this CPU) rounds differently with each batch's padding.
    spec = {**spec, "scorer": {**spec["scorer"], "precision": "fp32"}}
    with one_torch_thread():
        local = run_batch(requests, spec, tmp_path / "local", engine="local", batch_size=2)
        reranker = build_reranker(spec)  # the plain in-process call, for reference
        direct = {row["query_id"]: reranker.rerank(row["query"], candidates_of(row)) for row in requests.to_pylist()}
    distributed = run_batch(requests, spec, tmp_path / "ray", engine="ray", actors=2, batch_size=2)
    assert (local.queries, distributed.queries) == (QUERIES, QUERIES)
    assert distributed.pairs == local.pairs == QUERIES * TOP_K
    local_rows, ray_rows = by_query(tmp_path / "local"), by_query(tmp_path / "ray")
    # Ray Data cuts blocks its own way, so different queries share a forward pass: the padding moves
    # float32 scores by ~1e-7. Everything else (order, ids, sources) is identical.
    assert ray_rows.keys() == local_rows.keys()
    for qid, local_row in local_rows.items():
        assert without_scores(ray_rows[qid]) == without_scores(local_row)
        for key in ("relevance_score", "rerank_score", "retrieval_score"):
            theirs = [item[key] for item in ray_rows[qid]["ranking"]]
            assert theirs == pytest.approx([item[key] for item in local_row["ranking"]], rel=1e-5, abs=1e-6)
    for qid, result in direct.items():
        # The batch path shares forward passes between queries: padding moves float32 scores by ~1e-7.
        ranking = local_rows[qid]["ranking"]
        assert [i["id"] for i in ranking] == [item.candidate.id for item in result]
        assert [i["relevance_score"] for i in ranking] == pytest.approx([item.relevance_score for item in result])
        assert local_rows[qid]["source"] == str(result.source) == "model"
    ray_run, local_run = (trec_run(tmp_path / name / "run.trec") for name in ("ray", "local"))
    assert ray_run.keys() == local_run.keys() and len(ray_run) == QUERIES * TOP_K
    assert [ray_run[key] for key in local_run] == pytest.approx(list(local_run.values()), rel=1e-5, abs=1e-6)


@pytest.mark.slow
@pytest.mark.needs_services
def test_eval_with_ray_reports_what_the_in_process_eval_reports(
    ray_cluster: None, scifact_dir: Path, cross_encoder_path: str, tmp_path: Path
) -> None:
    common = [
        "eval",
        str(scifact_dir),
        "--model",
        cross_encoder_path,
        "--top-k",
        str(TOP_K),
        "--max-queries",
        "4",
        "-r",  # fp32: bf16 scores move with the padding, and Ray groups queries into passes its own way
        "name=model,scorer.precision=fp32",
        "-r",
        "name=gated,fusion=weighted,gate.min_top_gap=0.3,scorer.precision=fp32",
        "--no-plot",
        "--no-progress",
    ]
    with one_torch_thread():
        assert main([*common, "--out", str(tmp_path / "here"), "--no-replay"]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--ray", "--ray-actors", "2"]) == 0
    here, ray = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("here", "ray"))
    assert ray["settings"]["ray_actors"] == 2
    for mine, theirs in zip(here["systems"], ray["systems"], strict=True):
        assert mine["name"] == theirs["name"] and mine["metrics"] == pytest.approx(theirs["metrics"], abs=1e-9)
        assert mine.get("rates") == theirs.get("rates")
    ray_run, here_run = (trec_run(tmp_path / name / "runs" / "gated.trec") for name in ("ray", "here"))
    assert ray_run.keys() == here_run.keys()
    assert [ray_run[key] for key in here_run] == pytest.approx(list(here_run.values()), rel=1e-5, abs=1e-6)


def test_an_interrupted_job_resumes_where_it_stopped(requests, spec: dict, tmp_path: Path) -> None:
    """SIGKILL `rerank-prod batch` once its first parts are written, run it again: every query is
    re-ranked exactly once and the results equal an uninterrupted run's (in fp32: bf16 scores move
    with the padding, and the runs group queries into forward passes differently)."""
    spec = {**spec, "scorer": {**spec["scorer"], "precision": "fp32"}}
    source = tmp_path / "requests.parquet"
    import pyarrow.parquet as pq

    pq.write_table(requests, source)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "rerank_prod.cli",
        "batch",
        str(source),
        "--model",
        spec["scorer"]["model"],
        "-r",
        "name=fusion 50/50,fusion=weighted,scorer.precision=fp32",
        "--engine",
        "local",
        "--queries-per-batch",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "results").glob("part-*.parquet")) and time.monotonic() < deadline:
            assert job.poll() is None, "the job ended before it could be interrupted"
            time.sleep(0.01)
        os.kill(job.pid, signal.SIGKILL)
    finally:
        job.wait(timeout=30)
    written_before = len(read_results(out))
    assert 1 <= written_before < QUERIES
    resumed = run_batch(requests, spec, out, engine="local", batch_size=1)
    assert (resumed.resumed, resumed.queries) == (written_before, QUERIES - written_before)
    rows = read_results(out)
    assert sorted(row["query_id"] for row in rows) == sorted(requests["query_id"].to_pylist())  # each exactly once
    fresh = run_batch(requests, spec, tmp_path / "fresh", engine="local", batch_size=3)
    assert fresh.queries == QUERIES
    resumed_rows, fresh_rows = by_query(out), by_query(tmp_path / "fresh")
    assert resumed_rows.keys() == fresh_rows.keys()
    for qid, row in fresh_rows.items():
        assert without_scores(resumed_rows[qid]) == without_scores(row)
        theirs = [item["relevance_score"] for item in resumed_rows[qid]["ranking"]]
        assert theirs == pytest.approx([item["relevance_score"] for item in row["ranking"]], rel=1e-5, abs=1e-6)
    again = run_batch(requests, spec, out, engine="local")
    assert (again.queries, again.resumed, again.pairs) == (0, QUERIES, 0)
    assert len((out / "run.trec").read_text().splitlines()) == QUERIES * TOP_K


def test_jsonl_requests_in_jsonl_results_out(spec: dict, tmp_path: Path) -> None:
    source = tmp_path / "requests.jsonl"
    rows = [
        {
            "query_id": "q1",
            "query": "vitamin D and fractures",
            "candidates": [
                {"id": "a", "text": "Vitamin D supplements lowered hip fracture rates.", "retrieval_score": 2.0},
                {"id": "b", "text": "Gut microbiota shift on a high-fat diet."},
            ],
        },
        {"query_id": "q2", "query": "   ", "candidates": [{"id": "c", "text": "Any passage."}]},
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = run_batch(read_requests(source), spec, tmp_path / "out", engine="local", output_format="jsonl")
    assert (report.queries, report.failed) == (2, 1)
    results = by_query(tmp_path / "out")
    assert [item["id"] for item in results["q1"]["ranking"]] == ["a", "b"]
    assert results["q1"]["ranking"][1]["retrieval_score"] is None
    assert results["q2"]["error"].startswith("ValueError") and results["q2"]["ranking"] == []
    assert list((tmp_path / "out" / "results").glob("part-*.jsonl"))
    assert (tmp_path / "out" / "run.trec").read_text().split()[:3] == ["q1", "Q0", "a"]


def test_bad_requests_and_settings_fail_before_any_work(requests, spec: dict, tmp_path: Path) -> None:
    missing = tmp_path / "missing-column.jsonl"
    missing.write_text(json.dumps({"query_id": "q1", "query": "x"}) + "\n")
    with pytest.raises(EvalInputError, match=r"missing columns \['candidates'\]"):
        read_requests(missing)
    not_text = tmp_path / "not-text.jsonl"
    not_text.write_text(json.dumps({"query_id": "q1", "query": "x", "candidates": [{"id": "d", "text": 3}]}) + "\n")
    with pytest.raises(EvalInputError, match="each candidate needs a text"):
        read_requests(not_text)
    (tmp_path / "requests.csv").write_text("query_id,query\n")
    with pytest.raises(EvalInputError, match="expected .jsonl or .parquet"):
        read_requests(tmp_path / "requests.csv")
    for kwargs, message in (
        ({"engine": "spark"}, "engine must be one of"),
        ({"output_format": "csv"}, "output format"),
        ({"actors": 0}, "actors"),
        ({"batch_size": 0}, "batch_size"),
    ):
        with pytest.raises(ValueError, match=message):
            run_batch(requests, spec, tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad" / "results").exists() or not list((tmp_path / "bad" / "results").iterdir())
    twice = requests_table({"q": "x"}, {"q": []}, ["q", "q"])
    with pytest.raises(EvalInputError, match="query_id must be unique"):
        run_batch(twice, spec, tmp_path / "dupes", engine="local")
    run_batch(requests.slice(0, 1), spec, tmp_path / "used", engine="local")
    other = {**spec, "fusion": None}
    with pytest.raises(EvalInputError, match="another configuration"):
        run_batch(requests, other, tmp_path / "used", engine="local")


def test_batch_cli_runs_one_configuration(scifact_dir: Path, cross_encoder_path: str, tmp_path: Path, capsys) -> None:
    base = ["batch", str(scifact_dir), "--model", cross_encoder_path, "--top-k", "3", "--max-queries", "2"]
    assert main([*base, "--engine", "local", "--out", str(tmp_path / "out"), "--format", "jsonl"]) == 0
    printed = capsys.readouterr().out
    assert "'model' over BM25" in printed and "2 queries re-ranked (6 pairs" in printed
    assert len((tmp_path / "out" / "run.trec").read_text().splitlines()) == 6
    assert main([*base, "--engine", "local", "--out", str(tmp_path / "two"), "-r", "name=a", "-r", "name=b"]) == 2
    assert "batch runs one configuration" in capsys.readouterr().err
