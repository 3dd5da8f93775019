"""LangChain adapter for rerank-prod: a `BaseDocumentCompressor` over the shared core."""

from langchain_rerank_prod.compressor import RerankProdCompressor

__all__ = ["RerankProdCompressor"]
