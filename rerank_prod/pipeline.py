"""The `Reranker` pipeline: validate -> cache -> gate -> score under a deadline -> fuse -> select.

The decision logic is written once, as a plan (`rerank_prod.effects`): a generator that yields the
I/O it needs (cache reads and writes, scoring) and receives the answers. `rerank()` performs that
I/O synchronously and `arerank()` natively with `await`, so sync and async can never drift apart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from rerank_prod.cache import RankingEntry, ResultCache, ScoreCache
from rerank_prod.deadline import Deadline
from rerank_prod.effects import EffectFailed, Plan, arun, ask, effect, run
from rerank_prod.errors import PartialScores, ScoringShed, ScoringTimeout
from rerank_prod.fusion import Fusion
from rerank_prod.gate import Gate
from rerank_prod.metrics import RerankMetrics
from rerank_prod.observability.base import CallWatch, Finished, Observer
from rerank_prod.redaction import RedactedError, redact
from rerank_prod.scoring.base import Scorer, checked_scores
from rerank_prod.scoring.chunked import ChunkedScorer
from rerank_prod.scoring.details import UNJUDGED, ScoreDetails, capture_score_details
from rerank_prod.semantic_cache import SemanticCache
from rerank_prod.throttled_log import ThrottledLog
from rerank_prod.types import (
    Candidate,
    GateDecision,
    RankedCandidate,
    RerankResult,
    RerankSource,
    SourceKind,
    as_finite_float,
)
from rerank_prod.validation import check_int, check_number

logger = logging.getLogger("rerank_prod")

_SCORING_THREADS = 4


# --- the I/O the pipeline asks for: cache calls are `IO`, scoring is this -----------------------


@dataclass(frozen=True, slots=True)
class _Score:
    scorer: Scorer
    query: str
    texts: list[str]
    deadline: Deadline | None


_MODEL_SOURCE = RerankSource(SourceKind.MODEL)
_UNSCORED = RerankSource(SourceKind.PARTIAL, "not scored in budget: retriever order")
_CACHED_PAIR = RerankSource(SourceKind.CACHE, "score")
_CACHED_SEMANTIC = RerankSource(SourceKind.CACHE, "semantic")
_UNJUDGED_SOURCE = RerankSource(SourceKind.MODEL, "no usable answer: after the judged ones")

Details = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Fresh:
    """A scoring request's answer: a score per text, and per text what the scorers recorded
    (`capture_score_details`), e.g. that a score is a placeholder (`UNJUDGED`) or how it was chunked."""

    scores: list[float]
    details: Sequence[Details]


def _details_of(collected: ScoreDetails, request: _Score, count: int) -> list[Details]:
    return [collected.get(request.query, text) for text in request.texts[:count]]


def _call_source(item_sources: Sequence[RerankSource], partial: PartialScores | None) -> RerankSource:
    """Partial when the budget ended mid-scoring; the model's if it scored anything; otherwise the
    cache layers that answered, e.g. "cache:semantic"."""
    if partial is not None:
        scored = sum(source is not _UNSCORED for source in item_sources)
        return RerankSource(SourceKind.PARTIAL, f"{scored}/{len(item_sources)} scored in {partial.elapsed_s:.2f}s")
    if any(source.kind is SourceKind.MODEL for source in item_sources):
        return _MODEL_SOURCE
    return RerankSource(SourceKind.CACHE, "+".join(sorted({source.detail for source in item_sources})))


@dataclass(frozen=True, slots=True)
class _Call:
    query: str
    candidates: tuple[Candidate, ...]
    top_n: int | None
    started: float
    watch: CallWatch
    deadline: Deadline | None
    """The whole call's budget (`timeout_s`), started when the call was."""


@dataclass(frozen=True, slots=True)
class _Scored:
    """A score per candidate (None: the budget ended before the model reached it), where each
    came from, what the scorer said about the fresh ones (None: not scored now), and the partial
    outcome when there was one."""

    scores: list[float | None]
    sources: list[RerankSource]
    partial: PartialScores | None
    details: list[Details | None]

    @property
    def unjudged(self) -> bool:
        """Some candidate holds a placeholder score: the ranking must not be cached."""
        return _UNJUDGED_SOURCE in self.sources


