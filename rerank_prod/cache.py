"""Caching: a backend protocol, the in-memory backend, and the result and pair-score layers.

Keys are SHA-256 digests of everything that changes the answer (scorer identity, fusion settings,
query, candidate contents), so no raw text ends up in key names and a model or settings change
can never serve stale scores. Values carry a format version; anything unreadable or implausible
is a miss. A cache never fails a re-rank and costs it little time: a failing backend is "no cache"
for that call, and every operation is bounded in time (`rerank_prod.cache_guard`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast, runtime_checkable

from cachetools import TLRUCache

from rerank_prod.cache_guard import CacheSkipped, guard_for
from rerank_prod.deadline import Deadline
from rerank_prod.types import Candidate
from rerank_prod.validation import check_int, check_number

logger = logging.getLogger("rerank_prod.cache")

CACHE_FORMAT_VERSION = 1
KEY_PREFIX = f"rerank-prod:v{CACHE_FORMAT_VERSION}"


@runtime_checkable
class CacheBackend(Protocol):
    """Byte-valued key-value store with batched reads and writes and per-entry TTL."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None: ...

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def aset_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None: ...


@runtime_checkable
class EntryLog(Protocol):
    """Optional backend capability: a bounded, append-only log that every replica reads from its
    own cursor. The semantic cache publishes its index entries there so replicas share them."""

    def append_log(self, log: str, entries: Sequence[bytes], max_entries: int, ttl_s: float | None = None) -> None: ...

    def read_log(self, log: str, cursor: str | None, count: int) -> tuple[str | None, list[bytes]]: ...

    async def aappend_log(
        self, log: str, entries: Sequence[bytes], max_entries: int, ttl_s: float | None = None
    ) -> None: ...

    async def aread_log(self, log: str, cursor: str | None, count: int) -> tuple[str | None, list[bytes]]: ...


class InMemoryCache:
    """Process-local LRU with a TTL per entry (cachetools `TLRUCache`), safe across threads."""

    in_process = True  # never blocks: the cache guard runs its operations inline

    def __init__(
        self, maxsize: int = 10_000, ttl_s: float | None = 3600.0, timer: Callable[[], float] = time.monotonic
    ) -> None:
        check_int("maxsize", maxsize)
        check_ttl(ttl_s)
        self.ttl_s = ttl_s
        self._entries: TLRUCache[str, tuple[bytes, float | None]] = TLRUCache(
            maxsize=maxsize, ttu=self._expires_at, timer=timer
        )
        self._lock = threading.Lock()

    @staticmethod
    def _expires_at(_key: str, value: tuple[bytes, float | None], now: float) -> float:
        ttl = value[1]
        return math.inf if ttl is None else now + ttl

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            entries = [self._entries.get(key) for key in keys]
        return [entry[0] if entry is not None else None for entry in entries]

    def set_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        check_ttl(ttl_s)
        ttl = self.ttl_s if ttl_s is None else ttl_s
        with self._lock:
            for key, value in items.items():
                self._entries[key] = (value, ttl)

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.get_many(keys)

    async def aset_many(self, items: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        self.set_many(items, ttl_s)

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)


def check_ttl(ttl_s: float | None) -> None:
    """None (no expiry) or a positive number of seconds."""
    if ttl_s is not None:
        check_number("ttl_s", ttl_s)


