"""Retrieval-side re-ranking over the user's retriever: multi-hop and query expansion.

Both are built on `Reranker` (one re-rank per hop / one after merging), run under one `timeout_s`
budget, and degrade instead of raising when a retriever or query writer fails or hangs. Query
writers: `LLMQueryWriter` (any OpenAI-compatible chat endpoint) or any callable; the LLM-free
`KeyTermsFollowUp` and `PseudoRelevanceExpander` are deterministic baselines.
"""

from rerank_prod.retrieval.expansion import ExpandedCandidate, ExpansionResult, QueryExpansionReranker
from rerank_prod.retrieval.keyterms import KeyTermsFollowUp, PseudoRelevanceExpander, TermStatistics
from rerank_prod.retrieval.llm import LLMQueryWriter
from rerank_prod.retrieval.merge import candidate_key, combine_hops, hop_weights, merge_ranked_lists
from rerank_prod.retrieval.multihop import Hop, HopCandidate, MultiHopReranker, MultiHopResult

__all__ = [
    "ExpandedCandidate",
    "ExpansionResult",
    "Hop",
    "HopCandidate",
    "KeyTermsFollowUp",
    "LLMQueryWriter",
    "MultiHopReranker",
    "MultiHopResult",
    "PseudoRelevanceExpander",
    "QueryExpansionReranker",
    "TermStatistics",
    "candidate_key",
    "combine_hops",
    "hop_weights",
    "merge_ranked_lists",
]
