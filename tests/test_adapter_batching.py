"""Many queries through the frameworks' own batch entry points share the engine's forward passes.

LangChain's `ContextualCompressionRetriever.batch` / `abatch` run one compressor call per query,
concurrently (a thread pool, `asyncio.gather`); LlamaIndex has no batch call, and concurrent
`apostprocess_nodes` is how its users fan out. The engine puts concurrent calls' pairs in the same
forward pass, so these get what `Reranker.rerank_many` gets without a separate API.
"""

from __future__ import annotations

import asyncio

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from langchain_rerank_prod import RerankProdCompressor
from llamaindex_rerank_prod import RerankProdPostprocessor
from rerank_prod import CrossEncoderScorer, Reranker
from tests.test_langchain_adapter import PASSAGES

QUERIES = [
    "does aspirin prevent heart attacks",
    "when was the Eiffel Tower built",
    "what do statins do",
    "how do plants make energy",
    "vitamin D and fractures",
    "aspirin and myocardial infarction",
    "LDL cholesterol drugs",
    "world's fair 1889",
]


class AllPassages(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager) -> list[Document]:  # type: ignore[no-untyped-def]
        return [Document(page_content=text, id=f"doc-{i}") for i, text in enumerate(PASSAGES)]


@pytest.fixture()
def scorer(cross_encoder_path: str) -> CrossEncoderScorer:
    scorer = CrossEncoderScorer(cross_encoder_path, precision="fp32")  # bf16 near-ties may swap with the padding
    scorer.score("warm up", PASSAGES)  # the first pass is a small calibration batch
    return scorer


def _passes_and_pairs(scorer: CrossEncoderScorer, before: dict) -> tuple[int, int]:
    after = scorer.engine.snapshot()
    return int(after["batches"] or 0) - int(before["batches"] or 0), int(after["pairs"] or 0) - int(
        before["pairs"] or 0
    )


def _expected(scorer: CrossEncoderScorer) -> dict[str, list[str]]:
    reranker = Reranker(scorer, top_n=3)
    return {query: [item.candidate.text for item in reranker.rerank(query, PASSAGES)] for query in QUERIES}


@pytest.mark.parametrize("use_async", [False, True])
def test_langchain_batch_shares_forward_passes(scorer: CrossEncoderScorer, use_async: bool) -> None:
    expected = _expected(scorer)
    retriever = ContextualCompressionRetriever(
        base_compressor=RerankProdCompressor(reranker=Reranker(scorer, top_n=3)), base_retriever=AllPassages()
    )
    before = scorer.engine.snapshot()
    config = {"max_concurrency": len(QUERIES)}
    answers = asyncio.run(retriever.abatch(QUERIES, config)) if use_async else retriever.batch(QUERIES, config)
    passes, pairs = _passes_and_pairs(scorer, before)
    assert [[d.page_content for d in docs] for docs in answers] == [expected[q] for q in QUERIES]
    assert all(d.metadata["rerank_source"] == "model" for docs in answers for d in docs)
    assert pairs == len(QUERIES) * len(PASSAGES)
    assert passes < len(QUERIES), f"{passes} forward passes for {len(QUERIES)} queries: none shared"


def test_llamaindex_concurrent_postprocessing_shares_forward_passes(scorer: CrossEncoderScorer) -> None:
    expected = _expected(scorer)
    postprocessor = RerankProdPostprocessor(reranker=Reranker(scorer, top_n=3))
    nodes = [NodeWithScore(node=TextNode(text=text, id_=f"n{i}"), score=None) for i, text in enumerate(PASSAGES)]

    async def everything() -> list[list[NodeWithScore]]:
        return await asyncio.gather(
            *(postprocessor.apostprocess_nodes(nodes, query_bundle=QueryBundle(query)) for query in QUERIES)
        )

    before = scorer.engine.snapshot()
    answers = asyncio.run(everything())
    passes, pairs = _passes_and_pairs(scorer, before)
    assert [[n.node.get_content() for n in found] for found in answers] == [expected[q] for q in QUERIES]
    assert pairs == len(QUERIES) * len(PASSAGES)
    assert passes < len(QUERIES), f"{passes} forward passes for {len(QUERIES)} queries: none shared"
