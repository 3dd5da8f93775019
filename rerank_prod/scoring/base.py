"""The scorer protocol every backend implements, and the time budget it is handed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rerank_prod.types import as_finite_float


class ScorerError(RuntimeError):
    """A backend could not produce scores; the pipeline turns this into a fallback."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """One time budget for a whole call, so retries and batches cannot outlive it."""

    expires_at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


@runtime_checkable
class Scorer(Protocol):
    """Scores (query, text) pairs; higher is more relevant. Sync and native async.

    `name` is the model name shown in events and logs. `identity` names the model and every
    setting that changes its scores: cache keys are built from it.
    """

    @property
    def name(self) -> str: ...

    @property
    def identity(self) -> str: ...

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]: ...

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]: ...


def checked_scores(raw: Sequence[object], expected: int, scorer_name: str) -> list[float]:
    """Plain floats, one per text, all finite; anything else is a backend failure."""
    if len(raw) != expected:
        raise ScorerError(f"{scorer_name} returned {len(raw)} scores for {expected} texts")
    try:
        return [as_finite_float(value, f"{scorer_name} score") for value in raw]
    except (TypeError, ValueError) as exc:
        raise ScorerError(str(exc)) from exc
