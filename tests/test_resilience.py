"""Retries, Retry-After, the time budget and the circuit breaker, with real tenacity and no network."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from rerank_prod import CircuitBreaker, CircuitOpenError, Deadline, RetryPolicy
from rerank_prod.resilience import (
    BackendHTTPError,
    BudgetExhausted,
    MalformedResponse,
    ResilientCaller,
    is_transient,
    parse_retry_after,
)
from rerank_prod.scoring.remote import ApiKey, resolve_api_key

FAST = RetryPolicy(max_attempts=4, backoff_initial_s=0.01, backoff_max_s=0.02)


class Flaky:
    """Fails with the given exceptions, in order, then answers 'ok'; records attempt timeouts."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.timeouts: list[float | None] = []

    def __call__(self, timeout_s: float | None) -> str:
        self.timeouts.append(timeout_s)
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_transient_failures_are_retried_until_success() -> None:
    flaky = Flaky(ConnectionError("reset"), BackendHTTPError("busy", status_code=503), TimeoutError("slow"))
    caller = ResilientCaller(FAST, request_timeout_s=5.0)
    assert caller.call(flaky, Deadline.after(2.0)) == "ok"
    assert len(flaky.timeouts) == 4
    assert all(t is not None and t <= 2.0 for t in flaky.timeouts)  # budget caps the per-request timeout


def test_permanent_failures_are_not_retried() -> None:
    flaky = Flaky(BackendHTTPError("bad request", status_code=400))
    with pytest.raises(BackendHTTPError):
        ResilientCaller(FAST, None).call(flaky, None)
    assert len(flaky.timeouts) == 1


@pytest.mark.parametrize(
    ("failure", "transient"),
    [
        (BackendHTTPError("x", status_code=429), True),
        (BackendHTTPError("x", status_code=408), True),
        (BackendHTTPError("x", status_code=500), True),
        (BackendHTTPError("x", status_code=401), False),
        (MalformedResponse("prose"), True),
        (CircuitOpenError("open"), False),
        (ValueError("bug"), False),
    ],
)
def test_what_counts_as_transient(failure: Exception, transient: bool) -> None:
    assert is_transient(failure) is transient


def test_retry_after_is_honoured() -> None:
    flaky = Flaky(BackendHTTPError("slow down", status_code=429, retry_after_s=0.3))
    started = time.monotonic()
    assert ResilientCaller(FAST, None).call(flaky, Deadline.after(2.0)) == "ok"
    assert time.monotonic() - started >= 0.3


def test_retry_after_beyond_the_budget_gives_up_at_once() -> None:
    flaky = Flaky(BackendHTTPError("slow down", status_code=429, retry_after_s=5.0))
    started = time.monotonic()
    with pytest.raises(BackendHTTPError):
        ResilientCaller(FAST, None).call(flaky, Deadline.after(1.0))
    assert time.monotonic() - started < 1.0  # not the 5s the server asked for
    assert len(flaky.timeouts) == 1


def test_backoff_never_outlives_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=100, backoff_initial_s=0.05, backoff_max_s=0.1)
    always_down = Flaky(*[ConnectionError("down")] * 100)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        ResilientCaller(policy, None).call(always_down, Deadline.after(0.4))
    assert time.monotonic() - started < 0.7  # the 0.4s budget, not 100 attempts
    assert len(always_down.timeouts) > 2


def test_a_spent_budget_sends_nothing() -> None:
    flaky = Flaky()
    with pytest.raises(BudgetExhausted):
        ResilientCaller(FAST, None).call(flaky, Deadline.after(0.0))
    assert flaky.timeouts == []


async def test_async_retries_share_the_same_rules() -> None:
    failures = [ConnectionError("reset"), BackendHTTPError("busy", status_code=502, retry_after_s=0.05)]

    async def attempt(timeout_s: float | None) -> str:
        await asyncio.sleep(0)
        if failures:
            raise failures.pop(0)
        return "ok"

    assert await ResilientCaller(FAST, 1.0).acall(attempt, Deadline.after(2.0)) == "ok"


def test_circuit_opens_rejects_fast_then_lets_one_trial_through() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=0.2)
    for _ in range(2):
        with pytest.raises(ConnectionError), breaker.guard():
            raise ConnectionError("down")
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError), breaker.guard():
        pytest.fail("an open circuit must not let the call run")

    time.sleep(0.25)
    assert breaker.state == "half_open"
    breaker.before_call()  # the trial slot is taken: a second caller is turned away
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    breaker.record_failure()  # the trial failed: open again for a full cooldown
    assert breaker.state == "open"

    time.sleep(0.25)
    with breaker.guard():
        pass
    assert breaker.snapshot() == {"state": "closed", "consecutive_failures": 0, "times_opened": 2, "rejected_calls": 2}


async def test_cancellation_counts_only_when_the_deadline_passed() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=60)

    async def hang(deadline: Deadline | None) -> None:
        with breaker.guard(deadline):
            await asyncio.sleep(10)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(hang(None), timeout=0.05)  # cancelled, no deadline of its own: no verdict
    assert breaker.state == "closed"
    deadline = Deadline.after(0.05)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(hang(deadline), timeout=0.1)
    assert breaker.state == "open"


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    in_three_seconds = parse_retry_after({"Retry-After": formatdate(time.time() + 3, usegmt=True)})
    assert in_three_seconds is not None and 1.5 < in_three_seconds <= 3.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="backoff_initial_s"):
        RetryPolicy(backoff_initial_s=-1)
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="cooldown_s"):
        CircuitBreaker(cooldown_s=0)
    with pytest.raises(TypeError, match="retry"):
        ResilientCaller(3, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="request_timeout_s"):
        ResilientCaller(FAST, 0)


def test_api_keys_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr

    key = resolve_api_key(SecretStr("sk-live-123"), ())
    assert isinstance(key, ApiKey) and key.reveal() == "sk-live-123"
    assert "sk-live" not in repr(key) and "sk-live" not in str(key) and "sk-live" not in f"{key}"
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.setenv("COHERE_API_KEY", "from-env")
    assert resolve_api_key(None, ("CO_API_KEY", "COHERE_API_KEY")).reveal() == "from-env"  # type: ignore[union-attr]
    assert resolve_api_key(None, ("NOT_SET_ANYWHERE",)) is None
    with pytest.raises(TypeError):
        resolve_api_key(123, ())


def test_remote_clients_are_imported_only_when_a_scorer_is_built() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rerank_prod; print([m for m in ('cohere', 'openai', 'httpx', 'httpx2', 'tenacity', 'pydantic')"
        " if m in sys.modules])"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def test_a_retry_after_above_the_policy_cap_is_not_waited_for() -> None:
    flaky = Flaky(BackendHTTPError("slow down", status_code=429, retry_after_s=0.5))
    capped = RetryPolicy(max_attempts=3, max_retry_after_s=0.2)
    started = time.monotonic()
    with pytest.raises(BackendHTTPError):
        ResilientCaller(capped, None).call(flaky, None)  # no deadline: the cap alone says stop
    assert time.monotonic() - started < 0.45 and len(flaky.timeouts) == 1
