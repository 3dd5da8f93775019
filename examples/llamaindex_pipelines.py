"""LlamaIndex, offline: `RerankProdPostprocessor` in a query engine, a `CondensePlusContextChatEngine`, after a
`QueryFusionRetriever` (re-rank after fusion, before the LLM), and scored by `RetrieverEvaluator`.

Models: `RERANK_PROD_CROSS_ENCODER`, `RERANK_PROD_EMBEDDER` (default: the hub names). The LLM is LlamaIndex's
`MockLLM`; put yours in its place.

    python examples/llamaindex_pipelines.py
"""

from __future__ import annotations

import asyncio
import os

from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.evaluation import RetrieverEvaluator
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import TextNode
from sentence_transformers import SentenceTransformer

from llamaindex_rerank_prod import RerankProdPostprocessor

CROSS_ENCODER = os.environ.get("RERANK_PROD_CROSS_ENCODER", "cross-encoder/ms-marco-MiniLM-L-6-v2")
EMBEDDER = os.environ.get("RERANK_PROD_EMBEDDER", "sentence-transformers/all-MiniLM-L6-v2")
PASSAGES = [
    "Low-dose aspirin lowers the rate of heart attacks in men over fifty.",
    "Aspirin use was associated with a lower risk of myocardial infarction.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Statins reduce LDL cholesterol and cardiovascular events.",
    "Vitamin D supplementation did not reduce fracture risk in older adults.",
    "Photosynthesis converts light energy into chemical energy in plants.",
]
QUESTION = "does aspirin prevent heart attacks"


class MiniLMEmbedding(BaseEmbedding):
    """A sentence-transformers model as a LlamaIndex embedding (llama-index-embeddings-huggingface does the same)."""

    def _model(self) -> SentenceTransformer:
        return _load(self.model_name)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._model().encode([text], normalize_embeddings=True)[0].tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


_MODELS: dict[str, SentenceTransformer] = {}


def _load(name: str) -> SentenceTransformer:
    if name not in _MODELS:
        _MODELS[name] = SentenceTransformer(name, device="cpu")
    return _MODELS[name]


def main() -> None:
    Settings.llm = MockLLM(max_tokens=16)
    index = VectorStoreIndex(
        [TextNode(text=text, id_=f"node-{i}") for i, text in enumerate(PASSAGES)],
        embed_model=MiniLMEmbedding(model_name=EMBEDDER),
    )
    rerank = RerankProdPostprocessor(model=CROSS_ENCODER, top_n=2, fusion="weighted", timeout_s=10.0)

    # 1. a query engine: retrieve 5, re-rank, keep 2 for the LLM
    engine = index.as_query_engine(similarity_top_k=5, node_postprocessors=[rerank])
    response = engine.query(QUESTION)
    print("query engine:", [(n.node.node_id, round(n.score, 3)) for n in response.source_nodes])

    # 2. a chat engine that condenses the conversation into a question, then retrieves and re-ranks
    chat = CondensePlusContextChatEngine.from_defaults(
        index.as_retriever(similarity_top_k=5), node_postprocessors=[rerank], llm=Settings.llm
    )
    reply = chat.chat(QUESTION)
    print("chat engine:", [n.node.node_id for n in reply.source_nodes])

    # 3. fusion of several retrievers (reciprocal rank), then the re-rank, before the LLM
    fusion = QueryFusionRetriever(
        [index.as_retriever(similarity_top_k=4), index.as_retriever(similarity_top_k=6)],
        mode="reciprocal_rerank",
        num_queries=1,  # no LLM-generated query variants in this offline example
        similarity_top_k=5,
        use_async=False,
    )
    fused = RetrieverQueryEngine.from_args(fusion, node_postprocessors=[rerank]).query(QUESTION)
    print("fusion + re-rank:", [(n.node.node_id, n.node.metadata["rerank_source"]) for n in fused.source_nodes])

    # 4. the retriever's quality with the re-rank in place
    evaluator = RetrieverEvaluator.from_metric_names(
        ["mrr", "hit_rate"], retriever=index.as_retriever(similarity_top_k=5), node_postprocessors=[rerank]
    )
    result = asyncio.run(evaluator.aevaluate(QUESTION, expected_ids=["node-0", "node-1"]))
    print("evaluator:", {name: round(score, 3) for name, score in result.metric_vals_dict.items()})


if __name__ == "__main__":
    main()
