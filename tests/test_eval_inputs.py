"""Datasets, run files and configurations: parsing, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerank_prod import BM25Scorer, ConfidenceGate, RedisCache, Reranker, SemanticCache, TEIScorer, WeightedFusion
from rerank_prod.evaluation.configs import (
    SCORERS,
    build_reranker,
    load_config_file,
    parse_flag_spec,
    resolve_specs,
)
from rerank_prod.evaluation.dataset import EvalInputError, load_beir
from rerank_prod.evaluation.first_stage import read_run, run_file_rankings, write_run
from tests.eval_helpers import QUERIES, make_beir
from tests.support import ConstantTimeScorer

DEFAULT_SCORER = {"type": "overlap"}


@pytest.fixture
def beir(tmp_path):
    return make_beir(tmp_path / "beir")


@pytest.fixture
def overlap(monkeypatch):
    monkeypatch.setitem(SCORERS, "overlap", ConstantTimeScorer)


# --- datasets ------------------------------------------------------------------------------------


def test_dataset_loads_query_text_only(beir) -> None:
    dataset = load_beir(beir)
    assert dataset.queries == QUERIES  # metadata (the answers) never read
    assert dataset.qrels["q2"] == {"d6": 2, "d5": 1}
    assert dataset.corpus["d1"].passage == "Aspirin aspirin lowers colorectal cancer risk in cohort studies"
    assert dataset.query_ids == ["q1", "q2", "q3"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda root: (root / "qrels" / "test.tsv").rename(root / "qrels" / "dev.tsv"),
            "splits available: dev",
        ),
        (
            lambda root: (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\nnot json\n'),
            r"corpus.jsonl:2",
        ),
        (lambda root: (root / "corpus.jsonl").write_text('{"_id": "d1"}\n'), "'text' must be a string"),
        (
            lambda root: (root / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n'),
            "not in queries.jsonl",
        ),
        (lambda root: (root / "qrels" / "test.tsv").write_text("h\nq1\td1\tyes\n"), "must be an integer"),
        (lambda root: (root / "queries.jsonl").unlink(), "queries.jsonl not found"),
    ],
)
def test_broken_datasets_say_what_is_wrong(beir, damage, message) -> None:
    damage(beir)
    with pytest.raises(EvalInputError, match=message):
        load_beir(beir)


def test_missing_dataset_directory(tmp_path) -> None:
    with pytest.raises(EvalInputError, match="dataset directory"):
        load_beir(tmp_path / "nope")


# --- run files -----------------------------------------------------------------------------------


def test_run_file_is_sorted_by_score_with_rank_breaking_ties(tmp_path) -> None:
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d3 3 1.0 t\nq1 Q0 d1 1 2.5 t\nq1 Q0 d2 2 1.0 t\n\nq2 Q0 d5 1 -1 t\n")
    assert read_run(path) == {"q1": [("d1", 2.5), ("d2", 1.0), ("d3", 1.0)], "q2": [("d5", -1.0)]}


def test_run_file_round_trip(tmp_path) -> None:
    rankings = {"q1": [("d1", 3.0), ("d4", 2.0)], "q2": [("d6", 0.5)]}
    write_run(tmp_path / "run.trec", rankings, "my system")
    assert read_run(tmp_path / "run.trec") == rankings
    assert (tmp_path / "run.trec").read_text().splitlines()[0] == "q1 Q0 d1 1 3.000000 my_system"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q1 Q0 d1 1 2.0\n", r"run.trec:1: expected 6 fields"),
        ("q1 Q0 d1 one 2.0 t\n", r"run.trec:1: rank must be an integer"),
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", r"run.trec:2: document 'd1' listed twice"),
        ("\n", "is empty"),
    ],
)
def test_malformed_run_files(tmp_path, content, message) -> None:
    (tmp_path / "run.trec").write_text(content)
    with pytest.raises(EvalInputError, match=message):
        read_run(tmp_path / "run.trec")


def test_run_file_against_the_dataset(beir, tmp_path) -> None:
    dataset = load_beir(beir)
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d4 1 2.0 t\nq1 Q0 d1 2 1.0 t\nq1 Q0 d3 3 0.5 t\n")
    assert run_file_rankings(path, dataset, dataset.query_ids, top_k=2) == {
        "q1": [("d4", 2.0), ("d1", 1.0)],
        "q2": [],
        "q3": [],
    }
    path.write_text("q1 Q0 d99 1 2.0 t\n")
    with pytest.raises(EvalInputError, match="missing from the corpus"):
        run_file_rankings(path, dataset, dataset.query_ids, top_k=2)
    path.write_text("q7 Q0 d1 1 2.0 t\n")
    with pytest.raises(EvalInputError, match="none of the 3 judged queries"):
        run_file_rankings(path, dataset, dataset.query_ids, top_k=2)
    with pytest.raises(EvalInputError, match="not found"):
        read_run(tmp_path / "missing.trec")


# --- configurations ------------------------------------------------------------------------------


def test_flag_spec_reaches_every_table() -> None:
    spec = parse_flag_spec(
        "name=hybrid,fusion=weighted,fusion.retrieval_weight=0.3,gate.min_top_gap=0.2,"
        "result_cache=true,score_cache.maxsize=100,timeout_s=1.5,fallback=overlap,top_n=5,scorer.name=other"
    )
    assert spec == {
        "name": "hybrid",
        "fusion": {"type": "weighted", "retrieval_weight": 0.3},
        "gate": {"min_top_gap": 0.2},
        "result_cache": True,
        "score_cache": {"maxsize": 100},
        "timeout_s": 1.5,
        "fallback": "overlap",
        "top_n": 5,
        "scorer": {"name": "other"},
    }


def test_specs_build_real_rerankers(overlap) -> None:
    [spec] = resolve_specs(
        [
            "fusion=weighted,fusion.retrieval_weight=0.3,gate.min_top_gap=0.2,score_cache=true,"
            "fallback=overlap,timeout_s=2,top_n=5"
        ],
        None,
        DEFAULT_SCORER,
    )
    assert spec["name"] == "overlap + weighted 0.3 + gated + cached + deadline"
    reranker = build_reranker(spec)
    assert isinstance(reranker, Reranker)
    assert reranker.fusion == WeightedFusion(retrieval_weight=0.3)
    assert reranker.gate.min_top_gap == 0.2
    assert reranker.score_cache is not None and reranker.result_cache is None
    assert isinstance(reranker.fallback_scorer, ConstantTimeScorer)
    assert (reranker.timeout_s, reranker.top_n) == (2, 5)


def test_defaults_are_model_fusion_and_gated_fusion() -> None:
    specs = resolve_specs([], None, {"type": "cross-encoder", "model": "m"})
    assert [s["name"] for s in specs] == ["model", "fusion 50/50", "fusion 50/50 + gate"]
    assert all(s["scorer"] == {"type": "cross-encoder", "model": "m"} for s in specs)


def test_config_scorer_options_lay_over_the_default_scorer_of_the_same_type() -> None:
    default = {"type": "cross-encoder", "model": "m", "activation": "identity"}
    same, other = resolve_specs(["scorer.activation=sigmoid", "scorer=overlap"], None, default)
    assert same["scorer"] == {"type": "cross-encoder", "model": "m", "activation": "sigmoid"}
    assert other["scorer"] == {"type": "overlap"}


def test_every_core_backend_is_reachable_by_name(embedder_path) -> None:
    assert set(SCORERS) >= {"cross-encoder", "embedding", "openai-embedding", "cohere", "tei", "rerank-server",
                            "llm-pointwise", "llm-listwise", "bm25"}  # fmt: skip
    [spec] = resolve_specs(
        [
            "scorer=tei,scorer.base_url=http://127.0.0.1:9,result_cache=redis,result_cache.url=redis://127.0.0.1:9/0,"
            f"semantic_cache.embedder={embedder_path},semantic_cache.threshold=0.9"
        ],
        None,
        DEFAULT_SCORER,
    )
    reranker = build_reranker(spec)  # nothing connects before the first call
    assert isinstance(reranker.scorer, TEIScorer)
    assert isinstance(reranker.result_cache.backend, RedisCache)
    assert isinstance(reranker.semantic_cache, SemanticCache) and reranker.semantic_cache.threshold == 0.9
    assert spec["name"] == "tei + cached"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("scorer=nope", "unknown scorer 'nope'; known: .*cross-encoder"),
        ("fusion=nope", "unknown fusion 'nope'; known: rrf, weighted"),
        ("fusion.rerank_weight=0", "rerank_weight must be > 0"),
        ("gate.min_top_gap=2", "min_top_gap must be a number in"),
        ("gate.bogus=1", "gate: .*bogus"),
        ("top_n=0", "re-ranker 'overlap': top_n must be a positive int"),
        ("result_cache=nope", "unknown cache backend 'nope'; known: memory, redis"),
    ],
)
def test_bad_configurations_fail_with_clear_errors(overlap, flag, message) -> None:
    [spec] = resolve_specs([flag], None, DEFAULT_SCORER)
    with pytest.raises(EvalInputError, match=message):
        build_reranker(spec)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["colour=red"], "unknown keys \\['colour'\\]"),
        (["name=a", "name=a"], "names must be unique"),
        (["justtext"], "must be key=value"),
        (["top_n.x=1"], "only scorer, fusion, gate"),
        (["gate=[1]"], "'gate' must be a table"),
    ],
)
def test_bad_specs_fail_before_anything_loads(flags, message) -> None:
    with pytest.raises(EvalInputError, match=message):
        resolve_specs(flags, None, DEFAULT_SCORER)


def test_config_files_toml_and_json(tmp_path) -> None:
    (tmp_path / "c.toml").write_text(
        '[[reranker]]\nname = "pure"\n\n[[reranker]]\nname = "rrf"\nfusion = { type = "rrf", k = 10 }\n'
    )
    (tmp_path / "c.json").write_text(json.dumps({"rerankers": [{"name": "pure"}, {"name": "g", "gate": True}]}))
    assert load_config_file(tmp_path / "c.toml") == [
        {"name": "pure"},
        {"name": "rrf", "fusion": {"type": "rrf", "k": 10}},
    ]
    specs = resolve_specs(["name=flag"], tmp_path / "c.json", DEFAULT_SCORER)
    assert [s["name"] for s in specs] == ["pure", "g", "flag"]
    (tmp_path / "bad.toml").write_text("[[reranker]\n")
    with pytest.raises(EvalInputError, match="bad.toml"):
        load_config_file(tmp_path / "bad.toml")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(EvalInputError, match="must list re-rankers"):
        load_config_file(tmp_path / "empty.json")


def test_example_config_file_is_valid() -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "eval.toml"
    specs = resolve_specs([], path, {"type": "cross-encoder", "model": "m"})
    assert [s["name"] for s in specs] == ["model", "fusion 50/50", "rrf", "fusion 50/50 + gate", "fusion + cached"]
    assert specs[2]["fusion"] == {"type": "rrf", "k": 60}


def test_bm25_fallback_and_the_articles_gate_from_flags(overlap) -> None:
    [spec] = resolve_specs(
        ["fallback=bm25,gate.min_top_gap=0.3,gate.min_top_k_variance=0.01,gate.scale=raw"], None, DEFAULT_SCORER
    )
    reranker = build_reranker(spec)
    assert isinstance(reranker.fallback_scorer, BM25Scorer)
    assert reranker.gate == ConfidenceGate(min_top_gap=0.3, min_top_k_variance=0.01, scale="raw")
