"""`rerank-prod eval` end to end: a tiny collection with in-test scorers (fast, every code path),
and a small slice of SciFact with the real shared cross-encoder."""

from __future__ import annotations

import json

import pytest

from rerank_prod.cli import main
from rerank_prod.evaluation import configs
from rerank_prod.evaluation.configs import SCORERS
from rerank_prod.evaluation.first_stage import read_run
from rerank_prod.evaluation.runner import ReplayScorer
from tests.eval_helpers import make_beir
from tests.support import ConstantTimeScorer, FailingScorer

pytest.importorskip("pytrec_eval")
pytest.importorskip("bm25s")


@pytest.fixture
def beir(tmp_path):
    return make_beir(tmp_path / "beir")


@pytest.fixture
def scored_texts(monkeypatch) -> list[str]:
    """Registers 'overlap' (word overlap; its `name` option makes another scorer) and 'broken'
    scorers; returns every text the real scorers were asked to score."""
    scored: list[str] = []

    def overlap(name: str = "overlap") -> ConstantTimeScorer:
        scorer = ConstantTimeScorer(name=name)
        scorer.scored_texts = scored
        return scorer

    monkeypatch.setitem(SCORERS, "overlap", overlap)
    monkeypatch.setitem(SCORERS, "broken", FailingScorer)
    return scored


def _eval(beir, out, *extra: str) -> int:
    return main(["eval", str(beir), "--out", str(out), "--top-k", "4", "--no-progress", "--no-plot", *extra])


def test_configurations_share_scores_and_report_rates(beir, tmp_path, scored_texts, capsys) -> None:
    out = tmp_path / "out"
    configs = [
        "name=pure,scorer=overlap",
        "name=fused,scorer=overlap,fusion=weighted",
        "name=gated,scorer=overlap,gate.min_top_gap=0.0",
        "name=down,scorer=broken",
        "name=cached,scorer=overlap,scorer.name=other,result_cache=true,score_cache=true",
    ]
    code = _eval(beir, out, *(f"--reranker={config}" for config in configs), "--gate-sweep", "0:1:0.5")
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    systems = {s["name"]: s for s in report["systems"]}
    # 3 queries x 4 candidates scored for real once for pure/fused/gated, once for the other scorer
    assert len(scored_texts) == 2 * 3 * 4
    assert systems["fused"]["replayed_model_time"] is True
    assert systems["gated"]["rates"]["gate_skip"] == 1.0  # gap >= 0 always: every query skipped
    assert systems["gated"]["metrics"] == systems[report["systems"][0]["name"]]["metrics"]
    assert systems["down"]["rates"]["fallback"] == 1.0
    assert systems["cached"]["rates"] == {
        "fallback": 0.0,
        "gate_skip": 0.0,
        "cache_hit": 0.0,
        "score_cache_hit": 0.0,
    }
    assert systems["pure"]["per_query"]["q1"]["source"] == "model"
    assert systems["pure"]["gain"]["ndcg@5"] == pytest.approx(
        systems["pure"]["metrics"]["ndcg@5"] - report["systems"][0]["metrics"]["ndcg@5"]
    )
    sweep = report["gate_sweep"]
    assert sweep["config"] == "pure"
    assert [p["threshold"] for p in sweep["points"]] == [0.0, 0.5, 1.0]
    assert sweep["points"][0]["skip_rate"] == 1.0
    assert sweep["points"][0]["est_latency_ms"]["mean"] == 0.0
    printed = capsys.readouterr().out
    assert "down: NDCG@5" in printed and "Gate sweep over 'pure'" in printed


def test_no_replay_scores_live_in_every_configuration(beir, tmp_path, scored_texts) -> None:
    assert (
        _eval(
            beir,
            tmp_path / "out",
            "-r",
            "name=a,scorer=overlap",
            "-r",
            "name=b,scorer=overlap",
            "--no-replay",
        )
        == 0
    )
    assert len(scored_texts) == 2 * 3 * 4


def test_replay_charges_the_recorded_model_time() -> None:
    recording: dict = {}
    first, second = ReplayScorer(ConstantTimeScorer(), recording), ReplayScorer(ConstantTimeScorer(), recording)
    assert first.score("a b", ["a", "c"]) == [1.0, 0.0]
    assert first.take_replayed_s() == 0.0  # measured for real by the pipeline
    assert second.score("a b", ["a", "c"]) == [1.0, 0.0]
    assert second.take_replayed_s() == recording[("a b", ("a", "c"))][1] > 0
    assert second.take_replayed_s() == 0.0
    assert second.identity == "test-overlap:overlap"


