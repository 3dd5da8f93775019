"""rerank-prod demo: retrieve real passages with BM25, re-rank them, print before/after with timings.

Uses SciFact and the cross-encoder from ../shared when they are there (offline), otherwise a few
bundled passages and the standard hub model `cross-encoder/ms-marco-MiniLM-L-6-v2`.

    python examples/demo.py [--queries 3] [--depth 10] [--top-n 5]
"""

from __future__ import annotations

import argparse
import os
import textwrap
import time
from pathlib import Path

from rerank_prod import Candidate
from rerank_prod.evaluation.dataset import BeirDataset, Document, load_beir
from rerank_prod.evaluation.first_stage import bm25_rankings, candidate_sets

SHARED = Path(os.environ.get("RERANK_PROD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LOCAL_MODEL = SHARED / "models" / "minilm-l6-scifact-ce"
SCIFACT = SHARED / "datasets" / "scifact"

BUNDLED_PASSAGES = [
    "Aspirin use was associated with a lower risk of myocardial infarction in a randomized trial of physicians.",
    "Vitamin D supplementation did not reduce the incidence of fractures among community-dwelling adults.",
    "Statin therapy reduces LDL cholesterol and major cardiovascular events in high-risk patients.",
    "Low-dose aspirin increases the risk of gastrointestinal bleeding in older adults.",
    "Regular physical activity lowers blood pressure and the risk of coronary heart disease.",
    "Heart attack risk was not reduced by aspirin in healthy elderly people in the ASPREE trial.",
]
BUNDLED_QUERIES = ["Aspirin prevents heart attacks.", "Exercise lowers cardiovascular risk."]


def load_dataset() -> BeirDataset:
    """SciFact's test claims when available (only a query's text is read), else the bundled passages."""
    if SCIFACT.exists():
        return load_beir(SCIFACT, "test")
    corpus = {str(i): Document(title="", text=text) for i, text in enumerate(BUNDLED_PASSAGES)}
    queries = {f"q{i}": text for i, text in enumerate(BUNDLED_QUERIES)}
    return BeirDataset(Path("bundled"), "none", corpus, queries, {qid: {} for qid in queries})


def show(title: str, rows: list[tuple[str, Candidate]], relevant: set[str], width: int = 96) -> None:
    """One ranking; '*' marks passages judged relevant for the query."""
    print(f"  {title}")
    for rank, (scores, candidate) in enumerate(rows, 1):
        mark = "*" if candidate.id in relevant else " "
        print(f"   {rank:>2}.{mark} {scores}  {textwrap.shorten(candidate.text, width)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=3, help="how many queries to run")
    parser.add_argument("--depth", type=int, default=20, help="BM25 candidates per query")
    parser.add_argument("--top-n", type=int, default=5, help="results to keep after re-ranking")
    args = parser.parse_args()

    if LOCAL_MODEL.exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rerank_prod import CrossEncoderScorer, InMemoryCache, Reranker, ScoreCache, WeightedFusion
    from rerank_prod.scoring import DEFAULT_CROSS_ENCODER

    model = str(LOCAL_MODEL) if LOCAL_MODEL.exists() else DEFAULT_CROSS_ENCODER
    dataset = load_dataset()
    query_ids = dataset.query_ids[: args.queries]
    candidates = candidate_sets(dataset, bm25_rankings(dataset, query_ids, args.depth))
    started = time.perf_counter()
    scorer = CrossEncoderScorer(model)
    print(f"model: {model} (loaded in {time.perf_counter() - started:.1f}s); {len(dataset.corpus)} passages")

    # One pair-score cache shared by both: the hybrid pass reuses the pure pass's model scores.
    scores = ScoreCache(InMemoryCache())
    pure = Reranker(scorer, top_n=args.top_n, score_cache=scores)
    hybrid = Reranker(
        scorer, top_n=args.top_n, score_cache=scores, fusion=WeightedFusion(rerank_weight=0.5, retrieval_weight=0.5)
    )
    for qid in query_ids:
        query, relevant = dataset.queries[qid], set(dataset.qrels[qid])
        print(f"\nquery: {query}")
        show(
            f"BM25 top-{args.top_n} of {len(candidates[qid])}",
            [(f"bm25 {c.retrieval_score:6.2f}", c) for c in candidates[qid][: args.top_n]],
            relevant,
        )
        passes = (("cross-encoder", pure), ("hybrid 50/50 cross-encoder + BM25 (cached pair scores)", hybrid))
        for label, reranker in passes:
            result = reranker.rerank(query, candidates[qid])
            show(
                f"{label}: {result.latency_s * 1000:.0f} ms, source={result.source}",
                [(f"score {i.relevance_score:.3f} (was #{i.original_rank + 1:>2})", i.candidate) for i in result],
                relevant,
            )

    for label, reranker in (("cross-encoder", pure), ("hybrid", hybrid)):
        latency = reranker.metrics.snapshot()["latency_s"]
        print(
            f"\n{label} latency over {len(query_ids)} calls: p50 {latency['p50'] * 1000:.0f} ms, "
            f"p95 {latency['p95'] * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
