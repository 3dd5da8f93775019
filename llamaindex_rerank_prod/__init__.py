"""LlamaIndex adapter for rerank-prod: a `BaseNodePostprocessor` over the shared core, and retrievers
for multi-hop and query-expansion re-ranking around your retriever."""

from llamaindex_rerank_prod.postprocessor import RerankProdPostprocessor
from llamaindex_rerank_prod.retrievers import RerankProdMultiHopRetriever, RerankProdQueryExpansionRetriever

__all__ = ["RerankProdMultiHopRetriever", "RerankProdPostprocessor", "RerankProdQueryExpansionRetriever"]
