"""Keeps a slow or hung cache backend out of a re-rank's way.

A cache is an optimisation, so it may cost a call little time and never its answer. Every backend
operation is bounded by the layer's `timeout_s` and by what is left of the call's budget; an
operation that times out opens the backend's circuit breaker at once, so the rest of that call and
the calls after it skip the backend instead of waiting on it again, until a trial operation after
the cooldown answers. A fast failure (connection refused: Redis is down, not hung) costs
milliseconds and leaves the breaker alone, so a restarted backend is used again on the next call.
One guard per backend object is shared by every layer on it: a hung Redis is one fact.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rerank_prod.deadline import Deadline
from rerank_prod.resilience import CircuitBreaker, CircuitOpenError

T = TypeVar("T")

# An operation needs at least this much time to be worth starting.
_MIN_OPERATION_S = 0.002
# Threads for blocking backends' operations: the breaker keeps hung ones from piling up.
_WORKERS = 8
DEFAULT_COOLDOWN_S = 2.0


class CacheSkipped(Exception):
    """The backend was not asked: its breaker is open, or the call has no time left for it."""


class CacheTimeout(TimeoutError):
    """The backend did not answer within the time the operation was given."""


def _is_timeout(failure: BaseException) -> bool:
    """A client library's own timeout (redis-py's `TimeoutError` is no builtin one) counts too."""
    return isinstance(failure, TimeoutError) or "Timeout" in type(failure).__name__


class BackendGuard:
    """Bounds and breaks the operations on one backend.

    Backends whose operations never block (in-process ones declare `in_process = True`) run
    inline; the others run on a small thread pool so that the caller can stop waiting at the bound
    (the abandoned operation ends with the backend's own socket timeout).
    """

    def __init__(self, blocking: bool, breaker: CircuitBreaker) -> None:
        self.blocking = blocking
        self.breaker = breaker
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="rerank-prod-cache")
            if blocking
            else None
        )

    def _admit(self, timeout_s: float, deadline: Deadline | None) -> float:
        bound = timeout_s if deadline is None else min(timeout_s, deadline.remaining())
        if bound < _MIN_OPERATION_S:
            raise CacheSkipped("no time left in the call's budget")
        try:
            self.breaker.before_call()
        except CircuitOpenError as exc:
            raise CacheSkipped("the backend timed out recently; skipped until it answers again") from exc
        return bound

    def _failed(self, failure: BaseException) -> None:
        if _is_timeout(failure):
            self.breaker.record_failure()
        else:
            self.breaker.release_trial()

    def call(self, operation: Callable[[], T], timeout_s: float, deadline: Deadline | None) -> T:
        """`operation()` within min(`timeout_s`, what is left of `deadline`); raises `CacheSkipped`,
        `CacheTimeout` or the operation's own error."""
        bound = self._admit(timeout_s, deadline)
        try:
            if self._executor is None:
                result = operation()
            else:
                future = self._executor.submit(operation)
                try:
                    result = future.result(timeout=bound)
                except concurrent.futures.TimeoutError:
                    future.cancel()
                    raise CacheTimeout(f"no answer within {bound:.3f}s") from None
        except Exception as failure:
            self._failed(failure)
            raise
        self.breaker.record_success()
        return result

    async def acall(self, operation: Callable[[], Awaitable[T]], timeout_s: float, deadline: Deadline | None) -> T:
        """`call` for a coroutine function: the operation is cancelled at the bound."""
        bound = self._admit(timeout_s, deadline)
        try:
            if not self.blocking:
                result = await operation()
            else:
                try:
                    result = await asyncio.wait_for(operation(), timeout=bound)
                except (asyncio.TimeoutError, TimeoutError):
                    raise CacheTimeout(f"no answer within {bound:.3f}s") from None
        except Exception as failure:
            self._failed(failure)
            raise
        self.breaker.record_success()
        return result


_guards: weakref.WeakKeyDictionary[object, BackendGuard] = weakref.WeakKeyDictionary()
_guards_lock = threading.Lock()


def guard_for(backend: object) -> BackendGuard:
    """The guard shared by every layer on `backend` (a fresh one if the backend cannot be a weak key)."""
    with _guards_lock:
        try:
            guard = _guards.get(backend)
        except TypeError:  # unhashable or not weakly referenceable: a guard of its own
            return _new_guard(backend)
        if guard is None:
            guard = _guards[backend] = _new_guard(backend)
        return guard


def _new_guard(backend: object) -> BackendGuard:
    return BackendGuard(
        blocking=not getattr(backend, "in_process", False),
        breaker=CircuitBreaker(failure_threshold=1, cooldown_s=DEFAULT_COOLDOWN_S),
    )
