"""The observer hook: what a `Reranker` tells exporters, tracers and monitors about each call.

A `Reranker(observers=[...])` binds every observer once (`Observer.bind`), then for each call opens
one `Observation` per bound observer: it is told when each stage starts and ends (every effect the
plan asks for, plus the gate and fusion), gets the outcome (`Finished`) and is closed last, with
the exception if the call failed. Observers never see query or passage text.

An observer that raises is logged and ignored: observability must never fail a rerank call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rerank_prod.cache import RankingEntry
from rerank_prod.types import RerankResult, RerankSource, SourceKind

if TYPE_CHECKING:
    from rerank_prod.pipeline import Reranker
    from rerank_prod.resilience import CircuitBreaker

logger = logging.getLogger("rerank_prod")

_LABEL_SAFE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Finished:
    """A call's outcome: the result, the whole ranking behind it (every candidate, by final order:
    original index, relevance, raw model score or None) and, when they differ, each candidate's
    source by original index (None: every candidate has `result.source`)."""

    result: RerankResult
    ranking: Sequence[RankingEntry]
    item_sources: Sequence[RerankSource] | None

    def cache_hits(self) -> dict[str, int]:
        """Answers per cache layer: "result" (1 when the whole ranking came from the result cache),
        "score" and "semantic" (candidates whose score came from that layer)."""
        source = self.result.source
        hits = {"result": int(source.kind is SourceKind.CACHE and not source.detail), "score": 0, "semantic": 0}
        for item in self.item_sources or ():
            if item.kind is SourceKind.CACHE and item.detail in hits:
                hits[item.detail] += 1
        return hits


def fallback_reason(source: RerankSource) -> tuple[str, str]:
    """(`to`, `reason`) of a fallback source, both bounded label values: `to` is "secondary" or
    "retriever_order"; `reason` is the primary's failure: "timeout", an exception type name
    ("CircuitOpenError", "ConnectionError"), the first word of other reasons ("shed"), else "other"."""
    target, _, why = source.detail.partition(": ")
    to = "secondary" if target.startswith("secondary ") else "retriever_order"
    word, _, rest = why.split(";")[0].strip().partition(" ")
    reason = rest.split(" ")[0] if word == "error" and rest else word
    return to, reason if _LABEL_SAFE.fullmatch(reason) else "other"


def scorer_kind(reranker: Reranker) -> str:
    """The primary scorer's class name ("CrossEncoderScorer", "TEIScorer"): a bounded label."""
    return type(reranker.scorer).__name__


def breakers(reranker: Reranker) -> list[tuple[str, CircuitBreaker]]:
    """(backend name, breaker) of the reranker's primary and fallback scorers that have one."""
    return [
        (scorer.name, scorer.circuit_breaker)
        for scorer in (reranker.scorer, reranker.fallback_scorer)
        if scorer is not None and scorer.circuit_breaker is not None
    ]


class Observation(Protocol):
    """One call as one observer sees it. `stage_started` returns a token handed back to
    `stage_ended` (e.g. a start time or a span); `closed` is always called, exactly once, last."""

    def stage_started(self, stage: str) -> object: ...

    def stage_ended(self, token: object, error: BaseException | None) -> None: ...

    def finished(self, outcome: Finished) -> None: ...

    def closed(self, error: BaseException | None) -> None: ...


class BoundObserver(Protocol):
    """An observer attached to one `Reranker`; `start` opens the observation of one call."""

    def start(self, candidates: int, top_n: int | None) -> Observation: ...


@runtime_checkable
class Observer(Protocol):
    """Anything a `Reranker` reports its calls to: `PrometheusMetrics`, `OpenTelemetryTracing`,
    `RerankMonitor`, or your own. `bind` is called once per reranker, at its construction."""

    def bind(self, reranker: Reranker) -> BoundObserver: ...


class CallWatch:
    """All observations of one call behind one object; the pipeline's only contact with observers.

    `with watch:` opens them (so a tracer's span is current while the call runs) and closes them;
    `stage(name)` is the context manager around each stage; `finish` reports the outcome.
    """

    __slots__ = ("_observers", "_candidates", "_top_n", "_open")

    def __init__(self, observers: Sequence[BoundObserver], candidates: int, top_n: int | None) -> None:
        self._observers = observers
        self._candidates = candidates
        self._top_n = top_n
        self._open: list[Observation] = []

    def __enter__(self) -> CallWatch:
        for observer in self._observers:
            try:
                self._open.append(observer.start(self._candidates, self._top_n))
            except Exception:
                logger.exception("observer %r failed to start; it misses this call", observer)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for observation in reversed(self._open):
            try:
                observation.closed(error)
            except Exception:
                logger.exception("observer %r failed to close a call", observation)
        self._open.clear()

    def stage(self, name: str) -> _Stage:
        return _Stage(self._open, name)

    def finish(self, outcome: Finished) -> None:
        for observation in self._open:
            try:
                observation.finished(outcome)
            except Exception:
                logger.exception("observer %r failed to record a call", observation)


class _Stage:
    """One stage of one call, as a context manager around the work."""

    __slots__ = ("_observations", "_name", "_tokens")

    def __init__(self, observations: Sequence[Observation], name: str) -> None:
        self._observations = observations
        self._name = name
        self._tokens: list[tuple[Observation, object]] = []

    def __enter__(self) -> None:
        for observation in self._observations:
            try:
                self._tokens.append((observation, observation.stage_started(self._name)))
            except Exception:
                logger.exception("observer %r failed to start stage %s", observation, self._name)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for observation, token in reversed(self._tokens):
            try:
                observation.stage_ended(token, error)
            except Exception:
                logger.exception("observer %r failed to end stage %s", observation, self._name)
