"""User-supplied steps (retrievers, query writers) run inside one call's budget, sync or natively async.

A step is the same work as a plain callable and as a coroutine function; either may be missing and is
then derived from the other. Every step is bounded by the call's `Deadline`: a plain callable runs on
a daemon thread that the caller stops waiting for at the deadline (a hung retriever costs the rest of
the budget, never more, and never blocks interpreter exit or `asyncio.run`'s shutdown); a coroutine
runs under `asyncio.wait_for`. Failures surface as exceptions; the plans in `multihop` and
`expansion` turn them into a degraded, labelled result.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast

from rerank_prod.deadline import Deadline
from rerank_prod.errors import ScoringTimeout
from rerank_prod.redaction import RedactedError

T = TypeVar("T")
P = ParamSpec("P")


class StepTimeout(ScoringTimeout):
    """A step did not answer within what was left of the call's budget."""


def describe_failure(failure: BaseException) -> str:
    """Short reason for a label: a timeout's message, else the exception type (never its message,
    which may hold secrets)."""
    if isinstance(failure, ScoringTimeout):
        return str(failure)
    return f"error {failure.kind if isinstance(failure, RedactedError) else type(failure).__name__}"


def _remaining(deadline: Deadline | None) -> float | None:
    if deadline is None:
        return None
    left = deadline.remaining()
    if left <= 0.0:
        raise StepTimeout("timeout: no budget left")
    return left


MAX_STEP_THREADS = 32
"""Threads one step (one retriever, one query writer) may have alive at once. A hung dependency keeps
its threads (Python cannot stop them); past this many, that step fails at once (`StepTimeout`, so the
call degrades) instead of adding threads without bound under a storm of calls. Each step has its own
slots: a hung query writer never starves the retriever."""


def _start_step_thread(target: Callable[[], None], slots: threading.BoundedSemaphore) -> None:
    """`target` on a daemon thread holding one of the step's `slots` until it ends."""
    if not slots.acquire(blocking=False):
        raise StepTimeout(f"not started: {MAX_STEP_THREADS} earlier calls are still running (a hung dependency?)")

    def holding_a_slot() -> None:
        try:
            target()
        finally:
            slots.release()

    threading.Thread(target=holding_a_slot, name="rerank-prod-step", daemon=True).start()


def _on_daemon_thread(work: Callable[[], T], timeout_s: float | None, slots: threading.BoundedSemaphore) -> T:
    """`work()` on a daemon thread (with the caller's context), waited for at most `timeout_s`."""
    done = threading.Event()
    outcome: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append((True, context.run(work)))
        except BaseException as failure:  # handed to the caller, never lost on the thread
            outcome.append((False, failure))
        finally:
            done.set()

    _start_step_thread(target, slots)
    if not done.wait(timeout_s):
        raise StepTimeout(f"timeout after {timeout_s:.2f}s")
    ok, value = outcome[0]
    if ok:
        return cast(T, value)
    raise value


