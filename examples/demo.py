"""rerank-prod demo: retrieve real passages with BM25, re-rank them, print before/after with timings.

Uses SciFact and the cross-encoder from ../shared when they are there (offline), otherwise a few
bundled passages and the standard hub model `cross-encoder/ms-marco-MiniLM-L-6-v2`.

    python examples/demo.py [--queries 3] [--depth 10] [--top-n 5]
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
import time
from pathlib import Path

from rerank_prod import Candidate

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


def load_passages() -> tuple[list[str], list[str], list[tuple[str, set[str]]]]:
    """(passage ids, passages, [(query, relevant passage ids)]): SciFact test claims with their
    judged-relevant abstracts when available (only a query's text is read)."""
    if not SCIFACT.exists():
        return [str(i) for i in range(len(BUNDLED_PASSAGES))], BUNDLED_PASSAGES, [(q, set()) for q in BUNDLED_QUERIES]
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = {q["_id"]: q["text"] for q in map(json.loads, handle)}
    relevant: dict[str, set[str]] = {}
    for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, _ = line.split("\t")
        relevant.setdefault(query_id, set()).add(doc_id)
    return ([d["_id"] for d in docs], [f"{d['title']}. {d['text']}" for d in docs],
            [(queries[q], docs_for_query) for q, docs_for_query in relevant.items()])


def bm25_retrieve(passages: list[str], queries: list[str], depth: int):
    """First stage: BM25 (bm25s, stemmer + stop words), returning (index, score) hits per query."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    index = bm25s.BM25()
    index.index(bm25s.tokenize(passages, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    hits, scores = index.retrieve(bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False),
                                  k=min(depth, len(passages)), show_progress=False, n_threads=1)
    return [list(zip(hits[row].tolist(), scores[row].tolist(), strict=True)) for row in range(len(queries))]


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
    from rerank_prod import (
        DEFAULT_CROSS_ENCODER,
        CrossEncoderScorer,
        InMemoryCache,
        Reranker,
        ScoreCache,
        WeightedFusion,
    )

    model = str(LOCAL_MODEL) if LOCAL_MODEL.exists() else DEFAULT_CROSS_ENCODER
    ids, passages, judged = load_passages()
    judged = judged[: args.queries]
    queries = [query for query, _ in judged]
    started = time.perf_counter()
    scorer = CrossEncoderScorer(model)
    print(f"model: {model} (loaded in {time.perf_counter() - started:.1f}s); {len(passages)} passages")

    # One pair-score cache shared by both: the hybrid pass reuses the pure pass's model scores.
    scores = ScoreCache(InMemoryCache())
    pure = Reranker(scorer, top_n=args.top_n, score_cache=scores)
    hybrid = Reranker(scorer, top_n=args.top_n, score_cache=scores,
                      fusion=WeightedFusion(rerank_weight=0.5, retrieval_weight=0.5))
    for (query, relevant), hits in zip(judged, bm25_retrieve(passages, queries, args.depth), strict=True):
        candidates = [Candidate(passages[i], id=ids[i], retrieval_score=score) for i, score in hits]
        print(f"\nquery: {query}")
        show(f"BM25 top-{args.top_n} of {len(candidates)}",
             [(f"bm25 {c.retrieval_score:6.2f}", c) for c in candidates[: args.top_n]], relevant)
        passes = (("cross-encoder", pure), ("hybrid 50/50 cross-encoder + BM25 (cached pair scores)", hybrid))
        for label, reranker in passes:
            result = reranker.rerank(query, candidates)
            show(f"{label}: {result.latency_s * 1000:.0f} ms, source={result.source}",
                 [(f"score {i.relevance_score:.3f} (was #{i.original_rank + 1:>2})", i.candidate) for i in result],
                 relevant)

    for label, reranker in (("cross-encoder", pure), ("hybrid", hybrid)):
        latency = reranker.metrics.snapshot()["latency_s"]
        print(f"\n{label} latency over {len(queries)} calls: p50 {latency['p50'] * 1000:.0f} ms, "
              f"p95 {latency['p95'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
