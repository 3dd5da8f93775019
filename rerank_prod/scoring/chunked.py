"""Long documents: score overlapping windows of a text and aggregate, instead of letting the model
cut it at its length limit.

A cross-encoder sees `[CLS] query [SEP] passage [SEP]` cut at `max_seq_length` tokens (256 for
MiniLM): whatever follows is never read, so an answer at the end of a long passage scores as if it
were absent. `ChunkedScorer` wraps any scorer: each text longer than one window becomes overlapping
windows, every window is scored in one batched call to the wrapped scorer, and the text's score is
the max over its windows (or the first, or the mean).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rerank_prod.deadline import Deadline
from rerank_prod.errors import PartialScores
from rerank_prod.scoring.base import Scorer, checked_scores
from rerank_prod.scoring.details import UNJUDGED, ScoreDetails, capture_score_details, record_score_details
from rerank_prod.validation import check_int

if TYPE_CHECKING:
    from rerank_prod.resilience import CircuitBreaker

Aggregate = Literal["max", "first", "mean"]
AGGREGATES: tuple[str, ...] = ("max", "first", "mean")
Span = tuple[int, int]
_WORD = re.compile(r"\S+")
DEFAULT_OVERLAP_TOKENS = 64
MIN_WINDOW_TOKENS = 16
"""Below this a window holds too little passage to judge; a query so long that it leaves less gets this."""


def word_spans(text: str) -> list[Span]:
    """Character spans of white-space separated words: the unit for scorers without a tokenizer."""
    return [match.span() for match in _WORD.finditer(text)]


def window_starts(count: int, window: int, overlap: int) -> list[int]:
    """Start offsets of windows of `window` units over `count` units, each overlapping the previous
    by `overlap`; the last window ends at the last unit (so it may overlap more)."""
    if count <= window:
        return [0]
    step = window - overlap
    starts = list(range(0, count - window, step))
    return [*starts, count - window]


class _TokenizerUnits:
    """Token spans from a Hugging Face tokenizer (offset mapping), and how many tokens a pair
    template and a query take, so windows fill the model's input exactly."""

    def __init__(self, tokenizer: Any, max_length: int | None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.name = type(tokenizer).__name__

    def spans(self, text: str) -> list[Span]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(start), int(end)) for start, end in encoded["offset_mapping"]]

    def window_for(self, query: str) -> int | None:
        if self.max_length is None:
            return None
        query_tokens = len(self.tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])
        reserved = int(self.tokenizer.num_special_tokens_to_add(pair=True)) + query_tokens
        return max(MIN_WINDOW_TOKENS, self.max_length - reserved)


def _model_tokenizer(scorer: Scorer) -> tuple[Any, int | None] | None:
    """The tokenizer and length cap of a local scorer: its own (`CrossEncoderScorer`, also when its
    model runs in a model process), else its loaded sentence-transformers model's; None without one."""
    for holder in (scorer, getattr(scorer, "model", None) or getattr(scorer, "_model", None)):
        tokenizer = getattr(holder, "tokenizer", None)
        if callable(tokenizer):
            max_length = getattr(holder, "max_seq_length", None)
            return tokenizer, max_length if isinstance(max_length, int) else None
    return None


@dataclass(frozen=True, slots=True)
class _Windows:
    """One text's windows in the flattened batch: `scored` of its `total` windows, from `first`."""

    first: int
    scored: int
    total: int


@dataclass
class ChunkingStats:
    """Counters since construction: texts seen, texts split into windows, windows scored, and texts
    whose end was not scored (cut by `max_chunks`, or `aggregate="first"`)."""

    texts: int = 0
    chunked: int = 0
    chunks: int = 0
    truncated: int = 0


