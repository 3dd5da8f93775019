"""One scoring engine per local model, shared by every caller in the process.

Why: a thread per call lets N callers start N forward passes that fight for 2 cores, so none of
them finishes within its budget and the work of callers that gave up keeps running. The engine
instead owns a fixed set of worker threads (as many as the cores allow with torch's intra-op
threads), takes requests into a bounded queue, and computes micro-batches of pairs that may mix
several callers' requests (waiting a few ms for more). Each request is scored in retriever order,
one chunk at a time; before every chunk the engine drops requests whose callers left or whose
deadline the chunk would miss. A request that cannot be served within its budget, by the measured
service time (a fixed cost per forward pass plus a cost per unit of text, fitted over recent
passes: `ServiceTime`) and the work queued ahead of it, is refused at
once (`ScoringShed`) so the caller can fall back while it still has time. A caller whose deadline
ends mid-way gets the scores done so far (`PartialScores`), never waits for the chunk in flight,
and callers are woken by the workers themselves: no thread of the caller's event loop is involved,
so `asyncio.run` never waits for abandoned work.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from rerank_prod.deadline import Deadline
from rerank_prod.errors import PartialScores, ScorerError, ScoringShed, ScoringTimeout
from rerank_prod.loop_lag import resume_delay
from rerank_prod.service_time import ServiceTime, SettingChoice
from rerank_prod.validation import check_int, check_number

Pair = tuple[str, str]
Compute = Callable[[list[Pair]], Sequence[float]]

_FIT_WEIGHT = 0.2  # of the newest pass in the service-time fit
_CALIBRATION_PAIRS = 4  # the first batch, before anything is measured, stays this small
_TIME_LEFT_SHARE = 0.75
"""A chunk after a request's first pair is estimated to end within this share of its time left (and
`max_chunk_s`). Half was tried first: with a fixed cost per pass (~20 ms under a storm) the last
chunks before a deadline held one or two pairs; 0.75 doubled the pairs per pass (3.4 -> 8 under 64
asyncio callers) with the latency maximum still within 35 ms of the budget."""
_LEAST_SHARE = 0.5
"""A request too big to finish within its budget is admitted when at least this share of its budget
is left to it after the work queued ahead, or its first pair needs more. Admitting it as soon as its
first pair fitted left each caller of a storm the sliver between the deadline of the request ahead
and its own: measured with 64 asyncio callers of 20 passages on 2 cores, 221 of 269 admitted calls
got one pair (retriever order, labelled partial), in passes of 1.15 pairs that cost ~30 ms each."""
_LIVE: weakref.WeakSet[ScoringEngine] = weakref.WeakSet()
_PYTHON_SWITCH_INTERVAL_S = 0.005  # CPython's default: nobody chose one
SWITCH_INTERVAL_S = 0.0002


def shorten_switch_interval(seconds: float = SWITCH_INTERVAL_S) -> None:
    """Lower the interpreter's switch interval to `seconds` unless someone chose one already.

    Why: a worker takes the interpreter lock back after every native call (a tokenizer call, a
    forward pass, each tensor op around it). While another thread runs Python (an event loop
    answering a storm of shed calls, request threads), each take waits out the switch interval:
    5 ms by default, so a forward pass of two pairs took 65-100 ms instead of 5 (measured, 64 asyncio
    callers, 2 cores), the engine's estimate rose, and it shed nearly everything. At 1 ms the same
    storm got ~40x the model-answered calls; at 0.2 ms the engine scored another 10-20% more pairs
    under 64 asyncio callers and ~40% more under 16 threads (20 passages of 25 words, budget 0.3 s,
    3 interleaved rounds; 0.1 ms was no better for asyncio). Python threads that only run Python lose
    some throughput to the more frequent hand-overs (the storms' shed calls: 5% fewer under asyncio,
    14% under threads). Any other value set with `sys.setswitchinterval` (before or after) is the
    user's choice and is left alone."""
    if sys.getswitchinterval() == _PYTHON_SWITCH_INTERVAL_S:
        sys.setswitchinterval(seconds)


