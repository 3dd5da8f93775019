"""Both framework adapters end to end with remote scorers (real clients, loopback stand-in servers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import TextNode

from langchain_rerank_prod import RerankProdCompressor
from llamaindex_rerank_prod import RerankProdPostprocessor
from loopback.standin_servers import StandInServer, overlap, running, status
from rerank_prod import CohereScorer, LLMListwiseScorer, Reranker, RetryPolicy, TEIScorer
from tests.support import langchain_scored_retriever, llamaindex_embedding
from tests.test_langchain_adapter import PASSAGES, QUERY
from tests.test_llamaindex_adapter import EventCollector

FAST_RETRY = RetryPolicy(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02)
ASPIRIN_FIRST = [
    "Low-dose aspirin lowers the rate of heart attacks in men over fifty.",
    "Aspirin use was associated with a lower risk of myocardial infarction.",
]


@pytest.fixture
def tei() -> Iterator[StandInServer]:
    with running("tei") as server:
        yield server


@pytest.fixture
def cohere_server() -> Iterator[StandInServer]:
    with running("cohere", api_key="co-key") as server:
        yield server


@pytest.fixture
def openai_server() -> Iterator[StandInServer]:
    with running("openai", api_key="sk-key") as server:
        yield server


# --- LangChain ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retriever(embedder_path: str):
    return langchain_scored_retriever(embedder_path, PASSAGES, k=5)


def tei_pipeline(retriever, tei: StandInServer) -> ContextualCompressionRetriever:
    reranker = Reranker(TEIScorer(tei.url, retry=FAST_RETRY), top_n=2, timeout_s=3.0)
    return ContextualCompressionRetriever(
        base_compressor=RerankProdCompressor(reranker=reranker), base_retriever=retriever
    )


def test_langchain_with_tei(retriever, tei: StandInServer) -> None:
    docs = tei_pipeline(retriever, tei).invoke(QUERY)
    assert [doc.page_content for doc in docs] == ASPIRIN_FIRST
    assert [doc.metadata["rerank_score"] for doc in docs] == [overlap(QUERY, text) for text in ASPIRIN_FIRST]
    assert all(doc.metadata["rerank_source"] == "model" and doc.id.startswith("doc-") for doc in docs)
    assert len(tei.requests[0].body["texts"]) == 5


async def test_langchain_async_with_tei_retries_then_degrades(retriever, tei: StandInServer) -> None:
    tei.fail_next("/rerank", status(503))
    docs = await tei_pipeline(retriever, tei).ainvoke(QUERY)
    assert [doc.page_content for doc in docs] == ASPIRIN_FIRST  # retried past one 503

    tei.fail_next("/rerank", status(500), status(500))
    retrieved = await retriever.ainvoke(QUERY)
    docs = await tei_pipeline(retriever, tei).ainvoke(QUERY)
    assert [doc.id for doc in docs] == [doc.id for doc in retrieved[:2]]  # retriever order, no exception
    assert docs[0].metadata["rerank_source"] == "fallback:retriever order: error BackendHTTPError"


# --- LlamaIndex ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index(embedder_path: str) -> VectorStoreIndex:
    nodes = [TextNode(text=text, id_=f"node-{i}") for i, text in enumerate(PASSAGES)]
    return VectorStoreIndex(nodes, embed_model=llamaindex_embedding(embedder_path))


@pytest.fixture(autouse=True)
def no_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Settings, "_llm", MockLLM())  # response_mode="no_text" still resolves Settings.llm


def query_engine(index: VectorStoreIndex, reranker: Reranker) -> RetrieverQueryEngine:
    return RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=5),
        node_postprocessors=[RerankProdPostprocessor(reranker=reranker, top_n=2)],
        response_mode="no_text",
    )


def test_llamaindex_with_cohere(index: VectorStoreIndex, cohere_server: StandInServer) -> None:
    handler = EventCollector(events=[])
    get_dispatcher().add_event_handler(handler)
    try:
        scorer = CohereScorer(api_key="co-key", base_url=cohere_server.url, retry=FAST_RETRY)
        response = query_engine(index, Reranker(scorer, timeout_s=3.0)).query(QUERY)
    finally:
        get_dispatcher().event_handlers.remove(handler)
    assert [node.node.get_content() for node in response.source_nodes] == ASPIRIN_FIRST
    assert [node.score for node in response.source_nodes] == [overlap(QUERY, text) for text in ASPIRIN_FIRST]
    assert all(node.node.metadata["rerank_source"] == "model" for node in response.source_nodes)
    starts = [event for event in handler.events if isinstance(event, ReRankStartEvent)]
    assert len(starts) == 1 and starts[0].model_name == "rerank-v3.5"


async def test_llamaindex_async_with_cohere_falls_back_when_rate_limited(
    index: VectorStoreIndex, cohere_server: StandInServer
) -> None:
    cohere_server.fail_next("/v2/rerank", status(429, retry_after=30))  # longer than the budget: no retry
    scorer = CohereScorer(api_key="co-key", base_url=cohere_server.url, retry=FAST_RETRY)
    response = await query_engine(index, Reranker(scorer, timeout_s=2.0)).aquery(QUERY)
    assert len(cohere_server.requests) == 1
    sources = {node.node.metadata["rerank_source"] for node in response.source_nodes}
    assert sources == {"fallback:retriever order: error TooManyRequestsError"}


async def test_llamaindex_async_with_llm_listwise(index: VectorStoreIndex, openai_server: StandInServer) -> None:
    scorer = LLMListwiseScorer(
        "gpt-4o-mini", api_key="sk-key", base_url=f"{openai_server.url}/v1", window_size=3, step=2, retry=FAST_RETRY
    )
    response = await query_engine(index, Reranker(scorer, timeout_s=5.0)).aquery(QUERY)
    assert [node.node.get_content() for node in response.source_nodes] == ASPIRIN_FIRST
    assert len(openai_server.requests) == 2  # 5 candidates: windows (2, 5) then (0, 3)
