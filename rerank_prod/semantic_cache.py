"""Semantic cache: a query close enough to a cached one reuses that query's scores.

Each cached query is an *anchor*: its unit-length embedding lives in a bounded in-process index
(one matrix-vector product per lookup), and its scores live in the cache backend keyed by
(scorer identity, anchor digest, passage). A new query within the cosine threshold of an anchor
reuses the anchor's scores for the passages both share; passages the anchor has not seen are
scored and added to it. When the backend is an `EntryLog` (Redis), anchors are published to a
capped log that every replica pulls from, so replicas share them. Index and keys are namespaced
by the embedder's and the scorer's identity: a model change starts from an empty index.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from rerank_prod.cache import KEY_PREFIX, CacheBackend, EntryLog, ScoreCache, check_ttl, digest
from rerank_prod.cache_guard import CacheSkipped
from rerank_prod.deadline import Deadline
from rerank_prod.effects import EffectFailed, Plan, ask, effect
from rerank_prod.scoring.dependencies import load_sentence_transformers_model
from rerank_prod.scoring.precision import Precision, check_precision
from rerank_prod.validation import check_int, check_number

logger = logging.getLogger("rerank_prod.cache")

Embedder = Callable[[str], Any]
"""Any callable from a query to a 1-D vector (list, tuple or numpy array)."""

_ANCHOR_CHARS = 64  # a SHA-256 hex digest
_VECTOR_DTYPE = np.dtype("<f4")
_LOG_PAGE = 1000


class EmbeddingMismatch(ValueError):
    """A vector of another size than the index holds: the embedder changed without a new identity."""


class VectorIndex:
    """Bounded nearest-neighbour index over unit vectors: one matrix-vector product per lookup;
    when full, the least recently matched entry makes room. Not thread-safe on its own."""

    def __init__(self, dim: int, max_entries: int) -> None:
        self.dim = dim
        self.max_entries = max_entries
        capacity = min(max_entries, 1024)
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._last_used = np.zeros(capacity, dtype=np.int64)
        self._ids: list[str] = []
        self._slots: dict[str, int] = {}
        self._clock = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._slots

    def _check_dim(self, vector: np.ndarray) -> None:
        if vector.shape != (self.dim,):
            raise EmbeddingMismatch(f"embedding has shape {vector.shape}, the index holds {self.dim}-d vectors")

    def _touch(self, slot: int) -> None:
        self._clock += 1
        self._last_used[slot] = self._clock

    def _free_slot(self) -> int:
        size = len(self._ids)
        if size < self.max_entries:
            if size == len(self._vectors):
                capacity = min(2 * size, self.max_entries)
                self._vectors = np.resize(self._vectors, (capacity, self.dim))
                self._last_used = np.resize(self._last_used, capacity)
            self._ids.append("")
            return size
        slot = int(np.argmin(self._last_used))
        del self._slots[self._ids[slot]]
        return slot

    def add(self, entry_id: str, vector: np.ndarray) -> None:
        self._check_dim(vector)
        if entry_id in self._slots:
            return
        slot = self._free_slot()
        self._ids[slot] = entry_id
        self._slots[entry_id] = slot
        self._vectors[slot] = vector
        self._touch(slot)

    def nearest(self, vector: np.ndarray, threshold: float) -> tuple[str, float] | None:
        """The most similar entry if its cosine similarity reaches `threshold`."""
        self._check_dim(vector)
        if not self._ids:
            return None
        similarities = self._vectors[: len(self._ids)] @ vector
        slot = int(np.argmax(similarities))
        if similarities[slot] < threshold:
            return None
        self._touch(slot)
        return self._ids[slot], float(similarities[slot])


class _AnchoredScores(ScoreCache):
    """Pair scores keyed by an anchor's digest instead of the query text."""

    namespace = "semantic"


@dataclass(frozen=True, slots=True)
class SemanticLookup:
    """What one lookup found: the query's unit embedding (None when embedding failed), the anchor
    it matched (None on a miss) and the anchor's score for each asked-for text (None: unseen)."""

    vector: np.ndarray | None
    anchor: str | None
    similarity: float | None
    scores: list[float | None]


def _unit_vector(raw: Any) -> np.ndarray:
    vector = np.asarray(raw, dtype=np.float32)
    if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
        raise ValueError(f"the embedder must return one finite 1-D vector, got shape {vector.shape}")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise ValueError("the embedder returned a zero vector")
    return vector / norm


