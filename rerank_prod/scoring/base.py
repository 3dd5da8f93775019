"""The scorer contract every backend implements, and a base that makes a local scorer one method."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rerank_prod.deadline import Deadline
from rerank_prod.errors import ScorerError
from rerank_prod.types import as_finite_float

if TYPE_CHECKING:
    from rerank_prod.resilience import CircuitBreaker


@runtime_checkable
class Scorer(Protocol):
    """Scores (query, text) pairs; higher is more relevant. Sync and native async.

    - `name`: the model name shown in events, logs and metrics.
    - `identity`: the model and every setting that changes its scores; cache keys are built from it.
    - `independent_scores`: True when a text's score does not depend on the other texts of the call
      (cross-encoders, pointwise LLMs). Only then may the pair and semantic caches hold its scores.
    - `circuit_breaker`: the breaker guarding a remote backend (its state is reported in metrics),
      or None for local models.
    - `score` / `ascore`: one finite float per text, in order. `deadline` is what is left of the
      call's budget; a scorer should not start work it cannot finish before it. Raise (any
      exception) when the backend cannot answer: the pipeline falls back, it never returns that error.
    """

    @property
    def name(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def independent_scores(self) -> bool: ...

    @property
    def circuit_breaker(self) -> CircuitBreaker | None: ...

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]: ...

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]: ...


class LocalScorer(ABC):
    """Base for in-process scorers: implement `name`, `identity` and `score`; `ascore` runs `score`
    on a worker thread so a CPU-bound model never blocks the event loop. Scores are per pair and
    there is no breaker (a local model has no remote outage to guard against)."""

    independent_scores: bool = True
    circuit_breaker: CircuitBreaker | None = None

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def identity(self) -> str: ...

    @abstractmethod
    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]: ...

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        return await asyncio.to_thread(self.score, query, texts, deadline=deadline)


def checked_scores(raw: Sequence[object], expected: int, scorer_name: str) -> list[float]:
    """Plain floats, one per text, all finite; anything else is a backend failure."""
    if len(raw) != expected:
        raise ScorerError(f"{scorer_name} returned {len(raw)} scores for {expected} texts")
    try:
        return [as_finite_float(value, f"{scorer_name} score") for value in raw]
    except (TypeError, ValueError) as exc:
        raise ScorerError(str(exc)) from exc
