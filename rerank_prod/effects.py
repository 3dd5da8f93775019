"""Logic that does I/O, written once and run either synchronously or natively async.

A plan is a generator that yields the I/O it needs and receives the answers (or has the failure
thrown in at the `yield`). `run` performs each request with a plain call, `arun` with `await`, so
the sync and async paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
Plan = Generator[Any, Any, T]


@dataclass(frozen=True, slots=True)
class IO:
    """`target.method(*args)`; performed natively async as `await target.a<method>(*args)`."""

    target: Any
    method: str
    args: tuple[Any, ...] = ()

    def perform(self) -> Any:
        return getattr(self.target, self.method)(*self.args)

    async def aperform(self) -> Any:
        return await getattr(self.target, "a" + self.method)(*self.args)


def _advance(plan: Plan[T], answer: Any, failure: Exception | None) -> tuple[bool, Any]:
    """Resume the plan with the answer to its last request (or the failure it caused):
    (False, next request) while it runs, (True, result) when it is done."""
    try:
        return False, plan.throw(failure) if failure is not None else plan.send(answer)
    except StopIteration as done:
        return True, done.value


def run(plan: Plan[T], perform: Callable[[Any], Any] = IO.perform) -> T:
    done, step = _advance(plan, None, None)
    while not done:
        try:
            answer = perform(step)
        except Exception as failure:
            done, step = _advance(plan, None, failure)
        else:
            done, step = _advance(plan, answer, None)
    return step


async def arun(plan: Plan[T], aperform: Callable[[Any], Awaitable[Any]] = IO.aperform) -> T:
    done, step = _advance(plan, None, None)
    while not done:
        try:
            answer = await aperform(step)
        except Exception as failure:
            done, step = _advance(plan, None, failure)
        else:
            done, step = _advance(plan, answer, None)
    return step