def test_run_file_first_stage(beir, tmp_path, scored_texts) -> None:
    run = tmp_path / "bm25.trec"
    run.write_text("q1 Q0 d3 1 9 x\nq1 Q0 d1 2 8 x\nq2 Q0 d6 1 1 x\n")
    assert _eval(beir, tmp_path / "out", "--run", str(run), "-r", "name=pure,scorer=overlap") == 0
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["settings"]["first_stage"] == "run file bm25.trec"
    assert read_run(tmp_path / "out" / "runs" / "pure.trec")["q1"][0][0] == "d1"
    assert report["systems"][1]["calls"] == 2  # q3 has no candidates: scored zero, not re-ranked


def test_plugin_module_registers_a_scorer(beir, tmp_path, monkeypatch) -> None:
    (tmp_path / "my_scorers.py").write_text(
        "from rerank_prod.evaluation import register_scorer\n"
        "from tests.support import ConstantTimeScorer\n"
        "register_scorer('mine', ConstantTimeScorer)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(configs, "SCORERS", dict(SCORERS))  # the registration ends with this test
    assert _eval(beir, tmp_path / "out", "--plugin", "my_scorers", "-r", "scorer=mine,scorer.name=m") == 0
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["systems"][1]["name"] == "mine"
    assert _eval(beir, tmp_path / "out", "--plugin", "no_such_module") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "dev"], "splits available: test"),
        (["-r", "fusion=nope"], "unknown fusion 'nope'"),
        (["--run", "missing.trec"], "run file missing.trec not found"),
        (["-r", "name=g,gate=true", "--gate-sweep", "0:0.5:0.5"], "needs an ungated configuration"),
        (["--gate-sweep", "0:2:1"], "use --sweep-scale raw"),
    ],
)
def test_bad_input_exits_2_with_the_reason(beir, tmp_path, scored_texts, capsys, args, message) -> None:
    assert _eval(beir, tmp_path / "out", "--model", "unused", *args) == 2
    assert message in capsys.readouterr().err


def test_bad_flags_are_argparse_errors(beir, tmp_path) -> None:
    with pytest.raises(SystemExit):
        _eval(beir, tmp_path / "out", "--gate-sweep", "0.5:0.1:0.1")
    with pytest.raises(SystemExit):
        _eval(beir, tmp_path / "out", "--k", "0")


def test_scifact_slice_with_the_real_cross_encoder(scifact_dir, cross_encoder_path, tmp_path, capsys) -> None:
    out = tmp_path / "scifact"
    flags = "--top-k 10 --max-queries 6 --k 3,5,10 --gate-sweep 0:0.6:0.3 --no-progress"
    code = main(["eval", str(scifact_dir), "--model", cross_encoder_path, "--out", str(out), *flags.split()])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    names = [s["name"] for s in report["systems"]]
    assert names == ["BM25 (bm25s k1=0.9 b=0.4)", "model", "fusion 50/50", "fusion 50/50 + gate"]
    assert report["settings"]["queries"] == 6 and report["settings"]["ks"] == [3, 5, 10]
    for system in report["systems"][1:]:
        assert set(system["metrics"]) == {f"{m}@{k}" for m in ("ndcg", "mrr", "recall") for k in (3, 5, 10)}
        assert 0 < system["latency_ms"]["p50"] <= system["latency_ms"]["p95"] <= system["latency_ms"]["p99"]
        assert system["verdict"].startswith("NDCG@5 ")
        run = read_run(out / system["run_file"])
        assert len(run) == 6 and all(len(ranking) == 10 for ranking in run.values())
        # the run file holds the reported order: re-evaluating it gives the reported numbers back
        assert list(run) == list(system["per_query"])
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    assert "| model " in markdown and "## Gate sweep" in markdown and "## Verdicts" in markdown
    printed = capsys.readouterr().out
    assert "fusion 50/50 + gate" in printed and "probably not worth" in printed or "worth it if" in printed


def test_gate_sweep_over_variance_on_raw_scores(beir, tmp_path, scored_texts) -> None:
    out = tmp_path / "out"
    sweep = ["--gate-sweep", "0:1e6:1e6", "--sweep-signal", "top_k_variance", "--sweep-scale", "raw"]
    assert _eval(beir, out, "-r", "name=pure,scorer=overlap", "--sweep-top-k", "3", *sweep) == 0
    report = json.loads((out / "results.json").read_text())["gate_sweep"]
    assert (report["signal"], report["scale"], report["top_k"]) == ("top_k_variance", "raw", 3)
    # variance >= 0 always: every query is confident and skipped; no raw BM25 top-3 varies by 1e6
    assert [p["skip_rate"] for p in report["points"]] == [1.0, 0.0]
    assert "top_k_variance on raw scores" in (out / "report.md").read_text()