def digest(*parts: object) -> str:
    """SHA-256 of JSON-encodable parts. Any Python str hashes, lone surrogates included (e.g. from
    `json.loads` of a badly decoded document): "surrogatepass" keeps them distinct instead of failing."""
    payload = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class CacheStats:
    """Per-layer counters for monitoring."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, hits: int = 0, misses: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses
            self.errors += errors

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "errors": self.errors}


DEFAULT_OPERATION_TIMEOUT_S = 0.1


class _Layer:
    """Shared plumbing of a cache layer: encoding, versioning and failure isolation.

    `timeout_s`: the longest one backend operation may delay a call (also capped by what is left
    of the call's `deadline`); a backend that took longer is skipped until it answers again.
    """

    namespace = ""

    def __init__(
        self, backend: CacheBackend, ttl_s: float | None = None, *, timeout_s: float = DEFAULT_OPERATION_TIMEOUT_S
    ) -> None:
        if not isinstance(backend, CacheBackend):
            raise TypeError(f"backend must implement CacheBackend, got {type(backend).__name__}")
        check_ttl(ttl_s)
        self.backend = backend
        self.ttl_s = ttl_s
        self.timeout_s = check_number("timeout_s", timeout_s)
        self.stats = CacheStats()
        self._guard = guard_for(backend)

    def _key(self, *parts: object) -> str:
        return f"{KEY_PREFIX}:{self.namespace}:{digest(*parts)}"

    @staticmethod
    def _encode(value: object) -> bytes:
        return json.dumps({"v": CACHE_FORMAT_VERSION, "d": value}, separators=(",", ":")).encode()

    def _decode(self, raw: bytes | None) -> object | None:
        if raw is None:
            return None
        try:
            payload = json.loads(raw)
            if payload["v"] != CACHE_FORMAT_VERSION:
                return None
            value: object = payload["d"]
            return value
        except Exception:  # whatever is stored, reading it is never the reason a call fails
            self.stats.record(errors=1)
            logger.warning("unreadable %s cache entry ignored", self.namespace)
            return None

    def _read(self, keys: Sequence[str], deadline: Deadline | None) -> list[bytes | None]:
        try:
            raws = self._guard.call(functools.partial(self.backend.get_many, keys), self.timeout_s, deadline)
            return self._checked_read(raws, keys)
        except Exception as exc:
            return self._read_failed(keys, exc)

    async def _aread(self, keys: Sequence[str], deadline: Deadline | None) -> list[bytes | None]:
        try:
            raws = await self._guard.acall(functools.partial(self.backend.aget_many, keys), self.timeout_s, deadline)
            return self._checked_read(raws, keys)
        except Exception as exc:
            return self._read_failed(keys, exc)

    @staticmethod
    def _checked_read(raws: object, keys: Sequence[str]) -> list[bytes | None]:
        if not isinstance(raws, list) or len(raws) != len(keys):
            raise TypeError("the backend answered a read with something other than one value per key")
        return [raw if isinstance(raw, bytes) else None for raw in raws]

    def _read_failed(self, keys: Sequence[str], exc: Exception) -> list[bytes | None]:
        """A skipped read (the backend hung recently, or no time is left) is a plain miss."""
        if not isinstance(exc, CacheSkipped):
            self.stats.record(errors=1)
            logger.warning("%s cache read failed, continuing without it: %s", self.namespace, type(exc).__name__)
        return [None] * len(keys)

    def _write(self, items: Callable[[], Mapping[str, bytes]], deadline: Deadline | None) -> None:
        """`items` builds the entries, so that an encoding failure is a failed write too."""
        try:
            batch = items()
            if batch:
                write = functools.partial(self.backend.set_many, batch, self.ttl_s)
                self._guard.call(write, self.timeout_s, deadline)
        except Exception as exc:
            self._write_failed(exc)

    async def _awrite(self, items: Callable[[], Mapping[str, bytes]], deadline: Deadline | None) -> None:
        try:
            batch = items()
            if batch:
                write = functools.partial(self.backend.aset_many, batch, self.ttl_s)
                await self._guard.acall(write, self.timeout_s, deadline)
        except Exception as exc:
            self._write_failed(exc)

    def _write_failed(self, exc: Exception) -> None:
        if isinstance(exc, CacheSkipped):
            return
        self.stats.record(errors=1)
        logger.warning("%s cache write failed, continuing without it: %s", self.namespace, type(exc).__name__)


RankingEntry = tuple[int, float, float | None]
"""(original_rank, relevance_score, rerank_score) of one candidate in a cached full ranking."""


def _finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a finite score: {value!r}")
    return float(value)


def parse_ranking(value: object, count: int) -> list[RankingEntry] | None:
    """A stored ranking if it is one this pipeline could have produced: every original rank
    0..count-1 exactly once, finite scores, relevance highest first; otherwise None."""
    if not isinstance(value, list) or len(value) != count:
        return None
    try:
        ranking = [(r, _finite(s), None if m is None else _finite(m)) for r, s, m in value]
    except (TypeError, ValueError):
        return None
    ranks = [r for r, _, _ in ranking]
    if any(isinstance(r, bool) or not isinstance(r, int) for r in ranks) or sorted(ranks) != list(range(count)):
        return None
    if any(later[1] > earlier[1] for earlier, later in itertools.pairwise(ranking)):
        return None
    return ranking


class ResultCache(_Layer):
    """Exact result cache: the full fused ranking of a (scorer + fusion, query, candidates) call.
    An entry that is not a plausible ranking (NaN, out of order, wrong ranks) is a miss and an error."""

    namespace = "result"

    def key(self, identity: str, query: str, candidates: Sequence[Candidate]) -> str:
        """`identity`: the scorer's and the fusion's (`Reranker.cache_identity`)."""
        return self._key(identity, query, [(c.text, c.retrieval_score) for c in candidates])

    def _parse(self, raw: bytes | None, count: int) -> list[RankingEntry] | None:
        value = self._decode(raw)
        ranking = None if value is None else parse_ranking(value, count)
        if value is not None and ranking is None:
            self.stats.record(errors=1)
            logger.warning("implausible result cache entry ignored")
        self.stats.record(hits=ranking is not None, misses=ranking is None)
        return ranking

    def get(self, key: str, count: int, deadline: Deadline | None = None) -> list[RankingEntry] | None:
        return self._parse(self._read([key], deadline)[0], count)

    async def aget(self, key: str, count: int, deadline: Deadline | None = None) -> list[RankingEntry] | None:
        return self._parse((await self._aread([key], deadline))[0], count)

    def put(self, key: str, ranking: Sequence[RankingEntry], deadline: Deadline | None = None) -> None:
        self._write(lambda: {key: self._encode(list(ranking))}, deadline)

    async def aput(self, key: str, ranking: Sequence[RankingEntry], deadline: Deadline | None = None) -> None:
        await self._awrite(lambda: {key: self._encode(list(ranking))}, deadline)


class ScoreCache(_Layer):
    """Pair-level cache: (scorer, query, passage) -> score, so overlapping candidate sets only
    score the new pairs. One batched round trip per call."""

    namespace = "score"

    def keys(self, scorer_identity: str, query: str, texts: Sequence[str]) -> list[str]:
        """One key per text. Scorer and query are hashed once, not once per text: a long query
        costs one pass however many candidates there are."""
        pair_prefix = digest(scorer_identity, query)
        return [self._key(pair_prefix, text) for text in texts]

    def _parse(self, raws: Sequence[bytes | None]) -> list[float | None]:
        scores = []
        for raw in raws:
            value = self._decode(raw)
            is_score = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            scores.append(float(cast(float, value)) if is_score else None)
        hits = sum(s is not None for s in scores)
        self.stats.record(hits=hits, misses=len(scores) - hits)
        return scores

    def get_many(self, keys: Sequence[str], deadline: Deadline | None = None) -> list[float | None]:
        return self._parse(self._read(keys, deadline))

    async def aget_many(self, keys: Sequence[str], deadline: Deadline | None = None) -> list[float | None]:
        return self._parse(await self._aread(keys, deadline))

    def put_many(self, scores: Mapping[str, float], deadline: Deadline | None = None) -> None:
        if scores:
            self._write(lambda: {key: self._encode(score) for key, score in scores.items()}, deadline)

    async def aput_many(self, scores: Mapping[str, float], deadline: Deadline | None = None) -> None:
        if scores:
            await self._awrite(lambda: {key: self._encode(score) for key, score in scores.items()}, deadline)
