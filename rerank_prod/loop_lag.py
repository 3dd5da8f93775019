"""How late an event loop resumes a coroutine, so that an await bounded by a deadline ends by it.

Why: a loop runs every callback that is ready before it looks at its timers again. Under a storm of
callers that do Python work between awaits, a coroutine whose wait times out at its deadline
resumes as late as the loop lags. Measured with 64 asyncio callers of 100 candidates on 2 cores, a
0.3 s budget and loop lag p50 25 ms: every call the engine scored in part came back late, p50
326 ms and max 368 ms. So the scoring engine serves an async caller by its deadline less the delay
this loop has recently shown in resuming waiters (a high quantile of the recent delays). A loop that keeps up
shows delays of a fraction of a millisecond, so a wait there ends about on time.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import weakref

from rerank_prod.deadline import Deadline
from rerank_prod.validation import check_int, check_number

_QUANTILE = 0.9
"""The quantile of recent delays a wait ends early by. The median leaves half the calls late by
the spread of the lag. The maximum lets one stall (a garbage collection) cut every wait for the
whole window."""


class ResumeDelay:
    """Recent delays between the moment a waiting coroutine could go on (its timeout, or the wake-up
    a worker thread sent) and the moment its loop resumed it.

    The estimate is the `_QUANTILE` quantile of the last `window` delays seen within `max_age_s`
    seconds. It is 0 when none were seen. The age limit lets the estimate fall back soon after a
    storm ends, even when few calls follow it. Thread-safe: workers report the wake-ups they send."""

    def __init__(self, window: int = 64, max_age_s: float = 2.0) -> None:
        self.window = check_int("window", window)
        self.max_age_s = check_number("max_age_s", max_age_s)
        self._seen: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        self._lock = threading.Lock()

    def observe(self, delay_s: float, now: float | None = None) -> None:
        """The loop resumed a waiter `delay_s` seconds after it could have (negative counts as 0)."""
        with self._lock:
            self._seen.append((time.monotonic() if now is None else now, max(0.0, delay_s)))

    def estimate(self, now: float | None = None) -> float:
        """Seconds a wait bounded by a deadline should end early by; 0 when nothing recent was seen."""
        oldest = (time.monotonic() if now is None else now) - self.max_age_s
        with self._lock:
            while self._seen and self._seen[0][0] < oldest:
                self._seen.popleft()
            delays = sorted(delay for _, delay in self._seen)
        if not delays:
            return 0.0
        return delays[min(len(delays) - 1, int(_QUANTILE * len(delays)))]

    def shorten(self, deadline: Deadline | None) -> Deadline | None:
        """`deadline` moved earlier by the estimate: a waiter that times out then resumes by the
        original one. It keeps its `budget_s`, so messages still name the caller's budget."""
        if deadline is None:
            return None
        return Deadline(deadline.expires_at - self.estimate(), deadline.budget_s)


_DELAYS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ResumeDelay] = weakref.WeakKeyDictionary()
_DELAYS_LOCK = threading.Lock()


def resume_delay(loop: asyncio.AbstractEventLoop | None = None) -> ResumeDelay:
    """The delays of `loop` (default: the running loop). Each loop has its own, since a loop that keeps
    up must not wait less because another lags. A loop's record goes when the loop does."""
    loop = loop or asyncio.get_running_loop()
    with _DELAYS_LOCK:
        delays = _DELAYS.get(loop)
        if delays is None:
            delays = _DELAYS[loop] = ResumeDelay()
        return delays
