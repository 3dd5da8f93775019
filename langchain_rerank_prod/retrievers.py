"""LangChain retrievers for multi-hop and query-expansion re-ranking: they wrap your base retriever;
all logic lives in `rerank_prod.retrieval`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from typing_extensions import Self

from langchain_rerank_prod.compressor import annotated, document_candidate
from rerank_prod import Candidate, RankedCandidate
from rerank_prod.adapter_settings import RetrievalSettings, query_writer
from rerank_prod.retrieval import MultiHopReranker, QueryExpansionReranker, candidate_key
from rerank_prod.retrieval.expansion import ExpansionResult
from rerank_prod.retrieval.multihop import MultiHopResult

Retrieve = Callable[[str], list[Candidate]]
ARetrieve = Callable[[str], Awaitable[list[Candidate]]]


class _RerankingRetriever(RetrievalSettings, BaseRetriever):
    """Shared by both retrievers: the pipeline settings of `RerankProdCompressor`, the base retriever,
    the query writer, and the translation of documents to candidates and back."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    base_retriever: BaseRetriever = Field(description="Your retriever; called once per hop / query variant.")
    retrieval_score_key: str | None = Field(
        default="score", description="Metadata key holding the retriever's score (None: ignore)."
    )
    llm_model: str | None = Field(default=None, description="Query writer: an OpenAI-compatible chat model.")
    llm_base_url: str | None = Field(default=None, description="Query writer: the endpoint (None: api.openai.com).")
    llm_api_key: SecretStr | None = Field(default=None, exclude=True, description="Query writer: the API key.")

    _writer: Any = PrivateAttr(default=None)

    def _build_core(self, retrieve: Retrieve, aretrieve: ARetrieve | None) -> Any:
        """The core pipeline over these retrieval callables (cheap: the reranker and writer are built once)."""
        raise NotImplementedError

    def _set_writer(self, given: Any, what: str) -> None:
        self._writer = query_writer(given, self.llm_model, self.llm_base_url, self.llm_api_key, what)
        self._build_core(lambda query: [], None)  # every setting checked now, not at the first call

    def _bind(
        self, run: CallbackManagerForRetrieverRun | AsyncCallbackManagerForRetrieverRun
    ) -> tuple[Any, dict[str, Document]]:
        """This call's pipeline over the base retriever (as child runs of `run`), and the documents
        it retrieved by candidate identity, to hand back copies of the originals."""
        seen: dict[str, Document] = {}

        def candidates(documents: Sequence[Document]) -> list[Candidate]:
            found = [document_candidate(d, i, self.retrieval_score_key) for i, d in enumerate(documents)]
            for document, candidate in zip(documents, found, strict=True):
                seen.setdefault(candidate_key(candidate), document)
            return found

        def retrieve(query: str) -> list[Candidate]:
            return candidates(self.base_retriever.invoke(query, config={"callbacks": run.get_child()}))

        async def aretrieve(query: str) -> list[Candidate]:
            return candidates(await self.base_retriever.ainvoke(query, config={"callbacks": run.get_child()}))

        return self._build_core(retrieve, aretrieve), seen

    @staticmethod
    def _documents(items: Sequence[RankedCandidate], seen: dict[str, Document]) -> list[Document]:
        return [annotated(seen[candidate_key(item.candidate)], item.metadata()) for item in items]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        core, seen = self._bind(run_manager)
        result: MultiHopResult | ExpansionResult = core.rerank(query)
        return self._documents(result.items, seen)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        core, seen = self._bind(run_manager)
        result: MultiHopResult | ExpansionResult = await core.arerank(query)
        return self._documents(result.items, seen)


class RerankProdMultiHopRetriever(_RerankingRetriever):
    """Multi-hop re-ranking over `base_retriever` (`rerank_prod.retrieval.MultiHopReranker`).

    Re-ranks what `base_retriever` returns, writes a follow-up query from the best `context_k`
    results (`follow_up=` any `(query, top_results) -> str`, or `llm_model=` / `llm_base_url=` /
    `llm_api_key=` for an OpenAI-compatible chat model), retrieves and re-ranks again, and combines
    the `hops` with `hop_weights` (default `hop_decay ** hop`: 1.0, 0.5). The pipeline settings are
    `RerankProdCompressor`'s (`model=`, `top_n=`, ... or `reranker=`); `timeout_s` is the budget of
    the whole retrieval, every hop included. Documents come back as copies with the result metadata
    plus `hop`, `seen_in_hops` and `multihop` (hops run, why it stopped).

    Raises pydantic's `ValidationError` (a `ValueError`) at construction for bad settings (hops < 1,
    weights of the wrong length or not > 0, unknown fields, neither or both of `follow_up` and
    `llm_model`). Never raises because the base retriever, the writer or the scorer failed.
    """

    hops: int = Field(default=2, description="Hops, the first included.")
    hop_weights: list[float] | None = Field(default=None, description="One weight per hop (None: hop_decay ** hop).")
    hop_decay: float = Field(default=0.5, description="Weight decay per hop when hop_weights is None.")
    context_k: int = Field(default=3, description="Best results of a hop the follow-up writer sees.")
    follow_up: Callable[..., Any] | None = Field(
        default=None, exclude=True, description="(query, top_results) -> the next hop's query."
    )

    @model_validator(mode="after")
    def _check_hops(self) -> Self:
        self._set_writer(self.follow_up, "follow_up")
        return self

    def _build_core(self, retrieve: Retrieve, aretrieve: ARetrieve | None) -> MultiHopReranker:
        return MultiHopReranker(
            self._pipeline(),
            retrieve,
            self._writer,
            hops=self.hops,
            weights=self.hop_weights,
            decay=self.hop_decay,
            context_k=self.context_k,
            timeout_s=self.timeout_s,
            top_n=self.top_n,
            aretriever=aretrieve,
        )


class RerankProdQueryExpansionRetriever(_RerankingRetriever):
    """Query expansion + re-ranking over `base_retriever` (`rerank_prod.retrieval.QueryExpansionReranker`).

    Asks for up to `variants` rewrites of the query (`expander=` any `query -> [str]`, or
    `llm_model=` / `llm_base_url=` / `llm_api_key=`), retrieves for the query and every variant,
    merges and de-duplicates by `Document.id` (or text), and re-ranks once against the original
    query. Pipeline settings and `timeout_s` (the whole call's budget) as in
    `RerankProdMultiHopRetriever`; documents carry `retrieved_by` and `expansion` besides the
    result metadata.

    Raises pydantic's `ValidationError` (a `ValueError`) at construction for bad settings; never
    raises because the base retriever, the expander or the scorer failed (it keeps the original
    query alone).
    """

    variants: int = Field(default=3, description="Query variants to ask for.")
    expander: Callable[..., Any] | None = Field(default=None, exclude=True, description="query -> variants.")

    @model_validator(mode="after")
    def _check_expansion(self) -> Self:
        self._set_writer(self.expander, "expander")
        return self

    def _build_core(self, retrieve: Retrieve, aretrieve: ARetrieve | None) -> QueryExpansionReranker:
        return QueryExpansionReranker(
            self._pipeline(),
            retrieve,
            self._writer,
            variants=self.variants,
            timeout_s=self.timeout_s,
            top_n=self.top_n,
            aretriever=aretrieve,
        )
