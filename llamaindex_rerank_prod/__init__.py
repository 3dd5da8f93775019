"""LlamaIndex adapter for rerank-prod: a `BaseNodePostprocessor` over the shared core."""

from llamaindex_rerank_prod.postprocessor import RerankProdPostprocessor

__all__ = ["RerankProdPostprocessor"]
