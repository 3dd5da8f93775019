"""Warnings that cannot flood the log: the same kind of failure is logged at most once per interval.

Why: under overload every call may fall back (shed, timeout, a dead backend), thousands per second.
A warning per call costs a quarter of a shed call's time and buries everything else in the log; one
line per kind per interval, with the count of the ones held back, says the same thing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class ThrottledLog:
    """`warning(key, message, *args)`: logged when `key` was not logged in the last `interval_s`;
    otherwise counted, and the count is appended to the next line logged for that key.

    Thread-safe; `clock` is injectable for tests. Keys are kept per kind of failure (scorer and
    exception type), so their number stays small."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        if not self._logger.isEnabledFor(logging.WARNING):
            return
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            message += " (%d more like it in the last %.0fs not logged)"
            args = (*args, held, self._interval_s)
        self._logger.warning(message, *args)
