"""Multi-hop and query-expansion configurations of `rerank-prod eval`.

The retriever is BM25 over the dataset's corpus (`first_stage.BM25Retriever`, the eval's own first
stage settings); the first hop / the original query's list is the eval's candidate set. Tables:

    "multihop": {"generator": "key-terms" | "llm", "hops": 2, "weights": [1.0, 0.5], "decay": 0.5,
                 "context_k": 3, "top_k": <per-hop BM25 depth, default the eval's top-k>,
                 "timeout_s": null, "terms": 8, "model": ..., "base_url": ..., "api_key": ...}
    "expansion": {"generator": "prf" | "llm", "variants": 3, "top_k": ..., "timeout_s": null,
                  "terms": 8, "feedback_docs": 1, "model": ..., "base_url": ..., "api_key": ...}

Generators: "llm" is an `LLMQueryWriter` on the configured OpenAI-compatible endpoint. The built-ins
need no LLM and are deterministic: "key-terms" (multi-hop) makes the follow-up query from the best
result's tf-idf key terms (`KeyTermsFollowUp`); "prf" (expansion) adds the top BM25 passage's key terms
to the query (`PseudoRelevanceExpander`, RM3-like pseudo-relevance feedback). Both are baselines, not
a language model's rewrites.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rerank_prod.evaluation.dataset import EvalInputError
from rerank_prod.evaluation.first_stage import BM25Retriever
from rerank_prod.pipeline import Reranker
from rerank_prod.retrieval import (
    KeyTermsFollowUp,
    LLMQueryWriter,
    MultiHopReranker,
    PseudoRelevanceExpander,
    QueryExpansionReranker,
    TermStatistics,
)

Pipeline = Reranker | MultiHopReranker | QueryExpansionReranker
CorpusRetriever = Callable[[int], tuple[BM25Retriever, TermStatistics]]
"""top_k -> (BM25 over the corpus with that depth, the corpus' term statistics); built on first use."""

_LLM_OPTIONS = ("model", "base_url", "api_key")


def _writer(options: dict[str, Any], what: str) -> LLMQueryWriter:
    settings = {key: options.pop(key) for key in _LLM_OPTIONS if key in options}
    if "model" not in settings:
        raise EvalInputError(f"{what} generator 'llm' needs model (and base_url for a local server)")
    try:
        return LLMQueryWriter(settings.pop("model"), **settings)
    except (TypeError, ValueError) as exc:
        raise EvalInputError(f"{what} llm: {exc}") from None


def build_pipeline(spec: Mapping[str, Any], reranker: Reranker, corpus: CorpusRetriever | None) -> Pipeline:
    """The configuration's pipeline: the reranker itself, or multi-hop / expansion around it."""
    tables = [table for table in ("multihop", "expansion") if spec.get(table)]
    if not tables:
        return reranker
    if len(tables) > 1:
        raise EvalInputError(f"configuration {spec['name']!r}: multihop and expansion cannot be combined")
    if corpus is None:
        raise EvalInputError(f"configuration {spec['name']!r}: {tables[0]} needs the corpus (not available here)")
    table = tables[0]
    options = {} if spec[table] is True else dict(spec[table])
    generator = options.pop("generator", "key-terms" if table == "multihop" else "prf")
    depth = options.pop("top_k", None)
    terms = options.pop("terms", 8)
    try:
        retriever, stats = corpus(depth)
        if table == "multihop":
            if generator == "key-terms":
                follow_up: Any = KeyTermsFollowUp(stats, terms=terms)
            elif generator == "llm":
                follow_up = _writer(options, table)
            else:
                raise EvalInputError(f"multihop generator must be 'key-terms' or 'llm', got {generator!r}")
            return MultiHopReranker(reranker, retriever, follow_up, **options)
        if generator == "prf":
            feedback = options.pop("feedback_docs", 1)
            expander: Any = PseudoRelevanceExpander(retriever, stats, terms=terms, feedback_docs=feedback)
        elif generator == "llm":
            expander = _writer(options, table)
        else:
            raise EvalInputError(f"expansion generator must be 'prf' or 'llm', got {generator!r}")
        return QueryExpansionReranker(reranker, retriever, expander, **options)
    except (TypeError, ValueError) as exc:
        raise EvalInputError(f"configuration {spec['name']!r}: {table}: {exc}") from None


def corpus_retriever(dataset: Any, default_top_k: int, *, k1: float = 0.9, b: float = 0.4) -> CorpusRetriever:
    """A `CorpusRetriever` over `dataset` that builds the BM25 index and term statistics once."""
    built: dict[str, Any] = {}

    def get(top_k: int | None) -> tuple[BM25Retriever, TermStatistics]:
        if "index" not in built:
            built["index"] = BM25Retriever(dataset, default_top_k, k1=k1, b=b)
            built["stats"] = TermStatistics.from_texts(doc.passage for doc in dataset.corpus.values())
        index: BM25Retriever = built["index"]
        if top_k is not None and top_k != index.top_k:
            index = _with_depth(index, top_k)
        return index, built["stats"]

    return get


def _with_depth(index: BM25Retriever, top_k: int) -> BM25Retriever:
    import copy

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    deeper = copy.copy(index)  # shares the built index
    deeper.top_k = top_k
    return deeper
