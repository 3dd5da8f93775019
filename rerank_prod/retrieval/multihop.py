"""Multi-hop re-ranking: re-rank, write a follow-up query from the best results, retrieve and re-rank
again, and combine the hops with decaying weights.

The hops are one plan (`rerank_prod.effects`) run synchronously or natively async, under one budget.
A follow-up writer or retriever that fails, hangs or answers garbage ends the hops there: the result
holds the hops already done and says why it stopped (`stopped`, and `multihop` in every result's
metadata). Invalid configuration raises at construction; nothing raises later because a backend did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rerank_prod.deadline import Deadline
from rerank_prod.effects import EffectFailed, Plan, arun, ask, effect, run
from rerank_prod.pipeline import Reranker
from rerank_prod.redaction import redact
from rerank_prod.retrieval.llm import LLMQueryWriter
from rerank_prod.retrieval.merge import as_candidates, combine_hops, hop_weights
from rerank_prod.retrieval.steps import Step, describe_failure, user_step
from rerank_prod.types import Candidate, RankedCandidate, RerankResult, RerankSource, SourceKind
from rerank_prod.validation import check_int, check_number

logger = logging.getLogger("rerank_prod")

Retriever = Callable[[str], Iterable[Candidate | str]]
"""The user's retriever: query -> candidates, best first (a coroutine function works too)."""
AsyncRetriever = Callable[[str], Awaitable[Iterable[Candidate | str]]]
FollowUp = Callable[[str, Sequence[RankedCandidate]], str]
"""(original query, best results of the last hop) -> the next hop's query (or a coroutine function)."""


@dataclass(frozen=True, slots=True)
class Hop:
    """One hop that ran: its query (1: the user's), how many candidates it re-ranked, the re-rank."""

    number: int
    query: str
    result: RerankResult


@dataclass(frozen=True, slots=True)
class HopCandidate(RankedCandidate):
    """A result of a multi-hop call. `relevance_score` is the combined (weighted) score; the other
    scores, `original_rank` (position in that hop's retrieved list) and `source` come from `hop`,
    the hop (1-based) whose weighted score won. `multihop` is the call's summary."""

    hop: int = 1
    seen_in_hops: tuple[int, ...] = (1,)
    multihop: str = ""

    def metadata(self) -> dict[str, Any]:
        """The shared result contract plus `hop`, `seen_in_hops` (a list) and `multihop`."""
        return {
            **RankedCandidate.metadata(self),
            "hop": self.hop,
            "seen_in_hops": list(self.seen_in_hops),
            "multihop": self.multihop,
        }


@dataclass(frozen=True, slots=True)
class MultiHopResult:
    """The combined ranking, best first, and how the call went: the hops that ran, how many were
    planned, and why it stopped early (None when every hop ran)."""

    query: str
    items: tuple[HopCandidate, ...]
    hops: tuple[Hop, ...]
    planned_hops: int
    stopped: str | None
    latency_s: float

    @property
    def summary(self) -> str:
        """E.g. "2/2 hops" or "1/2 hops; stopped: follow-up: timeout after 0.40s"."""
        ran = f"{len(self.hops)}/{self.planned_hops} hops"
        return ran if self.stopped is None else f"{ran}; stopped: {self.stopped}"

    @property
    def source(self) -> RerankSource:
        """The first hop's re-rank source (model / partial / fallback ...): how trustworthy the base is."""
        return self.hops[0].result.source if self.hops else RerankSource(SourceKind.SKIPPED, "no candidates")

    def __iter__(self) -> Iterator[HopCandidate]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> HopCandidate:
        return self.items[index]