@atexit.register
def _close_all() -> None:
    """Let each worker finish its chunk before the interpreter exits (a daemon thread killed inside a
    torch kernel aborts the process)."""
    for engine in list(_LIVE):
        engine.close()


def default_workers(intra_op_threads: int) -> int:
    """Concurrent forward passes the machine has cores for: usable cores / threads each pass uses."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, intra_op_threads))


@dataclass(eq=False)
class _Request:
    pairs: list[Pair]
    units: list[float]
    deadline: Deadline | None
    submitted: float
    wake: Callable[[], None]
    order: list[int]
    """Input position of each pair: retriever order, or longest first when no deadline can cut it."""
    scores: list[float | None] = field(init=False)
    handed_out: int = 0
    done: int = 0
    abandoned: bool = False
    failure: BaseException | None = None
    probe: bool = False
    """Admitted by an idle engine against its estimate: its first pair is computed even if the
    estimate says it cannot finish in time (at most that one pair runs past the deadline)."""

    def __post_init__(self) -> None:
        self.scores = [None] * len(self.pairs)

    def prefix(self) -> list[float]:
        """The scores done so far in retriever order (a chunk finishing early leaves no gap)."""
        prefix: list[float] = []
        for score in self.scores:
            if score is None:
                break
            prefix.append(score)
        return prefix


class ScoringEngine:
    """Scores (query, text) pairs for many callers with `compute`, run by the engine's own workers.

    - `compute(pairs)`: one forward pass; one finite float per pair, in order.
    - `workers`: concurrent computations (default: cores / torch intra-op threads).
    - `max_batch_pairs`: the most pairs in one forward pass (a chunk).
    - `max_chunk_s`: a chunk holding a request with a deadline is cut so that its estimated time
      stays below this: the most any work runs past a caller's deadline. Requests without a
      deadline go in full batches, so the same call gives the same batches and the same scores.
    - `batch_wait_s`: how long a worker waits for more pairs before a batch that is not full.
    - `max_queued_pairs`: bound of the queue; beyond it requests are shed.
    - `unit_cap`: text length (characters of query + text) beyond which a pair costs no more
      (the model truncates): the unit of the service-time estimate.
    - `thread_counts` with `set_threads`: intra-op thread counts a worker may run a pass with
      (`set_threads(n)` is called in the worker before a pass with a new count); the engine runs
      the one measured fastest under the current load (`SettingChoice`), the first until then.
    - `on_close`: called by `close()` before it waits for the workers (a model process to stop with them).

    Thread-safe. Workers are daemon threads that live until `close()` (called at interpreter exit).
    Creating an engine shortens the interpreter's switch interval (`shorten_switch_interval`).
    """

    def __init__(
        self,
        compute: Compute,
        *,
        name: str,
        workers: int = 1,
        max_batch_pairs: int = 32,
        max_chunk_s: float = 0.05,
        batch_wait_s: float = 0.003,
        max_queued_pairs: int = 4096,
        unit_cap: int = 2048,
        thread_counts: Sequence[int] = (),
        set_threads: Callable[[int], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.workers = check_int("workers", workers)
        self.max_batch_pairs = check_int("max_batch_pairs", max_batch_pairs)
        self.max_chunk_s = check_number("max_chunk_s", max_chunk_s)
        self.batch_wait_s = check_number("batch_wait_s", batch_wait_s, allow_zero=True)
        self.max_queued_pairs = check_int("max_queued_pairs", max_queued_pairs)
        self.unit_cap = check_int("unit_cap", unit_cap)
        if thread_counts and set_threads is None:
            raise ValueError("thread_counts needs set_threads, the function that applies one")
        self._compute = compute
        self._on_close = on_close
        self._set_threads = set_threads if thread_counts else None
        self._settings = SettingChoice(
            tuple(check_int("thread count", count) for count in thread_counts) or (0,), weight=_FIT_WEIGHT
        )
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_units = 0.0
        self._in_flight_units = 0.0
        self._in_flight_passes = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._run, name=f"rerank-prod-engine-{i}", daemon=True) for i in range(workers)
        ]
        shorten_switch_interval()
        for thread in self._threads:
            thread.start()
        _LIVE.add(self)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers after their current chunk; queued requests fail with `ScorerError`."""
        with self._lock:
            self._closing = True
            queued = list(self._queue)
            for request in queued:
                request.failure = ScorerError(f"{self.name}: the scoring engine is closed")
                self._drop(request)
            self._work.notify_all()
        for request in queued:
            request.wake()
        if self._on_close is not None:  # first: a pass waiting on what it closes ends at once
            self._on_close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)

    # --- callers ---------------------------------------------------------------------------------

    def score(self, query: str, texts: Sequence[str], deadline: Deadline | None = None) -> list[float]:
        """Scores for all `texts`, in order, computed by the engine's workers.

        Raises `ScoringShed` when the request cannot be served within `deadline` (refused before any
        work), `PartialScores` (carrying the scores of the first k texts) or `ScoringTimeout` (none
        scored) when the deadline ends first, and `ScorerError` when the model failed."""
        if not texts:
            return []
        woken = threading.Event()
        request = self._submit(query, texts, deadline, woken.set)
        woken.wait(None if deadline is None else deadline.remaining())
        return self._outcome(request)

    async def ascore(self, query: str, texts: Sequence[str], deadline: Deadline | None = None) -> list[float]:
        """`score` for coroutines: the loop is woken by the worker (`call_soon_threadsafe`), never
        blocked, and a cancelled or timed-out caller leaves nothing for the loop to wait for.

        The request is served by `deadline` less the loop's recent delay in resuming waiters
        (`rerank_prod.loop_lag`), so that a loop that lags under a storm of callers still resumes
        this caller by `deadline`; each wake-up the worker sends measures that delay."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        delays = resume_delay(loop)
        deadline = delays.shorten(deadline)
        # A bare future and a timer, not `wait_for` on an event: a timeout then resumes the caller in
        # one pass of the loop instead of three (cancel the inner wait, let it finish, resume), each
        # as long as the loop's lag under a storm.
        woken: asyncio.Future[None] = loop.create_future()
        ready_at: list[float] = []  # when the caller could go on: the worker's wake-up, or the deadline

        def settle(at: float) -> None:
            if not woken.done():
                ready_at.append(at)
                woken.set_result(None)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle, time.monotonic())

        request = self._submit(query, texts, deadline, wake)
        timer = None if deadline is None else loop.call_later(deadline.remaining(), settle, deadline.expires_at)
        try:
            await woken
        except BaseException:
            self._abandon(request)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        delays.observe(time.monotonic() - ready_at[0])
        return self._outcome(request)

    def snapshot(self) -> dict[str, float | int | None]:
        """Counters (requests served, partial, timed out, shed, pairs scored, forward passes run,
        pairs wasted past a deadline), the queue and the service-time estimate (seconds per pass
        plus seconds per unit of text, see `ServiceTime`), for metrics and benchmarks.
        `pairs / batches` above one caller's list size shows calls sharing passes."""
        with self._lock:
            return {
                **{
                    key: self._counts[key]
                    for key in ("served", "partial", "timeout", "shed", "pairs", "batches", "wasted_pairs")
                },
                "queued_requests": len(self._queue),
                "queued_units": self._queued_units,
                "seconds_per_pass": self._service.per_pass_s if self._service.measured else None,
                "seconds_per_unit": self._service.per_unit_s,
                "threads": self._settings.current or None,
            }

    # --- admission and outcome -------------------------------------------------------------------

    @property
    def _service(self) -> ServiceTime:
        """The service-time estimate admission uses: that of the setting the workers run now."""
        return self._settings.service

    def _units(self, query: str, text: str) -> float:
        return float(min(len(query) + len(text), self.unit_cap) + 16)  # +16: special tokens, per-pair overhead

    def _submit(
        self, query: str, texts: Sequence[str], deadline: Deadline | None, wake: Callable[[], None]
    ) -> _Request:
        order = list(range(len(texts)))
        if deadline is None:  # nothing partial can come of it: longest first, as CrossEncoder.predict, less padding
            order.sort(key=lambda i: -len(texts[i]))
        pairs = [(query, texts[i]) for i in order]
        units = [self._units(query, text) for _, text in pairs]
        request = _Request(pairs, units, deadline, time.monotonic(), wake, order)
        with self._lock:
            queued_pairs = sum(len(r.pairs) - r.handed_out for r in self._queue)
            if queued_pairs + len(pairs) > self.max_queued_pairs:
                self._counts["shed"] += 1
                raise ScoringShed("shed by the engine: queue full")
            if self._closing:
                raise ScorerError(f"{self.name}: the scoring engine is closed")
            if deadline is not None:
                request.probe = self._admit_within(deadline, units)
            self._queue.append(request)
            self._queued_units += sum(units)
            self._work.notify()
        return request

    def _admit_within(self, deadline: Deadline, units: list[float]) -> bool:
        """Refuse (with the lock held) what cannot be served before `deadline`: a request that fits
        its budget alone must fit behind the queue; one too big for it must get `_LEAST_SHARE` of its
        budget behind the queue, and at least its first pair (anytime ranking), whatever `max_chunk_s`
        says: the chunk is cut to what the deadline allows. True: admitted as a probe (see `_Request.probe`)."""
        # a worker takes a deadline-bound request's first pair alone if need be
        first_pair = self._service.seconds(units[0])
        if first_pair is None:
            return False  # nothing measured yet: admit, the first batch gives the estimate
        remaining = deadline.remaining()
        if not self._queue and not self._in_flight_passes and first_pair > remaining:
            # an idle engine whose estimate says not even one pair fits: that estimate may be stale
            # (inflated under a storm) and would shed every call forever; one pair measures afresh
            return True
        ahead = self._work_ahead()
        own = cast(float, self._service.seconds(sum(units), math.ceil(len(units) / self.max_batch_pairs)))
        # too big for its budget: admitted only when it gets a useful share of the budget (anytime ranking)
        needed = ahead + (own if own <= remaining else max(first_pair, _LEAST_SHARE * remaining))
        if needed > remaining:
            self._counts["shed"] += 1
            raise ScoringShed("shed by the engine: the work queued ahead would not let it finish within budget")
        return False

    def _work_ahead(self) -> float:
        """Seconds until the workers reach a request queued now (lock held, estimate measured),
        served in order. Queued requests share passes (a pass per `max_batch_pairs` pairs). A
        request with a deadline is cut there: it holds the workers until its deadline at most,
        however many of its pairs are still queued, and not at all if its deadline comes first."""
        service = self._service
        clock = cast(float, service.seconds(self._in_flight_units, self._in_flight_passes)) / self.workers
        for request in self._queue:
            left = len(request.pairs) - request.handed_out
            units = sum(request.units[request.handed_out :])
            work = cast(float, service.seconds(units, left / self.max_batch_pairs)) / self.workers
            ends = clock + work if request.deadline is None else min(clock + work, request.deadline.remaining())
            clock = max(clock, ends)
        return clock

    def _abandon(self, request: _Request) -> None:
        with self._lock:
            self._drop(request)

    def _drop(self, request: _Request) -> None:
        """Take `request` out of the queue (lock held): its remaining pairs are never computed."""
        if request.abandoned:
            return
        request.abandoned = True
        if request in self._queue:
            self._queue.remove(request)
            self._queued_units -= sum(request.units[request.handed_out :])

    def _outcome(self, request: _Request) -> list[float]:
        with self._lock:
            if request.failure is not None:
                raise ScorerError(f"{self.name} failed: {type(request.failure).__name__}") from request.failure
            if request.done == len(request.pairs):
                self._counts["served"] += 1
                scores = [0.0] * len(request.pairs)
                for position, index in enumerate(request.order):
                    scores[index] = cast(float, request.scores[position])
                return scores
            self._drop(request)
            prefix = request.prefix()
        elapsed = time.monotonic() - request.submitted
        with self._lock:
            self._counts["partial" if prefix else "timeout"] += 1
        if prefix:
            raise PartialScores(prefix, len(request.pairs), elapsed)
        raise ScoringTimeout("timeout before any pair was scored")

    # --- workers ---------------------------------------------------------------------------------

    def _run(self) -> None:
        applied: int | None = None
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            batch, setting = taken
            if not batch:
                continue
            started = time.monotonic()
            try:
                if self._set_threads is not None and setting != applied:
                    self._set_threads(setting)
                    applied = setting
                scores = list(self._compute([pair for request, index in batch for pair in [request.pairs[index]]]))
                if len(scores) != len(batch):
                    raise ScorerError(f"{self.name} returned {len(scores)} scores for {len(batch)} pairs")
            except BaseException as failure:  # reported to every caller in the batch; the worker lives on
                self._settle(batch, setting, None, failure, 0.0)
            else:
                self._settle(batch, setting, scores, None, time.monotonic() - started)

    def _next_batch(self) -> tuple[list[tuple[_Request, int]], int] | None:
        """Wait for work, then take up to a chunk of pairs from the head of the queue, skipping
        requests whose callers left or whose deadline the chunk would miss (empty: all were skipped;
        None: the engine is closing), and the setting (thread count) to compute it with."""
        with self._lock:
            while not self._queue and not self._closing:
                self._work.wait()
            if self._closing:
                return None
            if self.batch_wait_s and self._queued_pair_count() < self.max_batch_pairs:
                self._work.wait_for(lambda: self._queued_pair_count() >= self.max_batch_pairs, self.batch_wait_s)
            setting = self._settings.next_setting()
            service = self._settings.services[setting]  # chunks are cut by the speed of the setting they run with
            most = self.max_batch_pairs if service.measured else _CALIBRATION_PAIRS
            batch: list[tuple[_Request, int]] = []
            units, deadline_left, chunk_s = 0.0, float("inf"), float("inf")
            for request in list(self._queue):
                if request.deadline is not None:
                    deadline_left = min(deadline_left, request.deadline.remaining())
                    chunk_s = self.max_chunk_s
                while request.handed_out < len(request.pairs) and len(batch) < most:
                    cost = request.units[request.handed_out]
                    # the first pair is bounded by the deadlines only; the others by the chunk time and
                    # a share of the time left, so a chunk ends before the deadline it serves
                    limit = deadline_left if not batch else min(deadline_left * _TIME_LEFT_SHARE, chunk_s)
                    probe = not batch and request.probe and request.handed_out == 0 and deadline_left > 0
                    estimate = service.seconds(units + cost)
                    if estimate is not None and estimate > limit and not probe:
                        break
                    batch.append((request, request.handed_out))
                    request.handed_out += 1
                    units += cost
                if request.handed_out == len(request.pairs):
                    self._queue.remove(request)
                elif not batch:  # not even one of its pairs ends before its deadline: stop it now
                    self._drop(request)
                    request.wake()
                    deadline_left = chunk_s = float("inf")
                    continue
                if request.handed_out < len(request.pairs) or len(batch) == most:
                    break  # the chunk is full (pairs or time): the rest waits for the next one
            self._queued_units -= units
            self._in_flight_units += units
            self._in_flight_passes += bool(batch)
            return batch, setting

    def _queued_pair_count(self) -> int:
        return sum(len(request.pairs) - request.handed_out for request in self._queue)

    def _settle(
        self,
        batch: list[tuple[_Request, int]],
        setting: int,
        scores: list[float] | None,
        failure: BaseException | None,
        elapsed: float,
    ) -> None:
        units = sum(request.units[index] for request, index in batch)
        finished: list[_Request] = []
        with self._lock:
            self._in_flight_units -= units
            self._in_flight_passes -= 1
            self._counts["batches"] += 1
            if scores is not None:
                self._settings.observe(setting, units, elapsed)
            for position, (request, index) in enumerate(batch):
                if failure is not None:
                    if request.failure is None and not request.abandoned:
                        request.failure = failure
                        self._drop(request)
                        finished.append(request)
                    continue
                assert scores is not None
                self._counts["pairs"] += 1
                if request.abandoned:
                    self._counts["wasted_pairs"] += 1
                    continue
                request.scores[index] = float(scores[position])
                request.done += 1
                if request.done == len(request.pairs):
                    finished.append(request)
        for request in finished:
            request.wake()
