"""The re-rank is its own child run in LangChain tracing: a real callback handler, `collect_runs` and
`astream_events` all see it under the retriever's run, with model, candidates in/out, source and latency."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.tracers.context import collect_runs

from langchain_rerank_prod import RerankProdCompressor
from rerank_prod import Reranker
from tests.support import ConstantTimeScorer

TEXTS = ["blue sky", "red fox jumps", "red sky at night", "a fox"]


class ListRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=t, metadata={"score": 1.0 - i / 10}) for i, t in enumerate(TEXTS)]


class ChainRuns(BaseCallbackHandler):
    """Records every chain start and end with its parent, as a tracing backend would."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.ends: dict[UUID, dict[str, Any]] = {}

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.starts.append({"run_id": run_id, "inputs": inputs, **kwargs})

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.ends[run_id] = outputs


def _retriever(top_n: int = 2) -> ContextualCompressionRetriever:
    compressor = RerankProdCompressor(reranker=Reranker(ConstantTimeScorer(name="overlap-model"), top_n=top_n))
    return ContextualCompressionRetriever(base_compressor=compressor, base_retriever=ListRetriever())


def test_a_callback_handler_sees_the_rerank_run() -> None:
    handler = ChainRuns()
    docs = _retriever().invoke("red fox", config={"callbacks": [handler]})
    [start] = [s for s in handler.starts if s["name"] == "RerankProdCompressor"]
    assert start["parent_run_id"] is not None
    assert start["inputs"] == {"query": "red fox", "candidates_in": 4}
    assert start["metadata"]["rerank_model"] == "overlap-model"
    outputs = handler.ends[start["run_id"]]
    assert outputs["candidates_out"] == 2 and outputs["rerank_source"] == "model" and outputs["latency_s"] > 0
    assert [d.page_content for d in outputs["documents"]] == [d.page_content for d in docs]


def test_collect_runs_nests_it_under_the_retriever() -> None:
    with collect_runs() as collector:
        _retriever().invoke("red fox")
    [root] = collector.traced_runs
    [child] = [run for run in root.child_runs if run.name == "RerankProdCompressor"]
    assert child.run_type == "chain" and child.parent_run_id == root.id
    assert child.outputs["candidates_out"] == 2 and child.end_time is not None and child.error is None


async def test_astream_events_show_start_and_end() -> None:
    events = [event async for event in _retriever(top_n=1).astream_events("red fox", version="v2")]
    mine = [e for e in events if e["name"] == "RerankProdCompressor"]
    assert [e["event"] for e in mine] == ["on_chain_start", "on_chain_end"]
    assert mine[1]["data"]["output"]["candidates_out"] == 1
    assert mine[0]["metadata"]["rerank_model"] == "overlap-model"


async def test_async_compress_documents_is_traced_too() -> None:
    handler = ChainRuns()
    await _retriever().ainvoke("red fox", config={"callbacks": [handler]})
    assert [s["name"] for s in handler.starts].count("RerankProdCompressor") == 1


def test_a_direct_call_without_callbacks_still_reaches_an_active_tracer() -> None:
    compressor = RerankProdCompressor(reranker=Reranker(ConstantTimeScorer()))
    documents = ListRetriever().invoke("red fox")
    with collect_runs() as collector:
        compressor.compress_documents(documents, "red fox")
    assert [run.name for run in collector.traced_runs] == ["RerankProdCompressor"]
