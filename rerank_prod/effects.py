"""Logic that does I/O, written once and run either synchronously or natively async.

A plan is a generator that yields `Effect`s (the I/O it needs: a cache read, a scoring request,
an embedding) and receives each one's answer through `ask`, which keeps the answer's static type.
`run` performs every effect with its plain callable, `arun` awaits its coroutine function, so the
sync and async paths cannot drift apart and mypy checks both.

Failures: when an effect raises, the plan gets an `EffectFailed` thrown in at its `yield`, carrying
the original exception. Plans catch `EffectFailed` to degrade (fall back, skip a cache); an
exception raised by the plan's own code is a bug in the pipeline and propagates to the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class Effect(Generic[T]):
    """One request for I/O: the same work as a plain call (`sync`) and as a coroutine (`asynchronous`).

    `stage` names the pipeline stage it belongs to ("cache.result.read", "score", ...) for logs,
    timings and traces.
    """

    stage: str
    sync: Callable[[], T]
    asynchronous: Callable[[], Awaitable[T]]


def effect(
    stage: str,
    sync: Callable[P, T],
    asynchronous: Callable[P, Awaitable[T]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> Effect[T]:
    """An `Effect` calling `sync(*args, **kwargs)` or `await asynchronous(*args, **kwargs)`: both
    callables are named directly and must take the same arguments and give the same result type."""
    return Effect(stage, partial(sync, *args, **kwargs), partial(asynchronous, *args, **kwargs))


class EffectFailed(Exception):
    """An effect raised: a backend (scorer, cache, embedder, user plugin) failed, not the plan."""

    def __init__(self, stage: str, cause: Exception) -> None:
        super().__init__(f"{stage} failed: {type(cause).__name__}")
        self.stage = stage
        self.cause = cause


Plan = Generator[Effect[Any], Any, T]
"""A generator yielding effects and returning a `T`; drive it with `run` or `arun`."""

StageTimer = Callable[[str], AbstractContextManager[object]]
"""Wraps each effect, given its stage name: how observers time and trace the I/O."""

_UNTIMED: AbstractContextManager[object] = nullcontext()


def ask(request: Effect[T]) -> Generator[Effect[T], T, T]:
    """`answer = yield from ask(effect)`: performs `effect` and gives its answer its declared type."""
    return (yield request)


def run(plan: Plan[T], timer: StageTimer | None = None) -> T:
    """Drive `plan` to completion, performing each effect with a plain call (inside `timer(stage)`)."""
    try:
        request = next(plan)
        while True:
            try:
                with _UNTIMED if timer is None else timer(request.stage):
                    answer = request.sync()
            except Exception as failure:
                request = plan.throw(EffectFailed(request.stage, failure))
            else:
                request = plan.send(answer)
    except StopIteration as done:
        result: T = done.value
        return result


async def arun(plan: Plan[T], timer: StageTimer | None = None) -> T:
    """Drive `plan` to completion, awaiting each effect natively (inside `timer(stage)`)."""
    try:
        request = next(plan)
        while True:
            try:
                with _UNTIMED if timer is None else timer(request.stage):
                    answer = await request.asynchronous()
            except Exception as failure:
                request = plan.throw(EffectFailed(request.stage, failure))
            else:
                request = plan.send(answer)
    except StopIteration as done:
        result: T = done.value
        return result
