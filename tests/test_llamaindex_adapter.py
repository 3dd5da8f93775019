"""The LlamaIndex postprocessor in a real VectorStoreIndex query engine with a real embedder."""

from __future__ import annotations

import pytest
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from llamaindex_rerank_prod import RerankProdPostprocessor
from rerank_prod import Reranker, WeightedFusion
from tests.support import ConstantTimeScorer, llamaindex_embedding
from tests.test_langchain_adapter import PASSAGES, QUERY


class EventCollector(BaseEventHandler):
    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "EventCollector"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def index(embedder_path: str) -> VectorStoreIndex:
    nodes = [TextNode(text=text, id_=f"node-{i}", metadata={"source": f"s{i}"}) for i, text in enumerate(PASSAGES)]
    return VectorStoreIndex(nodes, embed_model=llamaindex_embedding(embedder_path))


@pytest.fixture(autouse=True)
def no_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """response_mode="no_text" never calls an LLM, but LlamaIndex's NoText synthesizer still resolves
    Settings.llm (ignoring the llm argument); a MockLLM keeps it from reaching for OpenAI."""
    monkeypatch.setattr(Settings, "_llm", MockLLM())


@pytest.fixture()
def collector():
    handler = EventCollector(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def _engine(index: VectorStoreIndex, cross_encoder, debug: LlamaDebugHandler):
    """The query engine hands its callback manager to its postprocessors, so the handler goes there."""
    postprocessor = RerankProdPostprocessor(reranker=Reranker(cross_encoder, fusion=WeightedFusion()), top_n=2)
    return RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=5),
        node_postprocessors=[postprocessor],
        response_mode="no_text",
        callback_manager=CallbackManager([debug]),
    )


def _check(nodes: list[NodeWithScore], retrieved: list[NodeWithScore]) -> None:
    assert len(nodes) == 2
    assert all("aspirin" in n.node.get_content().lower() for n in nodes)
    by_id = {n.node.node_id: n for n in retrieved}
    for node in nodes:
        meta = node.node.metadata
        assert node.score == meta["relevance_score"] and type(node.score) is float
        assert meta["retrieval_score"] == pytest.approx(by_id[node.node.node_id].score)
        assert retrieved[meta["original_rank"]].node.node_id == node.node.node_id
        assert meta["rerank_source"] == "model" and meta["source"].startswith("s")
        assert "rerank_source" not in node.node.get_content(metadata_mode=MetadataMode.LLM)
    assert nodes[0].score >= nodes[1].score


def _check_events(collector: EventCollector, debug: LlamaDebugHandler) -> None:
    kinds = [type(e) for e in collector.events if isinstance(e, (ReRankStartEvent, ReRankEndEvent))]
    assert kinds == [ReRankStartEvent, ReRankEndEvent]
    start = next(e for e in collector.events if isinstance(e, ReRankStartEvent))
    assert start.top_n == 2 and start.model_name.endswith("minilm-l6-scifact-ce")
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1 and len(pairs[0][1].payload["nodes"]) == 2


def test_query_engine_with_postprocessor(index, cross_encoder, collector) -> None:
    debug = LlamaDebugHandler()
    engine = _engine(index, cross_encoder, debug)
    response = engine.query(QUERY)
    _check(response.source_nodes, index.as_retriever(similarity_top_k=5).retrieve(QUERY))
    _check_events(collector, debug)


async def test_async_query_engine(index, cross_encoder, collector) -> None:
    debug = LlamaDebugHandler()
    engine = _engine(index, cross_encoder, debug)
    response = await engine.aquery(QUERY)
    _check(response.source_nodes, await index.as_retriever(similarity_top_k=5).aretrieve(QUERY))
    _check_events(collector, debug)


def test_inputs_untouched() -> None:
    nodes = [
        NodeWithScore(node=TextNode(text="blue sky", id_="a"), score=0.9),
        NodeWithScore(node=TextNode(text="red fox", id_="b"), score=0.1),
    ]
    out = RerankProdPostprocessor(reranker=Reranker(ConstantTimeScorer())).postprocess_nodes(nodes, query_str="red fox")
    assert [n.node.node_id for n in out] == ["b", "a"] and out[0].node.metadata["retrieval_score"] == 0.1
    assert nodes[0].score == 0.9 and nodes[0].node.metadata == {} and nodes[1].node.metadata == {}


def test_bad_input() -> None:
    post = RerankProdPostprocessor(reranker=Reranker(ConstantTimeScorer()))
    with pytest.raises(ValueError, match="query bundle"):
        post.postprocess_nodes([NodeWithScore(node=TextNode(text="x"), score=1.0)])
    assert post.postprocess_nodes([], query_str="q") == []
    with pytest.raises(ValueError, match="instance of Reranker"):  # pydantic's ValidationError
        RerankProdPostprocessor(reranker="cross-encoder")  # type: ignore[arg-type]
