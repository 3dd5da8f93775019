"""LangChain adapter for rerank-prod: a `BaseDocumentCompressor` over the shared core, and retrievers
for multi-hop and query-expansion re-ranking around your base retriever."""

from langchain_rerank_prod.compressor import RerankProdCompressor
from langchain_rerank_prod.retrievers import RerankProdMultiHopRetriever, RerankProdQueryExpansionRetriever

__all__ = ["RerankProdCompressor", "RerankProdMultiHopRetriever", "RerankProdQueryExpansionRetriever"]
