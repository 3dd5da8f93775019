"""Query expansion + re-ranking: variants of the query, candidates retrieved for each, merged and
de-duplicated, then re-ranked once against the original query.

One plan (`rerank_prod.effects`), sync or natively async, under one budget. An expander that fails,
hangs or answers garbage leaves the original query alone; a variant whose retrieval fails only loses
its own candidates. The result says what happened (`notes`, and `expansion` in every result's
metadata). Invalid configuration raises at construction; nothing raises later because a backend did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rerank_prod.deadline import Deadline
from rerank_prod.effects import EffectFailed, Plan, arun, ask, effect, run
from rerank_prod.pipeline import Reranker
from rerank_prod.redaction import redact
from rerank_prod.retrieval.llm import LLMQueryWriter
from rerank_prod.retrieval.merge import as_candidates, merge_ranked_lists
from rerank_prod.retrieval.multihop import AsyncRetriever, RetrievalCall, Retriever, rerank_within
from rerank_prod.retrieval.steps import Step, describe_failure, user_step
from rerank_prod.types import Candidate, RankedCandidate, RerankResult, RerankSource, SourceKind
from rerank_prod.validation import check_int, check_number

logger = logging.getLogger("rerank_prod")

Expander = Callable[[str], Sequence[str]]
"""query -> variants of it (or a coroutine function); the original query is added by the pipeline."""


@dataclass(frozen=True, slots=True)
class ExpandedCandidate(RankedCandidate):
    """A result of an expanded call: `original_rank` is the position in the merged list, and
    `retrieved_by` the queries that found it (0: the original query, i: variant i). `expansion` is
    the call's summary."""

    retrieved_by: tuple[int, ...] = (0,)
    expansion: str = ""

    def metadata(self) -> dict[str, Any]:
        """The shared result contract plus `retrieved_by` (a list) and `expansion`."""
        return {**RankedCandidate.metadata(self), "retrieved_by": list(self.retrieved_by), "expansion": self.expansion}


@dataclass(frozen=True, slots=True)
class ExpansionResult:
    """The re-ranked merged candidates, best first, the variants used, the re-rank itself, and notes
    on what degraded (empty when nothing did)."""

    query: str
    items: tuple[ExpandedCandidate, ...]
    variants: tuple[str, ...]
    rerank: RerankResult | None
    notes: tuple[str, ...]
    latency_s: float

    @property
    def summary(self) -> str:
        """E.g. "3 variants" or "0 variants; expander: error MalformedResponse"."""
        head = f"{len(self.variants)} variant{'' if len(self.variants) == 1 else 's'}"
        return "; ".join((head, *self.notes))

    @property
    def source(self) -> RerankSource:
        """The re-rank's source (model / partial / fallback ...), or "skipped:no candidates"."""
        return self.rerank.source if self.rerank is not None else RerankSource(SourceKind.SKIPPED, "no candidates")

    def __iter__(self) -> Iterator[ExpandedCandidate]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ExpandedCandidate:
        return self.items[index]


def expander_step(expander: Expander | LLMQueryWriter, count: int) -> Step[..., Sequence[str]]:
    """The expander as a step: an `LLMQueryWriter` asked for `count` variants, or a callable."""
    if isinstance(expander, LLMQueryWriter):
        writer = expander

        def sync(deadline: Deadline | None, query: str) -> list[str]:
            return writer.variants(query, count, deadline=deadline)

        async def asynchronous(deadline: Deadline | None, query: str) -> list[str]:
            return await writer.avariants(query, count, deadline=deadline)

        return Step("expander", sync, asynchronous)
    return user_step("expander", expander)


def checked_variants(query: str, answer: object, count: int) -> list[str]:
    """The expander's answer as distinct variants, the original query and repeats (ignoring case and
    white space) dropped, at most `count`. Not a sequence of strings: `TypeError`."""
    if isinstance(answer, (str, bytes)) or not isinstance(answer, Sequence):
        raise TypeError(f"the expander must return a sequence of str, got {type(answer).__name__}")
    seen = {" ".join(query.split()).casefold()}
    variants = []
    for position, value in enumerate(answer):
        if not isinstance(value, str):
            raise TypeError(f"the expander returned item {position} of type {type(value).__name__}, not str")
        variant = " ".join(value.split())
        if variant and variant.casefold() not in seen:
            seen.add(variant.casefold())
            variants.append(variant)
    return variants[:count]


