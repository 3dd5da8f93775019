"""Retries and circuit breaking for remote scorers, bounded by the call's one time budget.

Every request a remote scorer sends goes through `ResilientCaller`: it refuses to start when the
budget is spent, gives each attempt the smaller of the per-request timeout and what is left of the
budget, and retries transient failures (429 honouring `Retry-After`, 408, 5xx, dropped
connections, timeouts, malformed answers) with jittered exponential backoff, never sleeping past
the deadline. Around each whole scorer call sits the backend's `CircuitBreaker`. Whatever still
fails reaches the pipeline, which falls back and says why in `rerank_source`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from rerank_prod.deadline import Deadline
from rerank_prod.errors import ScorerError
from rerank_prod.validation import check_int, check_number

logger = logging.getLogger("rerank_prod")

T = TypeVar("T")

# A request needs at least this much budget to be worth sending.
_MIN_ATTEMPT_S = 0.01
_RETRYABLE_STATUS = frozenset({408, 429})
# Transport failures of the HTTP stacks the clients use (httpx; openai ships its own httpx2).
_TRANSPORT_ERRORS = (
    ("httpx", ("TimeoutException", "NetworkError", "RemoteProtocolError")),
    ("httpx2", ("TimeoutException", "NetworkError", "RemoteProtocolError")),
    ("openai", ("APIConnectionError",)),
)


class CircuitOpenError(ScorerError):
    """The backend failed repeatedly; calls go straight to the fallback until its cooldown ends."""


class BudgetExhausted(ScorerError):
    """No time left in the call's budget to send (another) request."""


class MalformedResponse(ScorerError):
    """The backend answered, but not with something usable (bad JSON, prose, wrong indices)."""


class BackendHTTPError(ScorerError):
    """A non-success HTTP status from a rerank server; carries what retrying needs to know."""

    def __init__(self, message: str, *, status_code: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or HTTP date), if present."""
    if not headers:
        return None
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def retry_after_of(failure: BaseException) -> float | None:
    """The server's requested wait carried by a client exception (ours, cohere's, or openai's)."""
    explicit = getattr(failure, "retry_after_s", None)
    if isinstance(explicit, (int, float)):
        return float(explicit)
    response = getattr(failure, "response", None)
    headers = getattr(response, "headers", None) or getattr(failure, "headers", None)
    return parse_retry_after(headers) if isinstance(headers, Mapping) else None


def _is_transport_error(failure: BaseException) -> bool:
    if isinstance(failure, (TimeoutError, ConnectionError)):
        return True
    for module_name, class_names in _TRANSPORT_ERRORS:
        module = sys.modules.get(module_name)  # not imported: its errors cannot be raised
        if module is None:
            continue
        if any(isinstance(failure, getattr(module, name)) for name in class_names if hasattr(module, name)):
            return True
    return False


