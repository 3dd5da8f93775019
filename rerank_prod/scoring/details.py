"""Per-pair details that scorers report beside their scores (an LLM's reason, how a long text was
chunked), collected per call without a shared "last call" attribute.

A score is one float, so anything else a scorer knows about a pair travels on this side channel:
the caller opens `capture_score_details()` around its rerank calls and reads the details back by
(query, text). The collector lives in a `contextvars.ContextVar`, so concurrent calls in other
threads or tasks never see each other's details; the pipeline's worker threads run in a copy of the
caller's context, so what they record reaches the caller's collector. Collectors nest: the
pipeline opens its own around each scoring request (to keep unjudged pairs out of its caches and
put chunking in the result metadata) and a caller's block still sees everything.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

_ACTIVE: contextvars.ContextVar[tuple[ScoreDetails, ...]] = contextvars.ContextVar(
    "rerank_prod_score_details", default=()
)

UNJUDGED = "error"
"""A pair whose details hold this key got a placeholder score, not a judgement (an LLM answer that
stayed unusable): the pipeline ranks it by that score but never caches it, nor the call's result."""


class ScoreDetails:
    """Details recorded by scorers during the calls made inside one `capture_score_details()` block.

    Keyed by (query, text): a rerank call may score only the pairs its caches did not hold, and pairs
    answered from a cache carry no fresh details. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_pair: dict[tuple[str, str], dict[str, Any]] = {}

    def record(self, query: str, text: str, details: dict[str, Any]) -> None:
        with self._lock:
            self._by_pair.setdefault((query, text), {}).update(details)

    def get(self, query: str, text: str) -> dict[str, Any]:
        """What the scorers said about this pair (a copy; empty when nothing was recorded)."""
        with self._lock:
            return dict(self._by_pair.get((query, text), {}))

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_pair)


@contextlib.contextmanager
def capture_score_details() -> Iterator[ScoreDetails]:
    """Collect scorer details for the rerank calls made inside the block (sync or async).

    >>> with capture_score_details() as details:
    ...     result = reranker.rerank(query, passages)
    >>> details.get(query, result[0].candidate.text)  # e.g. {"reason": "...", "chunks": 3, "best_chunk": 1}
    """
    collector = ScoreDetails()
    token = _ACTIVE.set((*_ACTIVE.get(), collector))
    try:
        yield collector
    finally:
        _ACTIVE.reset(token)


def record_score_details(query: str, text: str, **details: Any) -> None:
    """For scorers: attach `details` to (query, text) for every open collector; free when none is."""
    for collector in _ACTIVE.get():
        collector.record(query, text, details)
