"""Multi-hop and query-expansion retrievers in both frameworks, end to end: the real shared
cross-encoder, real vector-store retrievers over a real embedder, a LlamaIndex query engine, the
LLM writer against the chat-completions stand-in, and a hanging base retriever under a budget."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, TextNode

from langchain_rerank_prod import RerankProdMultiHopRetriever as LangChainMultiHop
from langchain_rerank_prod import RerankProdQueryExpansionRetriever as LangChainExpansion
from llamaindex_rerank_prod import RerankProdMultiHopRetriever as LlamaMultiHop
from llamaindex_rerank_prod import RerankProdQueryExpansionRetriever as LlamaExpansion
from loopback.standin_servers import running
from rerank_prod import RankedCandidate, Reranker
from tests.support import langchain_embeddings, llamaindex_embedding

PASSAGES = [
    "Aspirin lowers the risk of heart attacks in older men.",
    "A heart attack is a myocardial infarction caused by a blocked coronary artery.",
    "Coronary artery disease is driven by atherosclerotic plaque.",
    "Statins lower LDL cholesterol and cardiovascular events.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Photosynthesis converts light energy into chemical energy in plants.",
]
QUERY = "does aspirin prevent heart attacks"
FOLLOW_UP = "coronary artery plaque atherosclerosis"


def follow_up(query: str, top: Sequence[RankedCandidate]) -> str:
    assert top and query == QUERY
    return FOLLOW_UP


def expander(query: str) -> list[str]:
    return ["myocardial infarction prevention", "coronary artery disease"]


@pytest.fixture(scope="module")
def store(embedder_path: str) -> InMemoryVectorStore:
    vectors = InMemoryVectorStore(langchain_embeddings(embedder_path))
    vectors.add_documents(
        [Document(page_content=text, id=f"doc-{i}", metadata={"n": i}) for i, text in enumerate(PASSAGES)]
    )
    return vectors


@pytest.fixture(scope="module")
def index(embedder_path: str) -> VectorStoreIndex:
    nodes = [TextNode(text=text, id_=f"node-{i}") for i, text in enumerate(PASSAGES)]
    return VectorStoreIndex(nodes, embed_model=llamaindex_embedding(embedder_path))


def _check_langchain(docs: list[Document], kind: str) -> None:
    assert docs and len({d.id for d in docs}) == len(docs)
    assert all(d.id is not None and d.id.startswith("doc-") and d.page_content == PASSAGES[int(d.id[4:])] for d in docs)
    assert all(d.metadata["n"] == int(str(d.id)[4:]) for d in docs)  # the original metadata kept
    scores = [d.metadata["relevance_score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and all(type(s) is float for s in scores)
    assert all(d.metadata["rerank_source"] == "model" for d in docs)
    if kind == "multihop":
        assert {d.metadata["multihop"] for d in docs} == {"2/2 hops"}
        assert {d.metadata["hop"] for d in docs} == {1, 2}
    else:
        assert {d.metadata["expansion"] for d in docs} == {"2 variants"}
        assert any(d.metadata["retrieved_by"] != [0] for d in docs)


def test_langchain_multihop_sync_and_async(store: InMemoryVectorStore, cross_encoder) -> None:
    retriever = LangChainMultiHop(
        base_retriever=store.as_retriever(search_kwargs={"k": 2}),
        reranker=Reranker(cross_encoder),
        follow_up=follow_up,
        timeout_s=30.0,
    )
    docs = retriever.invoke(QUERY)
    _check_langchain(docs, "multihop")
    assert docs[0].id == "doc-0" and docs[0].metadata["hop"] == 1  # aspirin, found and won in hop 1
    assert "doc-2" in {d.id for d in docs}  # only the follow-up query found the plaque passage


async def test_langchain_multihop_async(store: InMemoryVectorStore, cross_encoder) -> None:
    retriever = LangChainMultiHop(
        base_retriever=store.as_retriever(search_kwargs={"k": 2}), reranker=Reranker(cross_encoder), follow_up=follow_up
    )
    _check_langchain(await retriever.ainvoke(QUERY), "multihop")


async def test_langchain_expansion_with_the_llm_writer(store: InMemoryVectorStore, cross_encoder) -> None:
    with running("openai") as llm:
        retriever = LangChainExpansion(
            base_retriever=store.as_retriever(search_kwargs={"k": 3}),
            reranker=Reranker(cross_encoder),
            llm_model="stand-in",
            llm_base_url=f"{llm.url}/v1",
            variants=2,
            top_n=3,
        )
        docs = await retriever.ainvoke(QUERY)
    assert len(docs) == 3 and {d.metadata["expansion"] for d in docs} == {"2 variants"}
    sync_docs = LangChainExpansion(
        base_retriever=store.as_retriever(search_kwargs={"k": 2}), reranker=Reranker(cross_encoder), expander=expander
    ).invoke(QUERY)
    _check_langchain(sync_docs, "expansion")


def test_langchain_settings_are_checked_at_construction(store: InMemoryVectorStore, cross_encoder) -> None:
    base = store.as_retriever()
    for bad, match in [
        ({"hops": 0}, "hops"),
        ({"hop_weights": [1.0]}, "one weight per hop"),
        ({"hop_weights": [1.0, -1.0]}, "weights"),
        ({"hopz": 2}, "hopz"),
        ({"follow_up": None}, "follow_up"),
        ({"llm_model": "gpt-4o-mini"}, "not both"),
    ]:
        with pytest.raises(ValueError, match=match):
            LangChainMultiHop(
                **{"base_retriever": base, "reranker": Reranker(cross_encoder), "follow_up": follow_up, **bad}
            )
    with pytest.raises(ValueError, match="variants"):
        LangChainExpansion(base_retriever=base, reranker=Reranker(cross_encoder), expander=expander, variants=0)


def test_langchain_a_hanging_base_retriever_costs_the_budget_not_more(cross_encoder) -> None:
    class HangsOnFollowUps(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            if query != QUERY:
                time.sleep(5.0)
            return [Document(page_content=text, id=f"doc-{i}") for i, text in enumerate(PASSAGES[:3])]

    retriever = LangChainMultiHop(
        base_retriever=HangsOnFollowUps(), reranker=Reranker(cross_encoder), follow_up=follow_up, timeout_s=2.0
    )
    started = time.monotonic()
    docs = retriever.invoke(QUERY)
    assert time.monotonic() - started < 2.0 + 0.5
    assert len(docs) == 3 and docs[0].metadata["multihop"].startswith("1/2 hops; stopped: retriever (hop 2): timeout")


def test_llamaindex_multihop_in_a_query_engine(index: VectorStoreIndex, cross_encoder) -> None:
    Settings.llm = MockLLM()
    retriever = LlamaMultiHop(
        index.as_retriever(similarity_top_k=2), follow_up=follow_up, reranker=Reranker(cross_encoder), timeout_s=30.0
    )
    response = RetrieverQueryEngine.from_args(retriever, llm=MockLLM()).query(QUERY)
    nodes = response.source_nodes
    ids = [n.node.node_id for n in nodes]
    assert ids[0] == "node-0" and "node-2" in ids and len(ids) == len(set(ids))
    assert [n.score for n in nodes] == [n.node.metadata["relevance_score"] for n in nodes]
    assert {n.node.metadata["hop"] for n in nodes} == {1, 2} and nodes[0].node.metadata["multihop"] == "2/2 hops"
    assert "multihop" not in nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)  # never in a prompt
    assert index.docstore.get_node("node-0").metadata == {}  # the index's nodes untouched


async def test_llamaindex_expansion_async_and_sync(index: VectorStoreIndex, cross_encoder) -> None:
    retriever = LlamaExpansion(
        index.as_retriever(similarity_top_k=3), expander=expander, reranker=Reranker(cross_encoder), top_n=4
    )
    nodes = await retriever.aretrieve(QUERY)
    assert len(nodes) == 4 and {n.node.metadata["expansion"] for n in nodes} == {"2 variants"}
    assert [n.node.node_id for n in nodes] == [n.node.node_id for n in retriever.retrieve(QUERY)]


def test_llamaindex_settings_are_checked(index: VectorStoreIndex, cross_encoder, cross_encoder_path: str) -> None:
    base = index.as_retriever()
    with pytest.raises(ValueError, match="hops"):
        LlamaMultiHop(base, follow_up=follow_up, hops=0, reranker=Reranker(cross_encoder))
    with pytest.raises(ValueError, match="one weight per hop"):
        LlamaMultiHop(base, follow_up=follow_up, hop_weights=[1.0, 0.5, 0.2], reranker=Reranker(cross_encoder))
    with pytest.raises(ValueError, match="bogus"):
        LlamaExpansion(base, expander=expander, bogus=1, reranker=Reranker(cross_encoder))
    with pytest.raises(ValueError, match="expander"):
        LlamaExpansion(base, reranker=Reranker(cross_encoder))
    with pytest.raises(TypeError, match="retriever"):
        LlamaExpansion("not a retriever", expander=expander, reranker=Reranker(cross_encoder))  # type: ignore[arg-type]
    built = LlamaMultiHop(base, follow_up=follow_up, model=cross_encoder_path, top_n=1, timeout_s=30.0)  # settings path
    assert len(built.retrieve(QUERY)) == 1
