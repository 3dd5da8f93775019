"""LlamaIndex adapter: a node postprocessor over the shared `rerank_prod` pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rerank_prod import RESULT_METADATA_KEYS, Candidate, RerankResult
from rerank_prod.adapter_settings import RerankerSettings, as_list

dispatcher = get_dispatcher(__name__)

# Kept out of the node's LLM and embedding text; retrieval_score stays visible as in LlamaIndex's own re-rankers.
_HIDDEN = tuple(key for key in RESULT_METADATA_KEYS if key != "retrieval_score")


def annotated_node(node: NodeWithScore, metadata: dict[str, Any], score: float) -> NodeWithScore:
    """A copy of `node` scored `score`, with the result metadata added and kept out of the node's
    LLM and embedding text (the input is never mutated)."""
    inner = node.node
    copy = inner.model_copy(
        update={
            "metadata": {**inner.metadata, **metadata},
            "excluded_llm_metadata_keys": list(
                dict.fromkeys([*inner.excluded_llm_metadata_keys, *metadata_hidden(metadata)])
            ),
            "excluded_embed_metadata_keys": list(
                dict.fromkeys([*inner.excluded_embed_metadata_keys, *metadata_hidden(metadata)])
            ),
        }
    )
    return NodeWithScore(node=copy, score=score)


def metadata_hidden(metadata: dict[str, Any]) -> list[str]:
    """The keys kept out of prompts: all rerank-prod keys but `retrieval_score` (as LlamaIndex does)."""
    return [key for key in (*_HIDDEN, *metadata) if key != "retrieval_score" and key in metadata]


def node_candidate(node: object, position: int, metadata_mode: MetadataMode) -> Candidate:
    """A LlamaIndex `NodeWithScore` as the core's candidate (node id, score); anything else: `TypeError`."""
    if not isinstance(node, NodeWithScore):
        raise TypeError(f"node {position} must be a NodeWithScore, got {type(node).__name__}")
    return Candidate(
        text=node.node.get_content(metadata_mode=metadata_mode), id=node.node.node_id, retrieval_score=node.score
    )


class RerankProdPostprocessor(RerankerSettings, BaseNodePostprocessor):
    """Re-ranks nodes; use as `index.as_query_engine(node_postprocessors=[...])`.

    Configure it like LlamaIndex's own re-rankers, `RerankProdPostprocessor(model=..., top_n=2)` (every
    field of `RerankerSettings`), or hand it a prebuilt `reranker=Reranker(...)`; `to_dict()` /
    `from_dict()` round-trip the settings (secrets left out).

    `node.score` becomes the final relevance score and the incoming score is kept in
    `metadata["retrieval_score"]`, as LlamaIndex's own re-rankers do. The rerank-prod metadata is
    excluded from the LLM and embedding views of the node so it never leaks into prompts. Input
    nodes are never mutated.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED, description="Which node content view is scored.")

    @classmethod
    def class_name(cls) -> str:
        return "RerankProdPostprocessor"

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The settings, for `from_dict`; secrets are left out (give them again, or use the environment)."""
        self._refuse_serialization("serialized")
        return super().to_dict(**kwargs)

    def _candidates(self, nodes: list[NodeWithScore]) -> list[Candidate]:
        return [node_candidate(node, position, self.metadata_mode) for position, node in enumerate(nodes)]

    @staticmethod
    def _nodes(nodes: list[NodeWithScore], result: RerankResult) -> list[NodeWithScore]:
        return [annotated_node(nodes[item.original_rank], item.metadata(), item.relevance_score) for item in result]

    def _top_n(self, nodes: list[NodeWithScore]) -> int:
        return self.top_n or self._pipeline().top_n or len(nodes)

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> str:
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self._top_n(nodes), model_name=self._pipeline().scorer.name
            )
        )
        if query_bundle is None:
            raise ValueError("Missing query bundle in extra info.")
        return query_bundle.query_str

    @contextmanager
    def _reranking(
        self, nodes: list[NodeWithScore], query: str
    ) -> Iterator[Callable[[RerankResult], list[NodeWithScore]]]:
        """The RERANKING callback event around one call; yields the function that finishes it."""
        payload: dict[str, Any] = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self._pipeline().scorer.name,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self._top_n(nodes),
        }
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:

            def finish(result: RerankResult) -> list[NodeWithScore]:
                new_nodes = self._nodes(nodes, result)
                event.on_end(payload={EventPayload.NODES: new_nodes})
                dispatcher.event(ReRankEndEvent(nodes=new_nodes))
                return new_nodes

            yield finish

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes = as_list(nodes, "nodes must be a sequence of NodeWithScore")
        candidates = self._candidates(nodes)
        query = self._start(nodes, query_bundle)
        if not nodes:
            return []
        with self._reranking(nodes, query) as finish:
            return finish(self._pipeline().rerank(query, candidates, top_n=self.top_n))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes = as_list(nodes, "nodes must be a sequence of NodeWithScore")
        candidates = self._candidates(nodes)
        query = self._start(nodes, query_bundle)
        if not nodes:
            return []
        with self._reranking(nodes, query) as finish:
            return finish(await self._pipeline().arerank(query, candidates, top_n=self.top_n))