@dataclass(frozen=True, slots=True)
class RetrievalCall:
    """One multi-hop or expansion call, validated: its query, given candidates, `top_n` and budget."""

    query: str
    candidates: tuple[Candidate, ...] | None
    top_n: int | None
    started: float
    deadline: Deadline | None

    @classmethod
    def start(
        cls,
        query: str,
        candidates: Iterable[Candidate | str] | None,
        top_n: int | None,
        defaults: tuple[int | None, ...],
        timeout_s: float | None,
    ) -> RetrievalCall:
        """Validate before any work; `top_n` falls back to the first of `defaults` that is set."""
        started = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise (TypeError if not isinstance(query, str) else ValueError)(
                f"query must be a non-empty str, got {query!r}"
            )
        given = None if candidates is None else tuple(as_candidates(candidates, "candidates"))
        chosen = next((n for n in (top_n, *defaults) if n is not None), None)
        if chosen is not None:
            check_int("top_n", chosen)
        deadline = None if timeout_s is None else Deadline.after(timeout_s)
        return cls(query, given, chosen, started, deadline)


def follow_up_step(
    follow_up: FollowUp | LLMQueryWriter, afollow_up: Callable[..., Any] | None = None
) -> Step[..., str]:
    """The follow-up writer as a step: an `LLMQueryWriter` (its deadline-aware methods) or a callable."""
    if isinstance(follow_up, LLMQueryWriter):
        writer = follow_up

        def sync(deadline: Deadline | None, query: str, top: Sequence[RankedCandidate]) -> str:
            return writer.follow_up(query, top, deadline=deadline)

        async def asynchronous(deadline: Deadline | None, query: str, top: Sequence[RankedCandidate]) -> str:
            return await writer.afollow_up(query, top, deadline=deadline)

        return Step("follow-up", sync, asynchronous)
    return user_step("follow_up", follow_up, afollow_up)


def rerank_within(
    reranker: Reranker, query: str, candidates: Sequence[Candidate], deadline: Deadline | None
) -> Plan[RerankResult]:
    """Every candidate re-ranked (the selection happens after combining), by `deadline`. The
    reranker never raises for backend faults; anything it raises is a bug and propagates."""
    rerank = effect(
        "rerank", reranker.rerank, reranker.arerank, query, candidates, top_n=len(candidates), deadline=deadline
    )
    try:
        return (yield from ask(rerank))
    except EffectFailed as failure:
        raise failure.cause from None


def _checked_query(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"the follow-up writer must return a non-empty str, got {value!r:.80}")
    return " ".join(value.split())