def is_transient(failure: BaseException) -> bool:
    """Worth retrying: throttling, timeouts, server errors, dropped connections, garbled answers."""
    if isinstance(failure, MalformedResponse):
        return True
    if isinstance(failure, (CircuitOpenError, BudgetExhausted)):
        return False
    status = getattr(failure, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status in _RETRYABLE_STATUS or status >= 500
    return _is_transport_error(failure)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried.

    `max_attempts` counts the first try. Backoff is "full jitter": a random wait in
    [0, min(backoff_max_s, backoff_initial_s * 2**n)], which spreads retries from many clients.
    A `Retry-After` from the server is honoured as given, up to `max_retry_after_s`; a longer one,
    or any wait that would not leave time for the next attempt within the deadline, ends the
    retries at once so the pipeline can fall back while the budget still allows it.
    """

    max_attempts: int = 3
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0
    max_retry_after_s: float = 10.0

    def __post_init__(self) -> None:
        check_int("max_attempts", self.max_attempts)
        for name in ("backoff_initial_s", "backoff_max_s", "max_retry_after_s"):
            check_number(name, getattr(self, name), allow_zero=True)


class CircuitBreaker:
    """Per-backend circuit over whole scorer calls: closed -> open after `failure_threshold`
    consecutive failed calls -> half-open after `cooldown_s` (one trial call) -> closed on success,
    open again on failure.

    While open, calls fail fast with `CircuitOpenError`, so the pipeline falls back at once instead
    of spending the budget on a backend known to be down. Calls, not requests, are counted: one
    call fanned out into many requests (batches, one prompt per candidate) is one failure. Share
    one instance between scorers that talk to the same backend. Thread-safe; `snapshot()` is for
    metrics exporters.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 30.0) -> None:
        check_int("failure_threshold", failure_threshold)
        check_number("cooldown_s", cooldown_s)
        self.failure_threshold = failure_threshold
        self.cooldown_s = float(cooldown_s)
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._times_opened = 0
        self._rejected = 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._current_state()

    def _current_state(self) -> str:
        if self._state == self.OPEN and time.monotonic() - self._opened_at >= self.cooldown_s:
            return self.HALF_OPEN
        return self._state

    @contextlib.contextmanager
    def guard(self, deadline: Deadline | None = None) -> Iterator[None]:
        """Wraps one call (sync, or async around the `await`): refused while open, outcome recorded.

        A call cancelled because its deadline passed (the pipeline's timeout) counts as failed, and
        so does one that answered only after its deadline (its caller had given up on it); one
        cancelled for another reason counts as nothing.
        """
        self.before_call()
        try:
            yield
        except asyncio.CancelledError:
            if deadline is not None and deadline.expired:
                self.record_failure()
            else:
                self.release_trial()
            raise
        except Exception:
            self.record_failure()
            raise
        if deadline is not None and deadline.expired:
            self.record_failure()
        else:
            self.record_success()

    def before_call(self) -> None:
        """Let a call through, or raise `CircuitOpenError` without contacting the backend."""
        with self._lock:
            state = self._current_state()
            if state == self.CLOSED:
                return
            if state == self.HALF_OPEN and not self._trial_in_flight:
                self._state = self.HALF_OPEN
                self._trial_in_flight = True
                return
            self._rejected += 1
            wait = max(0.0, self.cooldown_s - (time.monotonic() - self._opened_at))
        raise CircuitOpenError(
            f"circuit open after {self.failure_threshold} consecutive failures; next trial in {wait:.1f}s"
        )

    def record_success(self) -> None:
        with self._lock:
            self._state = self.CLOSED
            self._consecutive_failures = 0
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive_failures += 1
            if self._state == self.HALF_OPEN or self._consecutive_failures >= self.failure_threshold:
                if self._state != self.OPEN:
                    self._times_opened += 1
                    logger.warning(
                        "circuit opened after %d consecutive failures; cooling down %.1fs",
                        self._consecutive_failures,
                        self.cooldown_s,
                    )
                self._state = self.OPEN
                self._opened_at = time.monotonic()
            self._trial_in_flight = False

    def release_trial(self) -> None:
        """A call ended without a verdict (cancelled): free the half-open trial slot."""
        with self._lock:
            self._trial_in_flight = False

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self._current_state(),
                "consecutive_failures": self._consecutive_failures,
                "times_opened": self._times_opened,
                "rejected_calls": self._rejected,
            }

    def __repr__(self) -> str:
        return f"CircuitBreaker(failure_threshold={self.failure_threshold}, cooldown_s={self.cooldown_s:g})"


class ResilientCaller:
    """Sends one logical request with retries and per-attempt timeouts.

    `attempt(timeout_s)` performs one try; `timeout_s` is the smaller of `request_timeout_s` and
    what is left of the deadline (None when neither bounds it).
    """

    def __init__(self, retry: RetryPolicy, request_timeout_s: float | None) -> None:
        if not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        if request_timeout_s is not None:
            check_number("request_timeout_s", request_timeout_s)
        self.retry = retry
        self.request_timeout_s = request_timeout_s

    def call(self, attempt: Callable[[float | None], T], deadline: Deadline | None) -> T:
        import tenacity

        retrying = tenacity.Retrying(sleep=time.sleep, **self._tenacity_settings(deadline))
        return retrying(lambda: attempt(self._attempt_timeout(deadline)))

    async def acall(self, attempt: Callable[[float | None], Awaitable[T]], deadline: Deadline | None) -> T:
        import tenacity

        retrying = tenacity.AsyncRetrying(sleep=asyncio.sleep, **self._tenacity_settings(deadline))

        async def timed_attempt() -> T:
            return await attempt(self._attempt_timeout(deadline))

        return await retrying(timed_attempt)

    def _attempt_timeout(self, deadline: Deadline | None) -> float | None:
        if deadline is None:
            return self.request_timeout_s
        remaining = deadline.remaining()
        if remaining < _MIN_ATTEMPT_S:
            raise BudgetExhausted("the call's time budget is spent")
        return remaining if self.request_timeout_s is None else min(self.request_timeout_s, remaining)

    def _tenacity_settings(self, deadline: Deadline | None) -> dict[str, Any]:
        import tenacity

        policy = self.retry
        backoff = tenacity.wait_random_exponential(multiplier=policy.backoff_initial_s, max=policy.backoff_max_s)

        def server_wait(state: tenacity.RetryCallState) -> float | None:
            failure = state.outcome.exception() if state.outcome is not None else None
            return retry_after_of(failure) if failure is not None else None

        def wait(state: tenacity.RetryCallState) -> float:
            requested = server_wait(state)
            return requested if requested is not None else backoff(state)

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= policy.max_attempts:
                return True
            requested = server_wait(state)
            if requested is not None and requested > policy.max_retry_after_s:
                return True
            return deadline is not None and state.upcoming_sleep + _MIN_ATTEMPT_S >= deadline.remaining()

        def log_retry(state: tenacity.RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome is not None else None
            logger.info(
                "attempt %d failed (%s); retrying in %.2fs",
                state.attempt_number,
                type(failure).__name__,
                state.upcoming_sleep,
            )

        return {
            "retry": tenacity.retry_if_exception(is_transient),
            "wait": wait,
            "stop": stop,
            "before_sleep": log_retry,
            "reraise": True,
        }
