"""LlamaIndex retrievers for multi-hop and query-expansion re-ranking: they wrap your retriever and
work anywhere a retriever does (`RetrieverQueryEngine`, chat engines); all logic lives in
`rerank_prod.retrieval`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import SecretStr

from llamaindex_rerank_prod.postprocessor import annotated_node, node_candidate
from rerank_prod import Candidate, Reranker
from rerank_prod.adapter_settings import RetrievalSettings, as_list, query_writer
from rerank_prod.retrieval import MultiHopReranker, QueryExpansionReranker, candidate_key
from rerank_prod.retrieval.expansion import ExpansionResult
from rerank_prod.retrieval.multihop import MultiHopResult


class _RerankingRetriever(BaseRetriever):
    """Shared by both retrievers: pipeline settings (`RerankProdPostprocessor`'s fields, or
    `reranker=`), the wrapped retriever, and nodes to candidates and back."""

    def __init__(
        self,
        retriever: BaseRetriever,
        *,
        reranker: Reranker | None,
        metadata_mode: MetadataMode,
        llm_model: str | None,
        llm_base_url: str | None,
        llm_api_key: str | SecretStr | None,
        callback_manager: CallbackManager | None,
        settings: dict[str, Any],
    ) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise TypeError(f"retriever must be a LlamaIndex BaseRetriever, got {type(retriever).__name__}")
        self.retriever = retriever
        self.metadata_mode = metadata_mode
        self.settings = RetrievalSettings(reranker=reranker, **settings)  # validated like the postprocessor's
        self.llm = (llm_model, llm_base_url, SecretStr(llm_api_key) if isinstance(llm_api_key, str) else llm_api_key)
        super().__init__(callback_manager=callback_manager)

    def _writer(self, given: Callable[..., Any] | None, what: str) -> Any:
        return query_writer(given, *self.llm, what)

    def _build_core(self, retrieve: Callable[[str], list[Candidate]], aretrieve: Any) -> Any:
        raise NotImplementedError

    def _bind(self) -> tuple[Any, dict[str, NodeWithScore]]:
        seen: dict[str, NodeWithScore] = {}

        def candidates(nodes: Sequence[NodeWithScore]) -> list[Candidate]:
            found = [node_candidate(node, i, self.metadata_mode) for i, node in enumerate(as_list(nodes, "nodes"))]
            for node, candidate in zip(nodes, found, strict=True):
                seen.setdefault(candidate_key(candidate), node)
            return found

        def retrieve(query: str) -> list[Candidate]:
            return candidates(self.retriever.retrieve(query))

        async def aretrieve(query: str) -> list[Candidate]:
            return candidates(await self.retriever.aretrieve(query))

        return self._build_core(retrieve, aretrieve), seen

    @staticmethod
    def _nodes(result: MultiHopResult | ExpansionResult, seen: dict[str, NodeWithScore]) -> list[NodeWithScore]:
        return [
            annotated_node(seen[candidate_key(item.candidate)], item.metadata(), item.relevance_score)
            for item in result.items
        ]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        core, seen = self._bind()
        return self._nodes(core.rerank(query_bundle.query_str), seen)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        core, seen = self._bind()
        return self._nodes(await core.arerank(query_bundle.query_str), seen)


class RerankProdMultiHopRetriever(_RerankingRetriever):
    """Multi-hop re-ranking over `retriever` (`rerank_prod.retrieval.MultiHopReranker`).

    Re-ranks what `retriever` returns, writes a follow-up query from the best `context_k` results
    (`follow_up=` any `(query, top_results) -> str`, or `llm_model=` / `llm_base_url=` /
    `llm_api_key=`), retrieves and re-ranks again, and combines the `hops` with `hop_weights`
    (default `hop_decay ** hop`: 1.0, 0.5). Pipeline settings are `RerankProdPostprocessor`'s
    (`model=`, `top_n=`, `timeout_s=`, ... as keywords, or `reranker=`); `timeout_s` is the budget of
    the whole retrieval. `node.score` is the combined score; the metadata holds the result contract
    plus `hop`, `seen_in_hops` and `multihop`, kept out of LLM and embedding text.

    Raises `ValueError`/`TypeError` at construction for bad settings (hops < 1, weights of the wrong
    length or not > 0, unknown settings, neither or both of `follow_up` and `llm_model`). Never
    raises because the retriever, the writer or the scorer failed.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        *,
        follow_up: Callable[..., Any] | None = None,
        hops: int = 2,
        hop_weights: Sequence[float] | None = None,
        hop_decay: float = 0.5,
        context_k: int = 3,
        reranker: Reranker | None = None,
        llm_model: str | None = None,
        llm_base_url: str | None = None,
        llm_api_key: str | SecretStr | None = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        callback_manager: CallbackManager | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(
            retriever,
            reranker=reranker,
            metadata_mode=metadata_mode,
            llm_model=llm_model,
            llm_base_url=llm_base_url,
            llm_api_key=llm_api_key,
            callback_manager=callback_manager,
            settings=settings,
        )
        self.hops, self.hop_weights, self.hop_decay, self.context_k = hops, hop_weights, hop_decay, context_k
        self.follow_up = self._writer(follow_up, "follow_up")
        self._build_core(lambda query: [], None)  # every setting checked now, not at the first call

    def _build_core(self, retrieve: Callable[[str], list[Candidate]], aretrieve: Any) -> MultiHopReranker:
        return MultiHopReranker(
            self.settings._pipeline(),
            retrieve,
            self.follow_up,
            hops=self.hops,
            weights=self.hop_weights,
            decay=self.hop_decay,
            context_k=self.context_k,
            timeout_s=self.settings.timeout_s,
            top_n=self.settings.top_n,
            aretriever=aretrieve,
        )


class RerankProdQueryExpansionRetriever(_RerankingRetriever):
    """Query expansion + re-ranking over `retriever` (`rerank_prod.retrieval.QueryExpansionReranker`).

    Asks for up to `variants` rewrites (`expander=` any `query -> [str]`, or `llm_model=` /
    `llm_base_url=` / `llm_api_key=`), retrieves for the query and every variant, merges and
    de-duplicates by node id, and re-ranks once against the original query. Settings and
    `timeout_s` (the whole call's budget) as in `RerankProdMultiHopRetriever`; nodes carry
    `retrieved_by` and `expansion`.

    Raises `ValueError`/`TypeError` at construction for bad settings; never raises because the
    retriever, the expander or the scorer failed (it keeps the original query alone).
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        *,
        expander: Callable[..., Any] | None = None,
        variants: int = 3,
        reranker: Reranker | None = None,
        llm_model: str | None = None,
        llm_base_url: str | None = None,
        llm_api_key: str | SecretStr | None = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        callback_manager: CallbackManager | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(
            retriever,
            reranker=reranker,
            metadata_mode=metadata_mode,
            llm_model=llm_model,
            llm_base_url=llm_base_url,
            llm_api_key=llm_api_key,
            callback_manager=callback_manager,
            settings=settings,
        )
        self.variants = variants
        self.expander = self._writer(expander, "expander")
        self._build_core(lambda query: [], None)

    def _build_core(self, retrieve: Callable[[str], list[Candidate]], aretrieve: Any) -> QueryExpansionReranker:
        return QueryExpansionReranker(
            self.settings._pipeline(),
            retrieve,
            self.expander,
            variants=self.variants,
            timeout_s=self.settings.timeout_s,
            top_n=self.settings.top_n,
            aretriever=aretrieve,
        )
