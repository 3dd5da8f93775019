"""`rerank-prod bench` end to end on a small SciFact slice with the real shared cross-encoder."""

from __future__ import annotations

import json

import pytest

from rerank_prod.cli import BENCH_SYSTEMS, main
from rerank_prod.evaluation.bench import SYSTEMS, measure_memory
from rerank_prod.types import Candidate

pytest.importorskip("langchain_classic")
pytest.importorskip("langchain_community")
pytest.importorskip("llama_index.core")


def test_cli_names_match_the_registry() -> None:
    assert list(BENCH_SYSTEMS) == list(SYSTEMS)


def test_bench_all_systems_on_a_small_slice(scifact_dir, cross_encoder_path, tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    flags = "--sizes 3,5 --queries 2 --repeats 1 --concurrency 2 --calls-per-caller 1 --no-memory --no-progress"
    flags += " --ndcg-queries 2"
    code = main(["bench", str(scifact_dir), "--model", cross_encoder_path, "--out", str(out), *flags.split()])
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["reference"] == "core"
    assert set(report["sizes"]) == {"3", "5"}
    for size in ("3", "5"):
        results = report["sizes"][size]
        assert list(results) == list(SYSTEMS)
        for key in ("core", "langchain", "llamaindex", "langchain-crossencoder"):  # same model, same text cap
            assert results[key]["identical"] == results[key]["sets"] == 2, key
        for result in results.values():
            assert result["calls"] == 2 and 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p95"]
    # LlamaIndex's SentenceTransformerRerank loads every model with max_length 512: the report says so
    assert report["systems"]["core"]["max_tokens"] == 256
    assert report["systems"]["llamaindex-sentence-transformer"]["max_tokens"] == 512
    assert report["concurrency"]["size"] == 3
    assert all(r["calls"] == 2 and r["calls_per_s"] > 0 for r in report["concurrency"]["systems"].values())
    assert report["memory"] == {}
    # achieved rate on the real tokens: more candidates, more work; a longer cap never less
    sizes = report["sizes"]
    assert 0 < sizes["3"]["core"]["gflop_per_call"] < sizes["5"]["core"]["gflop_per_call"]
    assert sizes["5"]["llamaindex-sentence-transformer"]["gflop_per_call"] >= sizes["5"]["core"]["gflop_per_call"]
    assert all(result["gflop_per_s"] > 0 for result in sizes["5"].values())
    quality = report["quality"]
    assert quality["queries"] == 2 and quality["candidates"] == 5
    assert [row["system"].split(" (")[0] for row in quality["rows"]] == [
        "first stage",
        "core auto",
        "core fp32",
        "core bf16",
    ]
    assert all(0 <= row["ndcg@10"] <= 1 for row in quality["rows"])
    printed = capsys.readouterr().out
    assert "NDCG@10 per precision" in printed and "GFLOP/s at p50" in printed
    assert "p50 ratio (row / column)" in printed and "Concurrent async callers" in printed
    assert "## 5 candidates per call" in (out / "bench.md").read_text()


def test_memory_is_measured_in_a_fresh_process(scifact_dir, cross_encoder_path) -> None:
    sets = {2: [("q", "aspirin and cancer", [Candidate("aspirin lowers risk", id="a"), Candidate("x", id="b")])]}
    memory = measure_memory("core", cross_encoder_path, sets)
    assert memory["rss_before_build_mib"] < memory["rss_after_build_mib"] <= memory["rss_peak_building_mib"]
    assert memory["rss_peak_calls_mib"] > 0


def test_unknown_system_is_a_clear_error(scifact_dir, cross_encoder_path, tmp_path, capsys) -> None:
    args = ["bench", str(scifact_dir), "--model", cross_encoder_path, "--out", str(tmp_path), "--systems", "core,nope"]
    assert main(args) == 2
    assert "unknown systems ['nope']" in capsys.readouterr().err