class SemanticCache:
    """Reuses the scores of a cached query whose embedding is within `threshold` cosine similarity.

    - `backend`: where anchor scores live; with `RedisCache` the anchors are shared by replicas too.
    - `embedder`: a sentence-transformers model name or path (loaded once), or any callable
      query -> vector together with `embedder_identity`, a name that changes whenever its vectors do.
    - `threshold`: minimum cosine similarity for a hit (0.95: paraphrases, not related questions).
    - `max_entries`: bound of the local index (least recently matched evicted) and of the shared log.
    - `ttl_s`: lifetime of anchor scores in the backend (None: the backend's default).
    - `sync_interval_s`: how often a lookup pulls the anchors other replicas published.
    - `precision`: of a model named as `embedder` (see `CrossEncoderScorer`); part of its identity.

    `stats` counts per candidate: a hit is a score reused from a near-identical query.
    """

    namespace = "semantic"

    def __init__(
        self,
        backend: CacheBackend,
        embedder: str | Embedder,
        *,
        embedder_identity: str | None = None,
        threshold: float = 0.95,
        max_entries: int = 10_000,
        ttl_s: float | None = None,
        sync_interval_s: float = 1.0,
        device: str | None = None,
        precision: Precision = "auto",
    ) -> None:
        check_number("threshold (a cosine similarity)", threshold, at_most=1)
        check_int("max_entries", max_entries)
        check_number("sync_interval_s", sync_interval_s, allow_zero=True)
        check_ttl(ttl_s)
        self._scores = _AnchoredScores(backend, ttl_s)
        if isinstance(embedder, str):
            if not embedder.strip():
                raise ValueError("embedder must be a model name/path or a callable")
            model, chosen = load_sentence_transformers_model(
                "SentenceTransformer",
                embedder,
                device=device,
                needed_by="a model name as embedder",
                extra="semantic-cache",
                precision=check_precision(precision),
            )
            self._embed: Embedder = functools.partial(model.encode, convert_to_numpy=True, show_progress_bar=False)
            precision_tag = "" if chosen == "fp32" else f"|precision={chosen}"
            embedder_identity = embedder_identity or f"sentence-transformers:{embedder}{precision_tag}"
        elif callable(embedder):
            if not isinstance(embedder_identity, str) or not embedder_identity.strip():
                raise ValueError("a callable embedder needs embedder_identity (a name that changes with its vectors)")
            self._embed = embedder
        else:
            raise TypeError(f"embedder must be a model name/path or a callable, got {type(embedder).__name__}")
        self.backend = backend
        self.embedder_identity = embedder_identity
        self.threshold = float(threshold)
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.sync_interval_s = float(sync_interval_s)
        self.stats = self._scores.stats
        self._indexes: dict[str, VectorIndex] = {}
        self._cursors: dict[str, str | None] = {}
        self._pulled_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"SemanticCache(embedder={self.embedder_identity!r}, threshold={self.threshold}, "
            f"max_entries={self.max_entries}, backend={self.backend!r})"
        )

    # --- the embedder, sync and off the event loop ----------------------------------------------

    def embed(self, query: str) -> np.ndarray:
        return _unit_vector(self._embed(query))

    async def aembed(self, query: str) -> np.ndarray:
        """Embedding is CPU-bound model inference: run it off the event loop."""
        return await asyncio.to_thread(self.embed, query)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(index) for index in self._indexes.values())

    # --- the logic, written once as plans (run them with `rerank_prod.effects.run` / `arun`) ---------

    def lookup_plan(
        self, scorer_identity: str, query: str, texts: Sequence[str], deadline: Deadline | None = None
    ) -> Plan[SemanticLookup]:
        """Embed the query, pull other replicas' anchors, find the nearest, read its scores.
        Any failure makes this a miss for this call (logged and counted), never an error; backend
        I/O is bounded like every cache layer's (`timeout_s` of the layer, and `deadline`)."""
        log = self._log_name(scorer_identity)
        yield from self._pull_plan(log, deadline)
        try:
            vector = yield from ask(effect("cache.semantic.embed", self.embed, self.aembed, query))
        except EffectFailed as failure:
            self._failed("lookup", failure.cause)
            return SemanticLookup(None, None, None, [None] * len(texts))
        try:
            with self._lock:
                index = self._indexes.get(log)
                match = index.nearest(vector, self.threshold) if index is not None else None
        except EmbeddingMismatch as exc:  # the embedder's vectors changed size: its identity should have too
            self._failed("lookup", exc)
            return SemanticLookup(None, None, None, [None] * len(texts))
        if match is None:
            self.stats.record(misses=len(texts))
            return SemanticLookup(vector, None, None, [None] * len(texts))
        anchor, similarity = match
        keys = self._scores.keys(scorer_identity, anchor, texts)
        scores = yield from ask(
            effect("cache.semantic.read", self._scores.get_many, self._scores.aget_many, keys, deadline)
        )
        return SemanticLookup(vector, anchor, similarity, scores)

    def store_plan(
        self,
        scorer_identity: str,
        query: str,
        lookup: SemanticLookup,
        scores: Mapping[str, float],
        deadline: Deadline | None = None,
    ) -> Plan[None]:
        """Add `scores` (text -> score) to the matched anchor, or make this query a new anchor."""
        if lookup.vector is None or not scores:
            return
        anchor = lookup.anchor or digest(self.embedder_identity, scorer_identity, query)
        keys = self._scores.keys(scorer_identity, anchor, list(scores))
        anchored = dict(zip(keys, scores.values(), strict=True))
        yield from ask(
            effect("cache.semantic.write", self._scores.put_many, self._scores.aput_many, anchored, deadline)
        )
        if lookup.anchor is not None:
            return
        log = self._log_name(scorer_identity)
        try:
            with self._lock:
                self._index(log, lookup.vector.size).add(anchor, lookup.vector)
        except EmbeddingMismatch as exc:
            self._failed("publish", exc)
            return
        if isinstance(self.backend, EntryLog):
            entry = anchor.encode("ascii") + lookup.vector.astype(_VECTOR_DTYPE).tobytes()
            try:
                yield from ask(effect("cache.semantic.publish", self._publish, self._apublish, log, entry, deadline))
            except EffectFailed as failure:
                self._failed("publish", failure.cause)

    def _pull_plan(self, log: str, deadline: Deadline | None) -> Plan[None]:
        """Catch up with the anchors published since this replica's cursor, at most once per interval."""
        if not isinstance(self.backend, EntryLog):
            return
        with self._lock:
            now = time.monotonic()
            if now - self._pulled_at.get(log, -np.inf) < self.sync_interval_s:
                return
            self._pulled_at[log] = now
            cursor = self._cursors.get(log)
        while True:
            try:
                cursor, entries = yield from ask(
                    effect("cache.semantic.sync", self._read_log, self._aread_log, log, cursor, deadline)
                )
            except EffectFailed as failure:
                self._failed("index sync", failure.cause)
                return
            self._merge(log, cursor, entries)
            if len(entries) < _LOG_PAGE:
                return

    # --- the shared log's I/O, bounded by the backend's guard ----------------------------------------

    def _publish(self, log: str, entry: bytes, deadline: Deadline | None) -> None:
        shared = cast(EntryLog, self.backend)
        append = functools.partial(shared.append_log, log, [entry], self.max_entries, self.ttl_s)
        self._scores._guard.call(append, self._scores.timeout_s, deadline)

    async def _apublish(self, log: str, entry: bytes, deadline: Deadline | None) -> None:
        shared = cast(EntryLog, self.backend)
        append = functools.partial(shared.aappend_log, log, [entry], self.max_entries, self.ttl_s)
        await self._scores._guard.acall(append, self._scores.timeout_s, deadline)

    def _read_log(self, log: str, cursor: str | None, deadline: Deadline | None) -> tuple[str | None, list[bytes]]:
        shared = cast(EntryLog, self.backend)
        read = functools.partial(shared.read_log, log, cursor, _LOG_PAGE)
        return self._scores._guard.call(read, self._scores.timeout_s, deadline)

    async def _aread_log(
        self, log: str, cursor: str | None, deadline: Deadline | None
    ) -> tuple[str | None, list[bytes]]:
        shared = cast(EntryLog, self.backend)
        read = functools.partial(shared.aread_log, log, cursor, _LOG_PAGE)
        return await self._scores._guard.acall(read, self._scores.timeout_s, deadline)

    # --- helpers ----------------------------------------------------------------------------------

    def _log_name(self, scorer_identity: str) -> str:
        return f"{KEY_PREFIX}:semantic-index:{digest(self.embedder_identity, scorer_identity)}"

    def _index(self, log: str, dim: int) -> VectorIndex:
        index = self._indexes.get(log)
        if index is None:
            index = self._indexes[log] = VectorIndex(dim, self.max_entries)
        return index

    def _merge(self, log: str, cursor: str | None, entries: Sequence[bytes]) -> None:
        with self._lock:
            self._cursors[log] = cursor
            for entry in entries:
                anchor, raw_vector = entry[:_ANCHOR_CHARS], entry[_ANCHOR_CHARS:]
                try:
                    if len(anchor) != _ANCHOR_CHARS or not anchor.isalnum():
                        raise ValueError("not an anchor digest")
                    vector = _unit_vector(np.frombuffer(raw_vector, dtype=_VECTOR_DTYPE))
                    self._index(log, vector.size).add(anchor.decode("ascii"), vector)
                except ValueError:
                    logger.warning("malformed semantic index entry ignored")

    def _failed(self, what: str, exc: Exception) -> None:
        if isinstance(exc, CacheSkipped):  # the backend hung recently or no time is left: a plain miss
            return
        self.stats.record(errors=1)
        logger.warning("semantic cache %s failed, continuing without it: %s", what, type(exc).__name__)
