"""The LangChain compressor inside a real ContextualCompressionRetriever over a real embedder."""

from __future__ import annotations

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document

from langchain_rerank_prod import RerankProdCompressor
from rerank_prod import ConfidenceGate, Reranker, WeightedFusion
from tests.support import ConstantTimeScorer, langchain_scored_retriever

PASSAGES = [
    "Vitamin D supplementation did not reduce fracture risk in older adults.",
    "Aspirin use was associated with a lower risk of myocardial infarction.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Statins reduce LDL cholesterol and cardiovascular events.",
    "Low-dose aspirin lowers the rate of heart attacks in men over fifty.",
    "Photosynthesis converts light energy into chemical energy in plants.",
]
QUERY = "does aspirin prevent heart attacks"


@pytest.fixture(scope="module")
def retriever(embedder_path: str):
    return langchain_scored_retriever(embedder_path, PASSAGES, k=5)


@pytest.fixture()
def compressor(cross_encoder) -> RerankProdCompressor:
    return RerankProdCompressor(reranker=Reranker(cross_encoder, top_n=2, fusion=WeightedFusion()))


def _check(docs, retrieved) -> None:
    assert len(docs) == 2
    assert all("aspirin" in d.page_content.lower() for d in docs)
    by_id = {d.id: d for d in retrieved}
    for doc in docs:
        meta = doc.metadata
        assert set(meta) >= {"relevance_score", "rerank_score", "retrieval_score", "original_rank", "rerank_source"}
        assert meta["rerank_source"] == "model"
        assert type(meta["relevance_score"]) is float and type(meta["rerank_score"]) is float
        assert meta["retrieval_score"] == pytest.approx(by_id[doc.id].metadata["score"])
        assert retrieved[meta["original_rank"]].id == doc.id
    assert docs[0].metadata["relevance_score"] >= docs[1].metadata["relevance_score"]


def test_inside_contextual_compression_retriever(retriever, compressor) -> None:
    pipeline = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
    _check(pipeline.invoke(QUERY), retriever.invoke(QUERY))


async def test_ainvoke_uses_native_async(retriever, compressor) -> None:
    pipeline = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
    _check(await pipeline.ainvoke(QUERY), await retriever.ainvoke(QUERY))


def test_inputs_untouched_and_ids_preserved() -> None:
    docs = [
        Document(page_content="blue sky", id="a", metadata={"score": 0.9, "source": "x"}),
        Document(page_content="red fox", id="b", metadata={"score": 0.1}),
    ]
    compressor = RerankProdCompressor(reranker=Reranker(ConstantTimeScorer()))
    out = compressor.compress_documents(docs, "red fox")
    assert [d.id for d in out] == ["b", "a"]
    assert out[1].metadata["source"] == "x" and out[1].metadata["retrieval_score"] == 0.9
    assert docs[0].metadata == {"score": 0.9, "source": "x"}


def test_gate_skip_is_visible_in_metadata() -> None:
    docs = [
        Document(page_content="blue sky", metadata={"relevance": 0.95}),
        Document(page_content="red fox", metadata={"relevance": 0.2}),
        Document(page_content="red sky", metadata={"relevance": 0.1}),
    ]
    compressor = RerankProdCompressor(
        reranker=Reranker(ConstantTimeScorer(), gate=ConfidenceGate()), retrieval_score_key="relevance"
    )
    out = compressor.compress_documents(docs, "red fox")
    assert [d.page_content for d in out] == ["blue sky", "red fox", "red sky"]
    assert out[0].metadata["rerank_source"].startswith("skipped:gate")


def test_bad_documents_raise() -> None:
    compressor = RerankProdCompressor(reranker=Reranker(ConstantTimeScorer()))
    with pytest.raises(TypeError, match="document 0"):
        compressor.compress_documents(["plain string"], "q")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="retrieval_score"):
        compressor.compress_documents([Document(page_content="x", metadata={"score": "high"})], "q")
    assert compressor.compress_documents([], "q") == []


def test_from_cross_encoder(cross_encoder_path: str) -> None:
    compressor = RerankProdCompressor.from_cross_encoder(cross_encoder_path, top_n=1)
    out = compressor.compress_documents([Document(page_content=p) for p in PASSAGES], QUERY)
    assert len(out) == 1 and "aspirin" in out[0].page_content.lower()
