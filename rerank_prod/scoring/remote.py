"""Plumbing shared by remote scorers: API keys that never leak, resilience settings, fan-out."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from rerank_prod.deadline import Deadline
from rerank_prod.redaction import masking_secrets, register_secret
from rerank_prod.resilience import CircuitBreaker, MalformedResponse, ResilientCaller, RetryPolicy
from rerank_prod.types import as_finite_float
from rerank_prod.validation import check_text

T = TypeVar("T")


@runtime_checkable
class _SecretLike(Protocol):
    """pydantic's `SecretStr` and anything shaped like it."""

    def get_secret_value(self) -> str: ...


class ApiKey:
    """An API key that prints as asterisks in reprs, logs and exceptions, and is masked in any
    message the product logs or raises, even when a server echoes it (`rerank_prod.redaction`)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("an API key must be a non-empty string")
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        """The key itself: only for handing to a client library."""
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('**********')"

    __str__ = __repr__


def resolve_api_key(api_key: str | _SecretLike | ApiKey | None, env_vars: Sequence[str]) -> ApiKey | None:
    """The key given (str or `SecretStr`), else the first of `env_vars` that is set, else None."""
    if isinstance(api_key, ApiKey):
        return api_key
    if isinstance(api_key, _SecretLike):
        return ApiKey(api_key.get_secret_value())
    if isinstance(api_key, str):
        return ApiKey(api_key)
    if api_key is not None:
        raise TypeError(f"api_key must be a str or SecretStr, got {type(api_key).__name__}")
    for name in env_vars:
        value = os.environ.get(name)
        if value and value.strip():
            return ApiKey(value)
    return None


@contextlib.contextmanager
def garbled_answers_as_malformed() -> Iterator[None]:
    """Around a client-library call: an answer the library could not parse (a JSON decode error,
    an error object with a 2xx status, a parsing error) becomes `MalformedResponse`, which is retried."""
    try:
        yield
    except MalformedResponse:
        raise
    except Exception as failure:
        status = getattr(failure, "status_code", None)
        garbled_success = isinstance(status, int) and 200 <= status < 300
        if garbled_success or isinstance(failure, ValueError) or type(failure).__name__ == "ParsingError":
            raise MalformedResponse(f"unparseable answer ({type(failure).__name__}, status {status})") from failure
        raise


def check_base_url(base_url: object) -> str:
    """An http(s) URL without credentials in it (those belong in `api_key`, which never leaks)."""
    url = check_text("base_url", base_url).rstrip("/")
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError("base_url must not contain credentials; pass the key as api_key")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
    return url


def scores_by_index(
    pairs: Iterable[tuple[object, object]], count: int, who: str, *, missing: float | None = None
) -> list[float]:
    """One score per text from a server's (index, score) pairs, which may come in any order.

    Unknown, duplicate or (unless `missing` gives their score) absent indices mean the answer
    cannot be trusted: `MalformedResponse`.
    """
    scores: list[float | None] = [None] * count
    for index, score in pairs:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise MalformedResponse(f"{who} returned index {index!r} for {count} texts")
        if scores[index] is not None:
            raise MalformedResponse(f"{who} returned index {index} twice")
        try:
            scores[index] = as_finite_float(score, f"{who} score")
        except (TypeError, ValueError) as exc:
            raise MalformedResponse(str(exc)) from exc
    absent = [i for i, score in enumerate(scores) if score is None]
    if absent and missing is None:
        raise MalformedResponse(f"{who} returned no score for {len(absent)} of {count} texts")
    return [missing if score is None else score for score in scores]  # type: ignore[misc]


class ResilientRemote:
    """Base for clients of a service: owns the retry policy, request timeout and circuit breaker.

    Subclasses send every request through `self._caller` (retries within the call's deadline) and
    wrap each logical call in `self.circuit_breaker.guard(deadline)`.
    """

    def __init__(
        self, *, request_timeout_s: float | None, retry: RetryPolicy | None, circuit_breaker: CircuitBreaker | None
    ) -> None:
        """`retry=None` means the default `RetryPolicy()`; `circuit_breaker=None` a fresh default
        `CircuitBreaker()` for this client (pass one instance to several clients to share it)."""
        if circuit_breaker is not None and not isinstance(circuit_breaker, CircuitBreaker):
            raise TypeError(f"circuit_breaker must be a CircuitBreaker or None, got {type(circuit_breaker).__name__}")
        self._caller = ResilientCaller(RetryPolicy() if retry is None else retry, request_timeout_s)
        self.circuit_breaker = CircuitBreaker() if circuit_breaker is None else circuit_breaker

    @property
    def retry(self) -> RetryPolicy:
        return self._caller.retry

    @property
    def request_timeout_s(self) -> float | None:
        return self._caller.request_timeout_s


class RemoteScorer(ResilientRemote):
    """Base for scorers that call a service (retries, request timeout, breaker: `ResilientRemote`).

    `score`/`ascore` run each call under the breaker; subclasses implement `_score`/`_ascore` for a
    non-empty list of texts, sending every request through `self._caller`. `independent_scores`
    says whether a text's score is independent of the other texts in the call; the pipeline only
    caches per-pair scores for scorers where it is.
    """

    independent_scores = True

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        """Scores under the breaker; a failure's message never holds a configured secret."""
        if not texts:
            return []
        with masking_secrets(), self.circuit_breaker.guard(deadline):
            return self._score(query, texts, deadline)

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        if not texts:
            return []
        with masking_secrets(), self.circuit_breaker.guard(deadline):
            return await self._ascore(query, texts, deadline)

    def _score(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        raise NotImplementedError

    async def _ascore(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        raise NotImplementedError


class PerEventLoop(Generic[T]):
    """One async client per running event loop, made on first use in that loop, closed with it.

    Async HTTP clients hold pooled connections bound to the loop that opened them; reused under a
    later loop (a second `asyncio.run`, a test per loop) they fail with "Event loop is closed".
    Each client is closed (`aclose(client)`) while its loop shuts down: a small async generator
    registered with the loop is finalised by `asyncio.run`'s `shutdown_asyncgens`, which awaits
    the close. Clients of loops closed without that step are only dropped.
    """

    def __init__(self, factory: Callable[[], T], aclose: Callable[[T], Awaitable[object]]) -> None:
        self._factory = factory
        self._aclose = aclose
        self._by_loop: dict[asyncio.AbstractEventLoop, tuple[T, AsyncIterator[None]]] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
            if entry is not None:
                return entry[0]
            self._by_loop = {other: kept for other, kept in self._by_loop.items() if not other.is_closed()}
            client = self._factory()
            closer = self._closed_with_loop(loop, client)
            self._by_loop[loop] = (client, closer)
        # Runs the generator to its `yield` (which registers it with the loop) on the next tick.
        asyncio.ensure_future(anext(closer, None))
        return client

    async def _closed_with_loop(self, loop: asyncio.AbstractEventLoop, client: T) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with self._lock:
                if self._by_loop.get(loop, (None,))[0] is client:
                    del self._by_loop[loop]
            await self._aclose(client)

    def pop(self) -> T | None:
        """Forget this loop's client (if any) and hand it over, e.g. to close it."""
        with self._lock:
            entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        return None if entry is None else entry[0]


def run_bounded(tasks: Sequence[Callable[[], T]], executor: concurrent.futures.ThreadPoolExecutor) -> list[T]:
    """Run `tasks` on `executor` (its size is the bound); the first failure cancels what has not started.
    Each task runs in a copy of the caller's context (so `capture_score_details` sees what it records)."""
    if len(tasks) == 1:
        return [tasks[0]()]
    futures = [executor.submit(contextvars.copy_context().run, task) for task in tasks]
    try:
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()


async def arun_bounded(tasks: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Await `tasks` at most `limit` at a time; the first failure cancels the rest and propagates."""
    semaphore = asyncio.Semaphore(limit)

    async def bounded(task: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await task()

    running = [asyncio.ensure_future(bounded(task)) for task in tasks]
    try:
        return list(await asyncio.gather(*running))
    finally:
        for future in running:
            future.cancel()
        await asyncio.gather(*running, return_exceptions=True)
