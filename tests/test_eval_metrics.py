"""Metric plumbing: hand-checked tiny cases, and agreement with pytrec_eval's own numbers."""

from __future__ import annotations

import math

import pytest

pytrec_eval = pytest.importorskip("pytrec_eval")

from rerank_prod.evaluation.dataset import load_beir  # noqa: E402
from rerank_prod.evaluation.first_stage import bm25_rankings  # noqa: E402
from rerank_prod.evaluation.ir_metrics import evaluate, mean_metrics  # noqa: E402
from rerank_prod.evaluation.runner import docids  # noqa: E402

QRELS = {"q": {"a": 1, "c": 2}}


def test_hand_checked_graded_case() -> None:
    # ranking b, a, c: gains 0, 1, 2 at ranks 1..3; ideal order c (2), a (1)
    dcg3 = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    values = evaluate(QRELS, {"q": ["b", "a", "c"]}, [1, 2, 3])["q"]
    assert values["ndcg@3"] == pytest.approx(dcg3 / idcg)
    assert values["ndcg@2"] == pytest.approx((1 / math.log2(3)) / idcg)
    assert values["ndcg@1"] == 0.0
    assert values["mrr@1"] == 0.0
    assert values["mrr@2"] == pytest.approx(0.5)
    assert values["recall@2"] == pytest.approx(0.5)
    assert values["recall@3"] == pytest.approx(1.0)


def test_order_is_the_systems_not_trec_evals_tie_breaking() -> None:
    # trec_eval sorts by score and breaks ties by doc id; positions must win instead
    first = evaluate(QRELS, {"q": ["c", "b"]}, [1])["q"]["ndcg@1"]
    second = evaluate(QRELS, {"q": ["b", "c"]}, [1])["q"]["ndcg@1"]
    assert (first, second) == (1.0, 0.0)


def test_judged_query_without_candidates_counts_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    per_query = evaluate(qrels, {"q1": ["a"], "q2": [], "unjudged": ["x"]}, [10])
    assert set(per_query) == {"q1", "q2"}
    assert mean_metrics(per_query)["ndcg@10"] == pytest.approx(0.5)


def test_bad_cutoffs_are_rejected() -> None:
    with pytest.raises(ValueError, match="cutoffs"):
        evaluate(QRELS, {"q": ["a"]}, [0])


def test_scifact_bm25_agrees_with_pytrec_eval_and_the_reference(scifact_dir) -> None:
    dataset = load_beir(scifact_dir, "test")
    rankings = bm25_rankings(dataset, dataset.query_ids, 100)
    ours = mean_metrics(evaluate(dataset.qrels, docids(rankings), [10, 100]))
    raw_run = {qid: dict(ranking) for qid, ranking in rankings.items()}
    theirs = pytrec_eval.RelevanceEvaluator(dataset.qrels, {"ndcg_cut.10", "recall.100", "recip_rank"}).evaluate(
        raw_run
    )
    for ours_name, their_name in (
        ("ndcg@10", "ndcg_cut_10"),
        ("recall@100", "recall_100"),
        ("mrr@100", "recip_rank"),
    ):
        assert ours[ours_name] == pytest.approx(sum(v[their_name] for v in theirs.values()) / len(theirs), abs=1e-9)
    # the shared models README: bm25s k1=0.9 b=0.4 gives NDCG@10 0.6762, Recall@100 0.9127
    assert ours["ndcg@10"] == pytest.approx(0.6762, abs=5e-4)
    assert ours["recall@100"] == pytest.approx(0.9127, abs=5e-4)
