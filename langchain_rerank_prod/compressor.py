"""LangChain adapter: `Document`s in, re-ranked copies out; all logic lives in `rerank_prod`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from rerank_prod import Candidate, CrossEncoderScorer, Reranker, RerankResult
from rerank_prod.scoring import DEFAULT_CROSS_ENCODER


class RerankProdCompressor(BaseDocumentCompressor):
    """Re-ranks retrieved documents; drop into `ContextualCompressionRetriever(base_compressor=...)`.

    The retriever score is read from `metadata[retrieval_score_key]` when present (it feeds hybrid
    fusion and the selective gate). Inputs are never mutated: results are copies with the
    rerank-prod metadata added and `Document.id` preserved.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Reranker
    retrieval_score_key: str | None = Field(
        default="score", description="Metadata key holding the retriever's score (None: ignore)."
    )
    top_n: int | None = Field(default=None, description="Overrides the reranker's top_n when set.")

    @classmethod
    def from_cross_encoder(
        cls,
        model_name_or_path: str = DEFAULT_CROSS_ENCODER,
        *,
        top_n: int | None = 3,
        retrieval_score_key: str | None = "score",
        device: str | None = None,
        **reranker_options: Any,
    ) -> RerankProdCompressor:
        """A compressor over a sentence-transformers cross-encoder; options go to `Reranker`."""
        scorer = CrossEncoderScorer(model_name_or_path, device=device)
        return cls(reranker=Reranker(scorer, top_n=top_n, **reranker_options), retrieval_score_key=retrieval_score_key)

    def _candidates(self, documents: Sequence[Document]) -> list[Candidate]:
        candidates = []
        for position, document in enumerate(documents):
            if not isinstance(document, Document):
                raise TypeError(f"document {position} must be a langchain Document, got {type(document).__name__}")
            score = document.metadata.get(self.retrieval_score_key) if self.retrieval_score_key else None
            candidates.append(Candidate(text=document.page_content, id=document.id, retrieval_score=score))
        return candidates

    @staticmethod
    def _documents(documents: Sequence[Document], result: RerankResult) -> list[Document]:
        return [
            documents[item.original_rank].model_copy(
                update={"metadata": {**documents[item.original_rank].metadata, **item.metadata()}}
            )
            for item in result
        ]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        result = self.reranker.rerank(query, self._candidates(documents), top_n=self.top_n)
        return self._documents(documents, result)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        result = await self.reranker.arerank(query, self._candidates(documents), top_n=self.top_n)
        return self._documents(documents, result)