class ChunkedScorer:
    """Wraps a scorer so long texts are scored as overlapping windows; a text's score is the
    `aggregate` ("max" by default, "first", "mean") of its windows' scores.

    - Units: the wrapped model's own tokenizer when it has one (the local cross-encoder), else
      `tokenizer=` (any Hugging Face tokenizer), else words (remote scorers: `window_tokens` then
      counts words, e.g. 150 words for a 256-token model).
    - `window_tokens`: passage units per window. With the model's tokenizer it defaults to what fits
      beside the query (`max_seq_length` minus the query and special tokens), so no window is cut.
    - `overlap_tokens` (default: a third of the window, at most 64): units shared by consecutive
      windows, so a sentence across a boundary is whole in one of them.
    - `max_chunks` (default 16): windows per text at most; what lies beyond is not scored and the
      text counts as truncated.
    - A text that fits one window is passed through unchanged: its score equals the wrapped scorer's.
    - Cost: one wrapped-scorer call per rerank call, on as many windows as the texts need.
    - Visibility: `stats()` (also in `reranker.metrics.snapshot()["scorers"]`), per pair
      `{"chunks": n, "chunks_scored": m, "best_chunk": i, "truncated": bool}` through
      `capture_score_details()` (a text that fits: 1, 1, 0, False), and in the result metadata
      (`rerank_chunks`, `rerank_best_chunk`, `rerank_truncated`).
    - A window the wrapped scorer could not judge (an LLM's unusable answer, `UNJUDGED` in its
      details) does not count; a text with no judged window keeps the placeholder and is marked
      unjudged too, so the pipeline does not cache it.
    - A wrapped scorer's partial answer (the budget ended mid-way) becomes a partial answer for
      the texts whose windows were all scored.
    """

    def __init__(
        self,
        inner: Scorer,
        *,
        window_tokens: int | None = None,
        overlap_tokens: int | None = None,
        aggregate: Aggregate = "max",
        max_chunks: int = 16,
        tokenizer: Any = None,
    ) -> None:
        if not isinstance(inner, Scorer):
            raise TypeError(f"inner must be a Scorer, got {type(inner).__name__}")
        if window_tokens is not None:
            check_int("window_tokens", window_tokens, minimum=MIN_WINDOW_TOKENS)
        if overlap_tokens is not None:
            check_int("overlap_tokens", overlap_tokens, minimum=0)
        if window_tokens is not None and overlap_tokens is not None and overlap_tokens >= window_tokens:
            raise ValueError(f"overlap_tokens ({overlap_tokens}) must be smaller than window_tokens ({window_tokens})")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        check_int("max_chunks", max_chunks)
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        own = _model_tokenizer(inner) if tokenizer is None else None
        if own is not None:
            self._units: _TokenizerUnits | None = _TokenizerUnits(*own)
        else:
            self._units = None if tokenizer is None else _TokenizerUnits(tokenizer, None)
        if window_tokens is None and (self._units is None or self._units.max_length is None):
            raise ValueError(
                f"window_tokens is required for {inner.name}: only a scorer with its own tokenizer and length "
                "limit (the local cross-encoder) sizes its windows itself"
            )
        self.inner = inner
        self.window_tokens = window_tokens
        self.overlap_tokens = overlap_tokens
        self.aggregate = aggregate
        self.max_chunks = max_chunks
        self._stats = ChunkingStats()
        self._lock = threading.Lock()

    # --- the Scorer protocol -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def identity(self) -> str:
        unit = "words" if self._units is None else f"tokens:{self._units.name}"
        window = "auto" if self.window_tokens is None else self.window_tokens
        overlap = "auto" if self.overlap_tokens is None else self.overlap_tokens
        return (
            f"chunked(window={window},overlap={overlap},aggregate={self.aggregate},"
            f"max_chunks={self.max_chunks},unit={unit})|{self.inner.identity}"
        )

    @property
    def independent_scores(self) -> bool:
        return self.inner.independent_scores

    @property
    def circuit_breaker(self) -> CircuitBreaker | None:
        return self.inner.circuit_breaker

    @property
    def honours_deadline(self) -> bool:
        """As the wrapped scorer: the pipeline needs no watchdog thread around a local engine."""
        return bool(getattr(self.inner, "honours_deadline", False))

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        windows, owners = self._windows(query, texts)
        with capture_score_details() as said:
            try:
                scores = self.inner.score(query, windows, deadline=deadline) if windows else []
            except PartialScores as partial:
                raise self._partial(query, texts, windows, owners, partial, said) from None
        return self._aggregate(query, texts, windows, owners, scores, said)

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        windows, owners = self._windows(query, texts)
        with capture_score_details() as said:
            try:
                scores = await self.inner.ascore(query, windows, deadline=deadline) if windows else []
            except PartialScores as partial:
                raise self._partial(query, texts, windows, owners, partial, said) from None
        return self._aggregate(query, texts, windows, owners, scores, said)

    def stats(self) -> dict[str, int]:
        """`ChunkingStats` as a dict: texts, chunked, chunks, truncated."""
        with self._lock:
            return dict(vars(self._stats))

    snapshot = stats  # what `RerankMetrics` reads

    def __repr__(self) -> str:
        return (
            f"ChunkedScorer({self.inner!r}, window_tokens={self.window_tokens}, "
            f"overlap_tokens={self.overlap_tokens}, aggregate={self.aggregate!r})"
        )

    # --- windows -----------------------------------------------------------------------------------

    def _window_size(self, query: str) -> int:
        fits = None if self._units is None else self._units.window_for(query)
        if self.window_tokens is None:
            return fits  # type: ignore[return-value]  # the constructor ensures a model tokenizer here
        return self.window_tokens if fits is None else min(self.window_tokens, fits)

    def _windows(self, query: str, texts: Sequence[str]) -> tuple[list[str], list[_Windows]]:
        """Every text's windows to score, flattened, and for each text where its windows are."""
        window = self._window_size(query)
        overlap = min(DEFAULT_OVERLAP_TOKENS, window // 3) if self.overlap_tokens is None else self.overlap_tokens
        overlap = min(overlap, window // 2)  # an auto-sized window can be small beside a long query
        flat: list[str] = []
        owners: list[_Windows] = []
        chunked = truncated = 0
        for text in texts:
            spans = word_spans(text) if self._units is None else self._units.spans(text)
            starts = window_starts(len(spans), window, overlap)
            kept = starts[:1] if self.aggregate == "first" else starts[: self.max_chunks]
            if len(starts) > 1:
                chunked += 1
                truncated += len(kept) < len(starts)
            if len(starts) == 1:
                owners.append(_Windows(len(flat), 1, 1))
                flat.append(text)
                continue
            owners.append(_Windows(len(flat), len(kept), len(starts)))
            flat += [text[spans[start][0] : spans[min(start + window, len(spans)) - 1][1]] for start in kept]
        with self._lock:
            self._stats.texts += len(texts)
            self._stats.chunked += chunked
            self._stats.truncated += truncated
            self._stats.chunks += len(flat)
        return flat, owners

    def _partial(
        self,
        query: str,
        texts: Sequence[str],
        windows: Sequence[str],
        owners: Sequence[_Windows],
        partial: PartialScores,
        said: ScoreDetails,
    ) -> PartialScores:
        """The inner partial answer in texts: the leading texts whose windows were all scored."""
        done = 0
        while done < len(owners) and owners[done].first + owners[done].scored <= len(partial.scores):
            done += 1
        reached = owners[:done]
        scores = self._aggregate(
            query, texts[:done], windows, reached, partial.scores[: sum(o.scored for o in reached)], said
        )
        return PartialScores(scores, len(texts), partial.elapsed_s)

    def _aggregate(
        self,
        query: str,
        texts: Sequence[str],
        windows: Sequence[str],
        owners: Sequence[_Windows],
        scores: Sequence[float],
        said: ScoreDetails,
    ) -> list[float]:
        window_scores = checked_scores(scores, sum(owner.scored for owner in owners), self.inner.name)
        results = []
        for text, owner in zip(texts, owners, strict=True):
            mine = window_scores[owner.first : owner.first + owner.scored]
            if owner.total == 1:
                results.append(mine[0])  # passed through unchanged: the inner scorer's details are the text's
                record_score_details(query, text, chunks=1, chunks_scored=1, best_chunk=0, truncated=False)
                continue
            spans = range(owner.first, owner.first + owner.scored)
            judged = [j for j, w in enumerate(spans) if UNJUDGED not in said.get(query, windows[w])]
            if not judged:
                record_score_details(query, text, **{UNJUDGED: "no window of the text could be judged"})
                judged = list(range(len(mine)))
            values = [mine[j] for j in judged]
            results.append(sum(values) / len(values) if self.aggregate == "mean" else max(values))  # "first": one
            record_score_details(
                query,
                text,
                chunks=owner.total,
                chunks_scored=owner.scored,
                best_chunk=max(judged, key=mine.__getitem__),
                truncated=owner.scored < owner.total,
            )
        return results
