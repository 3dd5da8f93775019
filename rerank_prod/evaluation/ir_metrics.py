"""NDCG@k, MRR@k and Recall@k computed by trec_eval's own code (pytrec_eval), not by hand.

Rankings are evaluated in the order the system returned them: each document gets a score from
its position, so trec_eval's tie-breaking (by doc id) can never reorder a system's output. Every
judged query counts; one without candidates scores zero (what `trec_eval -c` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rerank_prod.evaluation.dataset import Qrels
from rerank_prod.validation import check_int

PerQuery = dict[str, dict[str, float]]
"""query id -> {"ndcg@10": ..., "mrr@10": ..., "recall@10": ...}."""

METRIC_FAMILIES = ("ndcg", "mrr", "recall")


def metric_names(ks: Sequence[int]) -> list[str]:
    return [f"{family}@{k}" for family in METRIC_FAMILIES for k in ks]


def _positional_run(rankings: Mapping[str, Sequence[str]], depth: int | None = None) -> dict[str, dict[str, float]]:
    return {
        qid: {docid: float(len(docs) - position) for position, docid in enumerate(docs[:depth])}
        for qid, docs in rankings.items()
    }


def evaluate(qrels: Qrels, rankings: Mapping[str, Sequence[str]], ks: Sequence[int]) -> PerQuery:
    """Per-query metrics for every judged query; `rankings` maps query id -> doc ids, best first.

    trec_eval's `recip_rank` has no cutoff, so MRR@k is `recip_rank` on the run cut at depth k.
    """
    import pytrec_eval

    if not ks:
        raise ValueError("cutoffs must not be empty")
    for k in ks:
        check_int("cutoffs", k)
    cutoffs = ",".join(str(k) for k in sorted(set(ks)))
    per_query: PerQuery = {qid: dict.fromkeys(metric_names(ks), 0.0) for qid in qrels}
    judged_run = {qid: docs for qid, docs in rankings.items() if qid in qrels}
    cut_evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{cutoffs}", f"recall.{cutoffs}"})
    for qid, values in cut_evaluator.evaluate(_positional_run(judged_run)).items():
        for k in ks:
            per_query[qid][f"ndcg@{k}"] = values[f"ndcg_cut_{k}"]
            per_query[qid][f"recall@{k}"] = values[f"recall_{k}"]
    rr_evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    for k in ks:
        for qid, values in rr_evaluator.evaluate(_positional_run(judged_run, k)).items():
            per_query[qid][f"mrr@{k}"] = values["recip_rank"]
    return per_query


def mean_metrics(per_query: PerQuery) -> dict[str, float]:
    """Mean over queries, as trec_eval's `all` line."""
    names = next(iter(per_query.values())).keys() if per_query else []
    return {name: float(np.mean([values[name] for values in per_query.values()])) for name in names}