class MultiHopReranker:
    """Multi-hop retrieval over a `Reranker` and the user's retriever.

    Hop 1 re-ranks the candidates given (or, without them, what `retriever(query)` returns). Each
    later hop asks `follow_up(query, best)` (the original query and the previous hop's best
    `context_k` results; a callable or an `LLMQueryWriter`) for a new query, retrieves with it,
    and re-ranks what came back against that query. Hops are combined by `merge.combine_hops`:
    each hop's scores min-max normalized, times its weight (`weights`, default `decay ** hop`:
    1.0, 0.5, ...), the max kept for a candidate found by several hops.

    `timeout_s` is the budget of the whole call: every re-rank (capped by the reranker's own
    `timeout_s`), follow-up and retrieval gets what is left. When a follow-up or retrieval fails,
    times out or returns nothing usable, or repeats an earlier hop's query, the hops stop there.
    `retriever`/`follow_up` may be coroutine functions; `aretriever` adds a native async retriever
    for `arerank` (e.g. a framework retriever's `ainvoke`).

    Raises `ValueError`/`TypeError` at construction for hops < 1, weights of the wrong length or
    not > 0, a non-positive budget, `context_k` < 1, a reranker that is not a `Reranker`, or a
    retriever / follow-up that is not callable.
    """

    def __init__(
        self,
        reranker: Reranker,
        retriever: Retriever | AsyncRetriever,
        follow_up: FollowUp | LLMQueryWriter,
        *,
        hops: int = 2,
        weights: Sequence[float] | None = None,
        decay: float = 0.5,
        context_k: int = 3,
        timeout_s: float | None = None,
        top_n: int | None = None,
        aretriever: AsyncRetriever | None = None,
    ) -> None:
        if not isinstance(reranker, Reranker):
            raise TypeError(f"reranker must be a Reranker, got {type(reranker).__name__}")
        self.reranker = reranker
        self.weights = hop_weights(hops, weights, decay)
        self.hops = hops
        self.context_k = check_int("context_k", context_k)
        self.timeout_s = None if timeout_s is None else check_number("timeout_s", timeout_s)
        self.top_n = None if top_n is None else check_int("top_n", top_n)
        self._retrieve = user_step("retriever", retriever, aretriever)
        self._follow_up = follow_up_step(follow_up)

    def __repr__(self) -> str:
        return f"MultiHopReranker(reranker={self.reranker!r}, hops={self.hops}, weights={self.weights})"

    def rerank(
        self, query: str, candidates: Iterable[Candidate | str] | None = None, *, top_n: int | None = None
    ) -> MultiHopResult:
        """The combined ranking of every hop, best first (at most `top_n`: this call's, the
        instance's, else the reranker's; all when none is set).

        Raises `TypeError`/`ValueError` for an invalid query, candidates or `top_n`, before any
        work. Never raises because the retriever, the follow-up writer or the scorer failed or was
        slow, and returns by the deadline (plus at most one scoring chunk): it stops and says why
        in `stopped`. With no candidates and a failing first retrieval the result is empty.
        """
        return run(
            self._plan(RetrievalCall.start(query, candidates, top_n, (self.top_n, self.reranker.top_n), self.timeout_s))
        )

    async def arerank(
        self, query: str, candidates: Iterable[Candidate | str] | None = None, *, top_n: int | None = None
    ) -> MultiHopResult:
        """`rerank`, natively async (the reranker's `arerank`, async retrievers and writers awaited)."""
        return await arun(
            self._plan(RetrievalCall.start(query, candidates, top_n, (self.top_n, self.reranker.top_n), self.timeout_s))
        )

    def _plan(self, call: RetrievalCall) -> Plan[MultiHopResult]:
        hops: list[Hop] = []
        stopped: str | None = None
        hop_query = call.query
        candidates = call.candidates
        for number in range(1, self.hops + 1):
            if number > 1:
                if call.deadline is not None and call.deadline.expired:
                    stopped = "budget spent"
                    break
                best = hops[-1].result.items[: self.context_k]
                step = self._follow_up
                try:
                    written = yield from ask(
                        effect("follow_up", step.call, step.acall, call.deadline, call.query, best)
                    )
                    hop_query = _checked_query(written)
                except (EffectFailed, ValueError) as failure:
                    stopped = self._stop("follow-up", failure)
                    break
                if hop_query.casefold() in {hop.query.casefold() for hop in hops}:
                    stopped = "follow-up repeats an earlier query"
                    break
            if candidates is None:
                try:
                    retrieved = yield from ask(
                        effect("retrieve", self._retrieve.call, self._retrieve.acall, call.deadline, hop_query)
                    )
                    candidates = tuple(as_candidates(retrieved, "the retriever"))
                except (EffectFailed, TypeError) as failure:
                    stopped = self._stop(f"retriever (hop {number})", failure)
                    break
            if not candidates:
                stopped = f"no candidates for hop {number}"
                break
            result = yield from rerank_within(self.reranker, hop_query, candidates, call.deadline)
            hops.append(Hop(number, hop_query, result))
            candidates = None
        return self._finish(call, hops, stopped)

    @staticmethod
    def _stop(what: str, failure: Exception) -> str:
        cause = failure.cause if isinstance(failure, EffectFailed) else failure
        logger.warning(
            "multi-hop %s failed (%s: %s); stopping with the hops done", what, type(cause).__name__, redact(f"{cause}")
        )
        return f"{what}: {describe_failure(cause)}"

    def _finish(self, call: RetrievalCall, hops: list[Hop], stopped: str | None) -> MultiHopResult:
        summary = MultiHopResult(call.query, (), tuple(hops), self.hops, stopped, 0.0).summary
        combined = combine_hops([hop.result.items for hop in hops], self.weights)
        items = tuple(
            HopCandidate(
                entry.item.candidate,
                entry.item.original_rank,
                entry.score,
                entry.item.rerank_score,
                entry.item.source,
                hop=entry.hop + 1,
                seen_in_hops=tuple(hop + 1 for hop in entry.seen_in),
                multihop=summary,
            )
            for entry in combined[: call.top_n]
        )
        return MultiHopResult(call.query, items, tuple(hops), self.hops, stopped, time.perf_counter() - call.started)