class QueryExpansionReranker:
    """Query expansion over a `Reranker` and the user's retriever.

    `expander(query)` (a callable or an `LLMQueryWriter`) gives up to `variants` rewrites; the
    retriever runs for the original query (unless candidates are given) and every variant at once;
    the lists are merged rank by rank and de-duplicated by id (or text hash) (`merge.merge_ranked_lists`:
    a candidate keeps its first occurrence, retrieval score included), and the merged list is
    re-ranked once against the original query.

    `timeout_s` is the budget of the whole call: expansion, retrieval and the re-rank (capped by the
    reranker's own `timeout_s`) each get what is left. `retriever`/`expander` may be coroutine
    functions; `aretriever` adds a native async retriever for `arerank`.

    Raises `ValueError`/`TypeError` at construction for `variants` < 1, a non-positive budget, a
    reranker that is not a `Reranker`, or a retriever / expander that is not callable.
    """

    def __init__(
        self,
        reranker: Reranker,
        retriever: Retriever | AsyncRetriever,
        expander: Expander | LLMQueryWriter,
        *,
        variants: int = 3,
        timeout_s: float | None = None,
        top_n: int | None = None,
        aretriever: AsyncRetriever | None = None,
    ) -> None:
        if not isinstance(reranker, Reranker):
            raise TypeError(f"reranker must be a Reranker, got {type(reranker).__name__}")
        self.reranker = reranker
        self.variants = check_int("variants", variants)
        self.timeout_s = None if timeout_s is None else check_number("timeout_s", timeout_s)
        self.top_n = None if top_n is None else check_int("top_n", top_n)
        self._retrieve = user_step("retriever", retriever, aretriever)
        self._expand = expander_step(expander, self.variants)

    def __repr__(self) -> str:
        return f"QueryExpansionReranker(reranker={self.reranker!r}, variants={self.variants})"

    def rerank(
        self, query: str, candidates: Iterable[Candidate | str] | None = None, *, top_n: int | None = None
    ) -> ExpansionResult:
        """The merged candidates re-ranked against `query`, best first (at most `top_n`: this call's,
        the instance's, else the reranker's).

        Raises `TypeError`/`ValueError` for an invalid query, candidates or `top_n`, before any
        work. Never raises because the expander, the retriever or the scorer failed or was slow,
        and returns by the deadline (plus at most one scoring chunk): what failed is in `notes`.
        """
        return run(
            self._plan(RetrievalCall.start(query, candidates, top_n, (self.top_n, self.reranker.top_n), self.timeout_s))
        )

    async def arerank(
        self, query: str, candidates: Iterable[Candidate | str] | None = None, *, top_n: int | None = None
    ) -> ExpansionResult:
        """`rerank`, natively async; the retrievals are awaited together."""
        return await arun(
            self._plan(RetrievalCall.start(query, candidates, top_n, (self.top_n, self.reranker.top_n), self.timeout_s))
        )

    def _plan(self, call: RetrievalCall) -> Plan[ExpansionResult]:
        notes: list[str] = []
        variants: list[str] = []
        try:
            answer = yield from ask(effect("expand", self._expand.call, self._expand.acall, call.deadline, call.query))
            variants = checked_variants(call.query, answer, self.variants)
        except (EffectFailed, TypeError) as failure:
            notes.append(self._note("expander", failure))
        queries = ([] if call.candidates is not None else [call.query]) + variants
        step = self._retrieve
        outcomes = yield from ask(
            effect("retrieve", step.call_many, step.acall_many, call.deadline, [(q,) for q in queries])
        )
        lists: list[Sequence[Candidate]] = [] if call.candidates is None else [call.candidates]
        for outcome in outcomes:
            label = "original query" if not lists else f"variant {len(lists)}"  # list i: variant i
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                lists.append(as_candidates(outcome, "the retriever"))
            except Exception as failure:
                notes.append(self._note(f"retriever ({label})", failure))
                lists.append([])
        merged = merge_ranked_lists(lists)
        if not merged:
            return self._finish(call, variants, None, [], notes)
        candidates = [entry.candidate for entry in merged]
        result = yield from rerank_within(self.reranker, call.query, candidates, call.deadline)
        return self._finish(call, variants, result, [entry.retrieved_by for entry in merged], notes)

    @staticmethod
    def _note(what: str, failure: Exception) -> str:
        cause = failure.cause if isinstance(failure, EffectFailed) else failure
        logger.warning("query expansion: %s failed (%s: %s)", what, type(cause).__name__, redact(f"{cause}"))
        return f"{what}: {describe_failure(cause)}"

    def _finish(
        self,
        call: RetrievalCall,
        variants: list[str],
        result: RerankResult | None,
        retrieved_by: list[tuple[int, ...]],
        notes: list[str],
    ) -> ExpansionResult:
        summary = ExpansionResult(call.query, (), tuple(variants), result, tuple(notes), 0.0).summary
        ranked = [] if result is None else result.items[: call.top_n]
        items = tuple(
            ExpandedCandidate(
                item.candidate,
                item.original_rank,
                item.relevance_score,
                item.rerank_score,
                item.source,
                retrieved_by=retrieved_by[item.original_rank],
                expansion=summary,
            )
            for item in ranked
        )
        elapsed = time.perf_counter() - call.started
        return ExpansionResult(call.query, items, tuple(variants), result, tuple(notes), elapsed)
