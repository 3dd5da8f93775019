"""LangChain adapter: `Document`s in, re-ranked copies out; all logic lives in `rerank_prod`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.load.serializable import Serializable, SerializedConstructor, SerializedNotImplemented
from pydantic import ConfigDict, Field

from langchain_rerank_prod.tracing import atraced, traced
from rerank_prod import Candidate, RerankResult
from rerank_prod.adapter_settings import RerankerSettings, as_list

# Where `loads(..., secrets_from_env=True)` finds the key that `dumpd` left out.
_API_KEY_ENV = {
    "cohere": "CO_API_KEY",
    "openai-embedding": "OPENAI_API_KEY",
    "llm-pointwise": "OPENAI_API_KEY",
    "llm-listwise": "OPENAI_API_KEY",
}


def document_candidate(document: object, position: int, score_key: str | None) -> Candidate:
    """A LangChain `Document` as the core's candidate: text, `Document.id`, and the retriever score
    from `metadata[score_key]` when present. Anything else is a `TypeError`."""
    if not isinstance(document, Document):
        raise TypeError(f"document {position} must be a langchain Document, got {type(document).__name__}")
    score = document.metadata.get(score_key) if score_key else None
    return Candidate(text=document.page_content, id=document.id, retrieval_score=score)


def annotated(document: Document, metadata: dict[str, Any]) -> Document:
    """A copy of `document` with the result metadata added (the input is never mutated)."""
    return document.model_copy(update={"metadata": {**document.metadata, **metadata}})


class RerankProdCompressor(RerankerSettings, BaseDocumentCompressor, Serializable):
    """Re-ranks retrieved documents; drop into `ContextualCompressionRetriever(base_compressor=...)`.

    Configure it like the partner packages, `RerankProdCompressor(model=..., top_n=3, timeout_s=2.0)`
    (every field of `RerankerSettings`), or hand it a prebuilt `reranker=Reranker(...)`. The retriever
    score is read from `metadata[retrieval_score_key]` when present (it feeds hybrid fusion and the
    gate). Inputs are never mutated: results are copies with the rerank-prod metadata added and
    `Document.id` preserved. Each call is a child run in LangChain tracing.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    retrieval_score_key: str | None = Field(
        default="score", description="Metadata key holding the retriever's score (None: ignore)."
    )

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_rerank_prod"]

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": _API_KEY_ENV.get(self.scorer, "RERANK_PROD_API_KEY"), "redis_password": "REDIS_PASSWORD"}

    def to_json(self) -> SerializedConstructor | SerializedNotImplemented:
        """LangChain's own form for what cannot be rebuilt: a prebuilt `reranker=` is `not_implemented`."""
        return super().to_json() if self.serializable else self.to_json_not_implemented()

    def _candidates(self, documents: Sequence[Document]) -> list[Candidate]:
        return [document_candidate(document, i, self.retrieval_score_key) for i, document in enumerate(documents)]

    @staticmethod
    def _documents(documents: Sequence[Document], result: RerankResult) -> list[Document]:
        return [annotated(documents[item.original_rank], item.metadata()) for item in result]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Re-ranked copies of `documents`, best first (any iterable; validated before any work)."""
        given = as_list(documents, "documents must be a sequence of langchain Documents")
        candidates = self._candidates(given)
        reranker = self._pipeline()
        with traced(callbacks, reranker.scorer.name, query, len(given)) as run:
            reranked = self._documents(given, result := reranker.rerank(query, candidates, top_n=self.top_n))
            run.finish(result, reranked)
        return reranked

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Native async `compress_documents`: no thread hop for remote backends."""
        given = as_list(documents, "documents must be a sequence of langchain Documents")
        candidates = self._candidates(given)
        reranker = self._pipeline()
        async with atraced(callbacks, reranker.scorer.name, query, len(given)) as run:
            result = await reranker.arerank(query, candidates, top_n=self.top_n)
            reranked = self._documents(given, result)
            run.finish(result, reranked)
        return reranked