def _within(deadline: Deadline | None) -> bool:
    """Whether a step may still start: no budget, or some of it left."""
    return deadline is None or not deadline.expired


def _honours_deadline(scorer: Scorer) -> bool:
    """Scorers that return by the deadline on their own (the local engine) need no watchdog thread."""
    return bool(getattr(scorer, "honours_deadline", False))


def _check_top_n(top_n: int | None) -> None:
    if top_n is not None:
        check_int("top_n", top_n)


def _describe(failure: Exception) -> str:
    """Short reason for `rerank_source`: the exception type (a redacted one's original type), never
    its message (may hold secrets)."""
    if isinstance(failure, (ScoringTimeout, ScoringShed)):
        return str(failure)
    return f"error {failure.kind if isinstance(failure, RedactedError) else type(failure).__name__}"


class Reranker:
    """Re-ranks retrieved candidates for a query; never fails because a backend failed.

    - `top_n`: how many results to keep (None: all). `score_threshold`: drop model/cache results
      whose relevance score is below it (not applied to fallback or gate-skipped results, whose
      scores are on another scale).
    - `fusion`: None for pure re-ranking, or `WeightedFusion` / `ReciprocalRankFusion`.
    - `gate`: a `ConfidenceGate` to skip the model when the retriever is already confident.
    - `result_cache` / `score_cache` / `semantic_cache`: exact-result, pair-score and semantic
      caches (any `CacheBackend`; `RedisCache` shares them between replicas). Their hit, miss and
      error counts appear in `metrics.snapshot()["cache"]`.
    - `timeout_s`: the budget of the whole call, from its start: cache reads and writes, the
      semantic cache's query embedding, scoring (retries included) and the fallback scorer all
      happen within it, each step getting what is left; a cache step that would start after it is
      skipped. A local cross-encoder scores candidates in retriever order in chunks: when the
      budget ends mid-way the scored ones are ranked by the model (and fusion), the rest follow in
      retriever order (`rerank_source` "partial:k/n scored in Xs"); when its engine cannot start
      the work in time the call falls back at once ("fallback:...: shed by the engine: ...").
    - `fallback_timeout_s`: the part of `timeout_s` kept for `fallback_scorer` (must be less than
      `timeout_s`): the primary scorer must finish `fallback_timeout_s` before the call's deadline,
      and the fallback gets what is left. None: nothing is kept back (the fallback runs with whatever
      the primary left, e.g. after a fast error, a shed or an open circuit). On timeout or error the
      call falls back to `fallback_scorer`, then to the retriever order.
    - `observers`: `rerank_prod.observability` exporters and monitors (Prometheus, OpenTelemetry,
      `RerankMonitor`) told about every call and each of its stages.
    """

    def __init__(
        self,
        scorer: Scorer,
        *,
        top_n: int | None = None,
        score_threshold: float | None = None,
        fusion: Fusion | None = None,
        gate: Gate | None = None,
        result_cache: ResultCache | None = None,
        score_cache: ScoreCache | None = None,
        semantic_cache: SemanticCache | None = None,
        timeout_s: float | None = None,
        fallback_scorer: Scorer | None = None,
        fallback_timeout_s: float | None = None,
        metrics: RerankMetrics | None = None,
        observers: Iterable[Observer] = (),
    ) -> None:
        for name, value, kind in (
            ("scorer", scorer, Scorer),
            ("fallback_scorer", fallback_scorer, Scorer),
            ("result_cache", result_cache, ResultCache),
            ("score_cache", score_cache, ScoreCache),
            ("semantic_cache", semantic_cache, SemanticCache),
            ("fusion", fusion, Fusion),
            ("gate", gate, Gate),
            ("metrics", metrics, RerankMetrics),
        ):
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        if scorer is None:
            raise TypeError("scorer is required")
        if not isinstance(observers, Iterable):
            raise TypeError(f"observers must be a sequence of Observer, got {type(observers).__name__}")
        self.observers = tuple(observers)
        for position, observer in enumerate(self.observers):
            if not isinstance(observer, Observer):
                raise TypeError(f"observers[{position}] must be an Observer, got {type(observer).__name__}")
        _check_top_n(top_n)
        for name, budget in (("timeout_s", timeout_s), ("fallback_timeout_s", fallback_timeout_s)):
            if budget is not None:
                check_number(name, budget)
        if fallback_timeout_s is not None and timeout_s is not None and fallback_timeout_s >= timeout_s:
            raise ValueError(
                f"fallback_timeout_s ({fallback_timeout_s:g}) must be less than timeout_s ({timeout_s:g}): "
                "it is the part of the call's one budget kept for the fallback scorer"
            )
        self.scorer = scorer
        self.top_n = top_n
        self.score_threshold = None if score_threshold is None else as_finite_float(score_threshold, "score_threshold")
        self.fusion = fusion
        self.gate = gate
        self.result_cache = result_cache
        self.score_cache = score_cache
        self.semantic_cache = semantic_cache
        self.timeout_s = timeout_s
        self.fallback_scorer = fallback_scorer
        self.fallback_timeout_s = fallback_timeout_s
        self.metrics = metrics if metrics is not None else RerankMetrics()
        for layer in (result_cache, score_cache, semantic_cache):
            if layer is not None:
                self.metrics.track_cache(layer.namespace, layer.stats)
        for backend in (scorer, fallback_scorer):
            if backend is not None and backend.circuit_breaker is not None:
                self.metrics.track_breaker(backend.name, backend.circuit_breaker)
            if isinstance(backend, ChunkedScorer):
                self.metrics.track_scorer(backend.name, backend)
        self._bound = tuple(observer.bind(self) for observer in self.observers)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._warnings = ThrottledLog(logger)  # one fallback warning per kind per 10 s, however many calls

    def __repr__(self) -> str:
        return (
            f"Reranker(scorer={self.scorer!r}, top_n={self.top_n}, fusion={self.fusion!r}, "
            f"gate={self.gate!r}, timeout_s={self.timeout_s})"
        )

    # --- public API ------------------------------------------------------------------------------

    def rerank(
        self,
        query: str,
        candidates: Iterable[Candidate | str],
        *,
        top_n: int | None = None,
        deadline: Deadline | None = None,
    ) -> RerankResult:
        """Re-rank `candidates` (retriever order, best first) for `query`.

        Returns a `RerankResult`: `items` best first (at most `top_n`, this call's value or the
        reranker's), each a `RankedCandidate` with `relevance_score` (final, highest first),
        `rerank_score` (raw model score, None when the model did not score it), `retrieval_score`,
        `original_rank` (0-based input position) and `source`; the call's `source` ("model",
        "cache...", "fallback:<why>", "skipped:<why>"), `latency_s` and the `gate` decision.

        Raises `TypeError` / `ValueError` for invalid input (a query that is not a non-empty str,
        a candidate that is not a `Candidate` or str, a bad `top_n`), before any work. Never raises
        because a backend failed or was slow: a scorer error or timeout falls back to
        `fallback_scorer`, then to retriever order, and a cache failure means no cache for the call.
        An empty candidate list gives an empty result.

        `timeout_s` bounds the whole call (caches, embedding, scoring, fallback; see the class
        docstring); when it ends mid-scoring the result is partial ("partial:k/n scored in Xs"): the
        scored candidates ranked by the model, the rest after them in retriever order, with
        `rerank_score` None. `deadline`: an outer budget this call is part of (e.g. one hop of a
        multi-hop retrieval); the call ends by the earlier of it and its own `timeout_s`. Inputs are
        never mutated.
        """
        call = self._start(query, candidates, top_n, deadline)
        with call.watch:
            return run(self._plan(call), call.watch.stage if self._bound else None)

    async def arerank(
        self,
        query: str,
        candidates: Iterable[Candidate | str],
        *,
        top_n: int | None = None,
        deadline: Deadline | None = None,
    ) -> RerankResult:
        """`rerank`, natively async: remote scorers and caches are awaited (no thread hop); a local
        model runs off the event loop. Same result, errors and budget as `rerank`."""
        call = self._start(query, candidates, top_n, deadline)
        return await self._arun(call)

    def rerank_many(
        self, requests: Iterable[tuple[str, Iterable[Candidate | str]]], *, top_n: int | None = None
    ) -> list[RerankResult]:
        """Re-rank many (query, candidates) at once; one `RerankResult` per request, in order.

        Every request is validated before any work (same errors as `rerank`), then all run
        concurrently so a local model's engine shares forward passes between them (one batch may
        hold several queries' pairs). Each request has its own `timeout_s`, starting now. Runs an
        event loop of its own (`asyncio.run`): inside a running loop, await `arerank_many`."""
        return asyncio.run(self._arun_many(self._start_many(requests, top_n)))

    async def arerank_many(
        self, requests: Iterable[tuple[str, Iterable[Candidate | str]]], *, top_n: int | None = None
    ) -> list[RerankResult]:
        """`rerank_many` for coroutines: the requests are awaited together on the caller's loop."""
        return await self._arun_many(self._start_many(requests, top_n))

    def _start_many(self, requests: Iterable[tuple[str, Iterable[Candidate | str]]], top_n: int | None) -> list[_Call]:
        if isinstance(cast(object, requests), (str, bytes)) or not isinstance(requests, Iterable):
            raise TypeError(f"requests must be an iterable of (query, candidates), got {type(requests).__name__}")
        calls = []
        for position, request in enumerate(requests):
            if not isinstance(request, tuple) or len(request) != 2:
                raise TypeError(f"request {position} must be a (query, candidates) tuple, got {type(request).__name__}")
            calls.append(self._start(request[0], request[1], top_n))
        return calls

    async def _arun_many(self, calls: list[_Call]) -> list[RerankResult]:
        return list(await asyncio.gather(*(self._arun(call) for call in calls)))

    async def _arun(self, call: _Call) -> RerankResult:
        with call.watch:
            return await arun(self._plan(call), call.watch.stage if self._bound else None)

    @property
    def cache_identity(self) -> str:
        """Everything besides query and candidates that changes a ranking."""
        return f"{self.scorer.identity}||{self.fusion.identity if self.fusion else 'pure'}"

    # --- the pipeline, written once ----------------------------------------------------------------

    def _start(
        self,
        query: str,
        candidates: Iterable[Candidate | str],
        top_n: int | None,
        outer: Deadline | None = None,
    ) -> _Call:
        started = time.perf_counter()
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if not query.strip():
            raise ValueError("query must be a non-empty string")
        if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Iterable):
            raise TypeError(f"candidates must be a sequence of Candidate or str, got {type(candidates).__name__}")
        items = []
        for position, item in enumerate(candidates):
            if isinstance(item, str):
                item = Candidate(text=item)
            elif not isinstance(item, Candidate):
                raise TypeError(f"candidate {position} must be a Candidate or str, got {type(item).__name__}")
            items.append(item)
        _check_top_n(top_n)
        chosen_top_n = self.top_n if top_n is None else top_n
        if outer is not None and not isinstance(outer, Deadline):
            raise TypeError(f"deadline must be a Deadline or None, got {type(outer).__name__}")
        deadline = None if self.timeout_s is None else Deadline.after(self.timeout_s)
        if outer is not None and (deadline is None or outer.expires_at < deadline.expires_at):
            deadline = outer
        watch = CallWatch(self._bound, len(items), chosen_top_n)
        return _Call(query, tuple(items), chosen_top_n, started, watch, deadline)

    def _plan(self, call: _Call) -> Plan[RerankResult]:
        if not call.candidates:
            return self._finish(call, [], RerankSource(SourceKind.SKIPPED, "no candidates"))
        results, result_key = self.result_cache, ""
        if results is not None:
            result_key = results.key(self.cache_identity, call.query, call.candidates)
            count = len(call.candidates)
            cached = yield from ask(
                effect("cache.result.read", results.get, results.aget, result_key, count, call.deadline)
            )
            if cached is not None:
                return self._finish(call, cached, RerankSource(SourceKind.CACHE))
        decision = None
        if self.gate is not None:
            with call.watch.stage("gate"):
                decision = self.gate.decide(call.candidates)
        if decision is not None and not decision.rerank:
            return self._finish(
                call,
                self._retriever_order(call),
                RerankSource(SourceKind.SKIPPED, f"gate: {decision.reason}"),
                decision,
            )
        try:
            scored = yield from self._scores(self.scorer, call, self._primary_deadline(call))
        except EffectFailed as failure:
            return (yield from self._fallback(call, failure.cause, decision))
        ranking = self._rank(call, scored.scores)
        if results is not None and scored.partial is None and not scored.unjudged and _within(call.deadline):
            yield from ask(effect("cache.result.write", results.put, results.aput, result_key, ranking, call.deadline))
        source = _call_source(scored.sources, scored.partial)
        return self._finish(call, ranking, source, decision, scored.sources, scored.details)

    def _primary_deadline(self, call: _Call) -> Deadline | None:
        """The call's deadline, less the part kept for the fallback scorer."""
        if call.deadline is None or self.fallback_scorer is None or self.fallback_timeout_s is None:
            return call.deadline
        return Deadline(call.deadline.expires_at - self.fallback_timeout_s)

    def _scores(self, scorer: Scorer, call: _Call, deadline: Deadline | None) -> Plan[_Scored]:
        """A score per candidate, and where each came from: the pair cache (exact query), the
        semantic cache (a near-identical query), or the model for whatever neither had. Cache steps
        that would start after `deadline` are skipped; a partial answer from the model leaves None
        for the candidates it did not reach."""
        texts = [c.text for c in call.candidates]
        # A score that depends on the other candidates (listwise LLM, top-n cut) is no pair score:
        # neither the pair cache nor the semantic cache may hold it.
        if not scorer.independent_scores:
            fresh = yield from self._score(_Score(scorer, call.query, texts, deadline))
            sources = [_UNJUDGED_SOURCE if UNJUDGED in d else _MODEL_SOURCE for d in fresh.details]
            return _Scored(list(fresh.scores), sources, None, list(fresh.details))
        scores: list[float | None] = [None] * len(texts)
        pair_keys: list[str] = []
        if self.score_cache is not None:
            pair_keys = self.score_cache.keys(scorer.identity, call.query, texts)
            if _within(deadline):
                pair_cache = self.score_cache
                read = effect("cache.score.read", pair_cache.get_many, pair_cache.aget_many, pair_keys, deadline)
                scores = yield from ask(read)
        sources = [_MODEL_SOURCE if score is None else _CACHED_PAIR for score in scores]
        unseen = [i for i, score in enumerate(scores) if score is None]
        semantic = None
        if self.semantic_cache is not None and unseen and _within(deadline):
            semantic = yield from self.semantic_cache.lookup_plan(
                scorer.identity, call.query, [texts[i] for i in unseen], deadline
            )
            for i, score in zip(unseen, semantic.scores, strict=True):
                if score is not None:
                    scores[i], sources[i] = score, _CACHED_SEMANTIC
        missing = [i for i, score in enumerate(scores) if score is None]
        partial = None
        details: list[Details | None] = [None] * len(texts)
        if missing:
            try:
                answer = yield from self._score(_Score(scorer, call.query, [texts[i] for i in missing], deadline))
                new_scores, new_details = answer.scores, answer.details
            except EffectFailed as failure:
                if not isinstance(failure.cause, PartialScores):
                    raise
                partial, new_scores, new_details = failure.cause, failure.cause.scores, failure.cause.details
            reached = missing if partial is None else missing[: len(new_scores)]
            for i, score in zip(reached, new_scores, strict=True):
                scores[i] = score
            for i, said in zip(reached, new_details, strict=False):
                details[i] = said
                if UNJUDGED in said:
                    sources[i] = _UNJUDGED_SOURCE  # a placeholder: ranked, never cached
            for i in missing[len(new_scores) :]:
                sources[i] = _UNSCORED
        scored_now = [i for i in missing if scores[i] is not None and sources[i] is _MODEL_SOURCE]
        if scored_now and self.score_cache is not None and _within(call.deadline):
            fresh_pairs = {pair_keys[i]: cast(float, scores[i]) for i in scored_now}
            pair_cache = self.score_cache
            yield from ask(
                effect("cache.score.write", pair_cache.put_many, pair_cache.aput_many, fresh_pairs, call.deadline)
            )
        if semantic is not None and self.semantic_cache is not None and _within(call.deadline):
            yield from self.semantic_cache.store_plan(
                scorer.identity,
                call.query,
                semantic,
                {texts[i]: cast(float, scores[i]) for i in unseen if sources[i] is _MODEL_SOURCE},
                call.deadline,
            )
        return _Scored(scores, sources, partial, details)

    def _fallback(self, call: _Call, failure: Exception, decision: GateDecision | None) -> Plan[RerankResult]:
        reason = _describe(failure)
        self._warnings.warning(
            f"{self.scorer.name}|{type(failure).__name__}",
            "re-ranking with %s failed (%s: %s); falling back",
            self.scorer.name,
            type(failure).__name__,
            redact(f"{failure}"),
        )
        if self.fallback_scorer is not None:
            secondary = self.fallback_scorer
            try:
                scored = yield from self._scores(secondary, call, call.deadline)
            except EffectFailed as secondary_failure:
                cause = secondary_failure.cause
                reason = f"{reason}; secondary {secondary.name}: {_describe(cause)}"
                self._warnings.warning(
                    f"{secondary.name}|{type(cause).__name__}|secondary",
                    "fallback scorer %s failed too: %s",
                    secondary.name,
                    redact(f"{cause}"),
                )
            else:
                how = "" if scored.partial is None else f"; secondary {scored.partial}"
                return self._finish(
                    call,
                    self._rank(call, scored.scores),
                    RerankSource(SourceKind.FALLBACK, f"secondary {secondary.name}: {reason}{how}"),
                    decision,
                    item_details=scored.details,
                )
        return self._finish(
            call, self._retriever_order(call), RerankSource(SourceKind.FALLBACK, f"retriever order: {reason}"), decision
        )

    def _rank(self, call: _Call, scores: Sequence[float | None]) -> list[RankingEntry]:
        """Scored candidates by relevance (fusion over them alone), then the unscored ones in
        retriever order, with relevance strictly below every scored one so 'highest first' holds."""
        scored = [i for i, score in enumerate(scores) if score is not None]
        model_scores = [cast(float, scores[i]) for i in scored]
        if self.fusion is None:
            relevance = model_scores
        else:
            with call.watch.stage("fusion"):
                relevance = self.fusion.fuse(call.query, [call.candidates[i] for i in scored], model_scores)
        order = sorted(range(len(scored)), key=lambda j: -relevance[j])  # stable: ties keep retriever order
        ranking: list[RankingEntry] = [(scored[j], float(relevance[j]), model_scores[j]) for j in order]
        floor = min((float(value) for value in relevance), default=1.0)
        unscored = [i for i, score in enumerate(scores) if score is None]
        ranking.extend((i, floor - (1 + rank), None) for rank, i in enumerate(unscored))
        return ranking

    @staticmethod
    def _retriever_order(call: _Call) -> list[RankingEntry]:
        """Input order is the retriever's order; scores derived from rank keep 'highest first' true."""
        return [(i, 1.0 / (1 + i), None) for i in range(len(call.candidates))]

    def _finish(
        self,
        call: _Call,
        ranking: Sequence[RankingEntry],
        source: RerankSource,
        decision: GateDecision | None = None,
        item_sources: Sequence[RerankSource] | None = None,
        item_details: Sequence[Details | None] | None = None,
    ) -> RerankResult:
        """`item_sources`: per candidate (by original rank) when they differ; else all get `source`.
        `item_details`: per candidate, what the scorer said about it when it scored it now."""
        threshold = self.score_threshold if source.kind in (SourceKind.MODEL, SourceKind.CACHE) else None
        items: list[RankedCandidate] = []
        for original_rank, relevance, rerank_score in ranking:
            if call.top_n is not None and len(items) == call.top_n:
                break
            if threshold is not None and relevance < threshold:
                continue
            items.append(
                RankedCandidate(
                    call.candidates[original_rank],
                    original_rank,
                    relevance,
                    rerank_score,
                    source if item_sources is None else item_sources[original_rank],
                    None if item_details is None else item_details[original_rank],
                )
            )
        result = RerankResult(call.query, tuple(items), source, time.perf_counter() - call.started, decision)
        self.metrics.record(result)
        call.watch.finish(Finished(result, ranking, item_sources))
        return result

    # --- performing the scoring I/O --------------------------------------------------------------

    def _score(self, request: _Score) -> Plan[_Fresh]:
        stage = "score" if request.scorer is self.scorer else "score.fallback"
        return ask(effect(stage, self._score_sync, self._score_async, request))

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(_SCORING_THREADS, "rerank-prod-score")
            return self._pool

    def _score_sync(self, request: _Score) -> _Fresh:
        with capture_score_details() as collected:
            try:
                raw = self._score_sync_raw(request)
            except PartialScores as partial:
                partial.details = list(map(dict, _details_of(collected, request, len(partial.scores))))
                raise
        scores = checked_scores(raw, len(request.texts), request.scorer.name)
        return _Fresh(scores, _details_of(collected, request, len(scores)))

    def _timeout_message(self, deadline: Deadline) -> str:
        """The budget that ran out: the call's own, or the outer one it was fitted into (`deadline=`)."""
        budget = deadline.budget_s if deadline.budget_s is not None else self.timeout_s
        return "timeout" if budget is None else f"timeout after {budget:g}s"

    def _score_sync_raw(self, request: _Score) -> Sequence[float]:
        if request.deadline is None or _honours_deadline(request.scorer):
            raw = request.scorer.score(request.query, request.texts, deadline=request.deadline)
        elif request.deadline.expired:
            raise ScoringTimeout(self._timeout_message(request.deadline))
        else:
            # The caller's context goes along, so scorer details (capture_score_details) reach the caller.
            future = self._executor().submit(
                contextvars.copy_context().run,
                functools.partial(request.scorer.score, request.query, request.texts, deadline=request.deadline),
            )
            try:
                raw = future.result(timeout=request.deadline.remaining())
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise ScoringTimeout(self._timeout_message(request.deadline)) from None
        return raw

    async def _score_async(self, request: _Score) -> _Fresh:
        with capture_score_details() as collected:
            try:
                raw = await self._score_async_raw(request)
            except PartialScores as partial:
                partial.details = list(map(dict, _details_of(collected, request, len(partial.scores))))
                raise
        scores = checked_scores(raw, len(request.texts), request.scorer.name)
        return _Fresh(scores, _details_of(collected, request, len(scores)))

    async def _score_async_raw(self, request: _Score) -> Sequence[float]:
        pending = request.scorer.ascore(request.query, request.texts, deadline=request.deadline)
        if request.deadline is None or _honours_deadline(request.scorer):
            raw = await pending
        else:
            try:
                raw = await asyncio.wait_for(pending, timeout=request.deadline.remaining())
            except (asyncio.TimeoutError, TimeoutError):
                raise ScoringTimeout(self._timeout_message(request.deadline)) from None
        return raw
