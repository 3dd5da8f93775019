"""Waits bounded by a deadline end early by the loop's recent resume delay, so that a lagging loop
still resumes its callers by their deadlines: the estimate's rules, and the engine's async callers
on a loop kept busy by other coroutines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from rerank_prod.deadline import Deadline
from rerank_prod.engine import ScoringEngine
from rerank_prod.errors import PartialScores, ScoringTimeout
from rerank_prod.loop_lag import ResumeDelay, resume_delay
from tests.test_engine import Forward, texts, warmed

HOG_SLICE_S = 0.015
HOGS = 3


def test_estimate_is_a_high_quantile_of_the_recent_window() -> None:
    delays = ResumeDelay(window=10, max_age_s=60.0)
    assert delays.estimate() == 0.0
    for ms in range(100):  # only the last 10 (90..99 ms) stay in the window
        delays.observe(ms / 1000)
    assert delays.estimate() == pytest.approx(0.099)
    for _ in range(9):
        delays.observe(0.001)
    assert delays.estimate() == pytest.approx(0.099)  # one slow wake-up in ten still counts
    delays.observe(0.001)
    assert delays.estimate() == pytest.approx(0.001)


def test_old_delays_expire_and_negative_ones_count_as_zero() -> None:
    delays = ResumeDelay(window=8, max_age_s=2.0)
    delays.observe(0.05, now=100.0)
    assert delays.estimate(now=101.0) == pytest.approx(0.05)
    assert delays.estimate(now=102.5) == 0.0  # a storm that ended no longer shortens waits
    delays.observe(-0.01, now=103.0)
    assert delays.estimate(now=103.0) == 0.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        ResumeDelay(window=0)
    with pytest.raises(ValueError, match="max_age_s"):
        ResumeDelay(max_age_s=-1.0)


def test_shorten_keeps_the_budget_for_messages() -> None:
    delays = ResumeDelay()
    delays.observe(0.04)
    deadline = Deadline.after(0.3)
    shortened = delays.shorten(deadline)
    assert shortened is not None
    assert shortened.expires_at == pytest.approx(deadline.expires_at - 0.04)
    assert shortened.budget_s == 0.3
    assert delays.shorten(None) is None


def test_each_loop_keeps_its_own_record() -> None:
    async def record() -> ResumeDelay:
        return resume_delay()

    first_loop, second_loop = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        first = first_loop.run_until_complete(record())
        first.observe(0.2)
        second = second_loop.run_until_complete(record())
        assert second is not first and second.estimate() == 0.0
        assert first_loop.run_until_complete(record()) is first
    finally:
        first_loop.close()
        second_loop.close()


async def _hog(stop: asyncio.Event) -> None:
    """Python work between awaits, as request handlers under a storm: the loop lags by the hogs' slices."""
    while not stop.is_set():
        time.sleep(HOG_SLICE_S)
        await asyncio.sleep(0)


async def _lateness_under_hogs(calls: int, call: Callable[[Deadline], Awaitable[None]]) -> list[float]:
    """How late each of `calls` awaits of `call(deadline)` resumed past its deadline, on a lagging loop."""
    stop = asyncio.Event()
    hogs = [asyncio.ensure_future(_hog(stop)) for _ in range(HOGS)]
    await asyncio.sleep(0.05)
    late: list[float] = []
    try:
        for _ in range(calls):
            deadline = Deadline.after(0.25)
            await call(deadline)
            late.append(time.monotonic() - deadline.expires_at)
    finally:
        stop.set()
        await asyncio.gather(*hogs)
    return late


async def test_engine_callers_resume_by_their_deadline_on_a_lagging_loop() -> None:
    engine = warmed(ScoringEngine(Forward(per_pair_s=0.02), name="t", max_batch_pairs=2))

    async def call(deadline: Deadline) -> None:
        with pytest.raises((PartialScores, ScoringTimeout)):  # 100 pairs at 20 ms each: cut at the deadline
            await engine.ascore("q", texts(100), deadline)

    late = await _lateness_under_hogs(8, call)
    # the first calls measure the lag (each wake-up the worker sends is one sample); then they are on time
    assert max(late[3:]) < 0.01, late


async def test_without_the_estimate_the_same_callers_are_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: what the estimate prevents (so the test above can fail)."""
    monkeypatch.setattr(ResumeDelay, "estimate", lambda self, now=None: 0.0)
    engine = warmed(ScoringEngine(Forward(per_pair_s=0.02), name="t", max_batch_pairs=2))

    async def call(deadline: Deadline) -> None:
        with pytest.raises((PartialScores, ScoringTimeout)):
            await engine.ascore("q", texts(100), deadline)

    late = await _lateness_under_hogs(8, call)
    assert max(late[3:]) >= 0.01, late