async def _awaited_daemon_thread(
    work: Callable[[], T], timeout_s: float | None, slots: threading.BoundedSemaphore
) -> T:
    """`_on_daemon_thread` for coroutines: the event loop is woken when the thread ends."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def target() -> None:
        try:
            result: tuple[bool, Any] = (True, context.run(work))
        except BaseException as failure:
            result = (False, failure)
        with contextlib.suppress(RuntimeError):  # the loop closed while the step hung: nobody waits any more
            loop.call_soon_threadsafe(settle, *result)

    _start_step_thread(target, slots)
    try:
        return await asyncio.wait_for(future, timeout_s)
    except (asyncio.TimeoutError, TimeoutError):
        raise StepTimeout(f"timeout after {timeout_s or 0.0:.2f}s") from None


class Step(Generic[P, T]):
    """One step, sync and async, each taking the call's deadline first.

    `sync`/`asynchronous` may each be None (not both): a missing async side runs the sync one on a
    daemon thread; a missing sync side runs the coroutine with `asyncio.run` on one.
    """

    def __init__(
        self,
        name: str,
        sync: Callable[Concatenate[Deadline | None, P], T] | None,
        asynchronous: Callable[Concatenate[Deadline | None, P], Awaitable[T]] | None,
    ) -> None:
        if sync is None and asynchronous is None:
            raise ValueError(f"{name}: a sync or an async callable is needed")
        self.name = name
        self._sync = sync
        self._async = asynchronous
        self._slots = threading.BoundedSemaphore(MAX_STEP_THREADS)

    def call(self, deadline: Deadline | None, /, *args: P.args, **kwargs: P.kwargs) -> T:
        """The step's answer, by the deadline; raises what the step raised, or `StepTimeout`."""
        timeout_s = _remaining(deadline)
        if self._sync is not None:
            work: Callable[[], T] = functools.partial(self._sync, deadline, *args, **kwargs)
        else:
            coroutine = cast(Callable[..., Awaitable[T]], self._async)
            work = functools.partial(asyncio.run, coroutine(deadline, *args, **kwargs))  # type: ignore[arg-type]
        return (
            work() if timeout_s is None and self._sync is not None else _on_daemon_thread(work, timeout_s, self._slots)
        )

    async def acall(self, deadline: Deadline | None, /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`call`, awaited: a coroutine natively, a plain callable off the event loop."""
        timeout_s = _remaining(deadline)
        if self._async is None:
            sync = cast(Callable[..., T], self._sync)
            return await _awaited_daemon_thread(
                functools.partial(sync, deadline, *args, **kwargs), timeout_s, self._slots
            )
        pending = self._async(deadline, *args, **kwargs)
        if timeout_s is None:
            return await pending
        try:
            return await asyncio.wait_for(pending, timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            raise StepTimeout(f"timeout after {timeout_s:.2f}s") from None

    def call_many(self, deadline: Deadline | None, args: Sequence[tuple[Any, ...]]) -> list[T | Exception]:
        """The step for each argument tuple at once (one daemon thread each), all by the deadline;
        each outcome is its answer or the exception it ended with."""
        if not args:
            return []
        call = cast(Callable[..., T], self.call)  # each tuple holds the step's arguments
        if len(args) == 1:
            return [self._outcome(lambda: call(deadline, *args[0]))]
        outcomes: list[T | Exception] = [StepTimeout("timeout: not finished")] * len(args)
        threads = []
        for position, arguments in enumerate(args):

            def run(position: int = position, arguments: tuple[Any, ...] = arguments) -> None:
                outcomes[position] = self._outcome(lambda: call(deadline, *arguments))

            thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(None if deadline is None else deadline.remaining() + 0.05)
        return list(outcomes)

    async def acall_many(self, deadline: Deadline | None, args: Sequence[tuple[Any, ...]]) -> list[T | Exception]:
        """`call_many`, awaited together."""
        acall = cast(Callable[..., Awaitable[T]], self.acall)
        results = await asyncio.gather(*(acall(deadline, *a) for a in args), return_exceptions=True)
        outcomes: list[T | Exception] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            outcomes.append(result)
        return outcomes

    @staticmethod
    def _outcome(work: Callable[[], T]) -> T | Exception:
        try:
            return work()
        except Exception as failure:
            return failure


def user_step(name: str, function: Callable[..., Any], afunction: Callable[..., Any] | None = None) -> Step[..., Any]:
    """A `Step` from a user's callable (sync or a coroutine function) and an optional native async
    twin; neither takes the deadline (the step bounds them)."""
    if not callable(function):
        raise TypeError(f"{name} must be callable, got {type(function).__name__}")
    if afunction is not None and not _is_async(afunction):
        raise TypeError(f"the async {name} must be a coroutine function, got {type(afunction).__name__}")
    if _is_async(function):
        afunction, function = afunction or function, None  # type: ignore[assignment]

    def without_deadline(target: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if target is None:
            return None
        if _is_async(target):

            async def awaited(_deadline: Deadline | None, *args: Any) -> Any:
                return await target(*args)

            return awaited
        return lambda _deadline, *args: target(*args)

    return Step(name, without_deadline(function), without_deadline(afunction))


def _is_async(function: Callable[..., Any]) -> bool:
    call = getattr(function, "__call__", None)  # noqa: B004 - objects with an async __call__ count
    return inspect.iscoroutinefunction(function) or (call is not None and inspect.iscoroutinefunction(call))
