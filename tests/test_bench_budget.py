"""`rerank-prod bench --load` and `--anytime` as smoke runs on a SciFact slice with the real cross-encoder."""

from __future__ import annotations

import json

import pytest

from rerank_prod.cli import main

pytestmark = [pytest.mark.needs_models, pytest.mark.slow]


@pytest.mark.parametrize(("mode", "isolation"), [("threads", "thread"), ("async", "auto"), ("threads", "process")])
def test_load_smoke(scifact_dir, cross_encoder_path, tmp_path, capsys, mode: str, isolation: str) -> None:
    flags = (
        f"--sizes 5,10 --queries 2 --load {mode} --callers 4 --seconds 1 --budget 0.3 --words 25 --no-progress "
        f"--isolation {isolation}"
    )
    code = main(["bench", str(scifact_dir), "--model", cross_encoder_path, "--out", str(tmp_path), *flags.split()])
    assert code == 0
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["mode"] == mode and report["callers"] == 4 and report["calls"] > 0
    chosen = "thread" if isolation == "thread" else "process"  # auto: a model process on Linux
    assert report["isolation"] == chosen
    assert report["candidates"] == 5  # the smallest of --sizes: calls that fit their budget alone
    rates = [report[key] for key in ("model_rate", "partial_rate", "fallback_rate")]
    assert sum(rates) == pytest.approx(1.0) and 0 <= report["shed_rate"] <= report["fallback_rate"]
    assert report["sequential_calls_per_s"] > 0 and report["samples"]
    answered = report["model_rate"] + report["partial_rate"]
    if answered:  # the answered calls' scored pairs: each at least one, at most all of its candidates
        assert 1 / 5 <= report["scored_share"] <= 1.0 and report["scored_pairs_vs_sequential"] > 0
    else:
        assert report["scored_share"] is None and report["scored_pairs_vs_sequential"] == 0
    assert (report["loop_lag_ms"] is not None) == (mode == "async")
    assert report["engine"]["queued_requests"] == 0
    printed = capsys.readouterr().out
    assert "goodput/s" in printed and "scored share" in printed and "RSS MiB" in printed
    assert ("a process of its own" in printed) == (chosen == "process")


def test_anytime_smoke(scifact_dir, cross_encoder_path, tmp_path, capsys) -> None:
    flags = "--sizes 10 --queries 2 --anytime 0.2 --words 0 --no-progress"
    code = main(["bench", str(scifact_dir), "--model", cross_encoder_path, "--out", str(tmp_path), *flags.split()])
    assert code == 0
    rows = json.loads((tmp_path / "anytime.json").read_text())["rows"]
    assert [row["budget_s"] for row in rows] == ["retriever order", None, 0.2]
    assert rows[1]["scored_fraction"] == 1.0 and all(0 <= row["ndcg@10"] <= 1 for row in rows)
    assert "NDCG@10" in capsys.readouterr().out
