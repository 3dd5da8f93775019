"""`RerankMonitor`: per-call records, time-windowed aggregates, alert hooks and a JSON-lines log.

    monitor = RerankMonitor(rules=[latency_over(1.0), gain_below(0.02)], on_alert=[page_me], log_path="rerank.jsonl")
    reranker = Reranker(scorer, observers=[monitor])
    monitor.window(300)            # WindowStats over the last 5 minutes

Windows are by time (calls that ended in the last N seconds), not by call count. Records are kept
for `retention_s` (and at most `max_records`, so memory stays bounded under any load); a window
reaching past what is kept says so (`WindowStats.complete`). Rules are evaluated every
`evaluate_every_s` on the monitor's own daemon thread, so neither the aggregation nor a slow hook
ever delays a rerank call (`evaluate_every_s=0`: after every call, on the calling thread).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rerank_prod.observability.alerts import Alert, AlertRule
from rerank_prod.observability.base import Finished, breakers, scorer_kind
from rerank_prod.observability.records import CallRecord, WindowStats, record_call, summarize
from rerank_prod.resilience import CircuitBreaker
from rerank_prod.validation import check_int, check_number

if TYPE_CHECKING:
    from rerank_prod.pipeline import Reranker

logger = logging.getLogger("rerank_prod")

AlertHook = Callable[[Alert], object]


class RerankMonitor:
    """Watches every call of the rerankers it is attached to (`Reranker(observers=[monitor])`).

    - `rules`: `AlertRule`s (`latency_over`, `gain_below`, `fallback_rate_over`, `shed_rate_over`,
      `breaker_open`, or your own); `on_alert`: callables given each `Alert` (firing and resolved).
      A hook that raises is logged, never propagated into a rerank call.
    - `log_path`: append one JSON object per call (and per alert) to this file, for
      `rerank-prod report`. No query or passage text is written.
    - `gain_k`: the k of the relevance-gain signal (see `rerank_prod.observability.records`).
    - `evaluate_every_s`: how often the rules are checked, on a daemon thread (0: after every call,
      inline); `check()` evaluates them now. `close()` stops the thread and closes the log.
    - `clock`: wall-clock seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        rules: Iterable[AlertRule] = (),
        on_alert: Iterable[AlertHook] = (),
        log_path: str | Path | None = None,
        retention_s: float = 3600.0,
        max_records: int = 100_000,
        gain_k: int = 10,
        evaluate_every_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = tuple(rules)
        for position, rule in enumerate(self.rules):
            if not isinstance(rule, AlertRule):
                raise TypeError(f"rules[{position}] must be an AlertRule, got {type(rule).__name__}")
        self.hooks = tuple(on_alert)
        for position, hook in enumerate(self.hooks):
            if not callable(hook):
                raise TypeError(f"on_alert[{position}] must be callable, got {type(hook).__name__}")
        self.retention_s = check_number("retention_s", retention_s)
        check_int("max_records", max_records)
        self.gain_k = check_int("gain_k", gain_k)
        self.evaluate_every_s = check_number("evaluate_every_s", evaluate_every_s, allow_zero=True)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        self._clock = clock
        self._lock = threading.Lock()
        self._records: deque[CallRecord] = deque(maxlen=max_records)
        self._evicted_until = -float("inf")
        self._breakers: list[CircuitBreaker] = []
        self._firing: dict[str, bool] = {rule.name: False for rule in self.rules}
        self._checking = threading.Lock()
        self._log: TextIO | None = None
        if log_path is not None:
            path = Path(log_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = path.open("a", encoding="utf-8", buffering=1)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if self.rules and self.evaluate_every_s > 0:
            self._thread = threading.Thread(
                target=_evaluate_periodically,
                args=(weakref.ref(self), self._stopped, self.evaluate_every_s),
                name="rerank-prod-monitor",
                daemon=True,
            )
            self._thread.start()

    def bind(self, reranker: Reranker) -> _MonitorBinding:
        """Observer hook: called by `Reranker` once; watches its scorers' circuit breakers too."""
        with self._lock:
            for _, breaker in breakers(reranker):
                if all(breaker is not known for known in self._breakers):
                    self._breakers.append(breaker)
        return _MonitorBinding(self, reranker.scorer.name, scorer_kind(reranker))

    # --- reading -------------------------------------------------------------------------------

    def records(self, seconds: float | None = None) -> list[CallRecord]:
        """Kept records, oldest first; only those that ended in the last `seconds` when given."""
        since = -float("inf") if seconds is None else self._clock() - check_number("seconds", seconds)
        with self._lock:
            return self._since(since)

    def _since(self, start: float) -> list[CallRecord]:
        """Records that ended at `start` or later, walking back from the newest: the cost is the
        window's size, not everything kept. Call with the lock held."""
        recent = []
        for record in reversed(self._records):
            if record.ts < start:
                break
            recent.append(record)
        recent.reverse()
        return recent

    def window(self, seconds: float) -> WindowStats:
        """Aggregates (latency mean/p50/p95/p99/max, fallback/shed/skip rates, gain) over the
        calls that ended in the last `seconds`."""
        check_number("seconds", seconds)
        end = self._clock()
        start = end - seconds
        with self._lock:
            records = self._since(start)
            complete = seconds <= self.retention_s and start > self._evicted_until
        return summarize(records, start=start, end=end, complete=complete, breakers_open=self._open_breakers())

    @property
    def firing(self) -> list[str]:
        """Names of the rules firing now."""
        with self._lock:
            return [name for name, firing in self._firing.items() if firing]

    # --- alerts ---------------------------------------------------------------------------------

    def check(self) -> list[Alert]:
        """Evaluate every rule now; returns (and hands to the hooks) the alerts whose state changed."""
        with self._checking:
            changed: list[Alert] = []
            windows: dict[float, WindowStats] = {}
            for rule in self.rules:
                if rule.window_s not in windows:
                    windows[rule.window_s] = self.window(rule.window_s)
                stats = windows[rule.window_s]
                verdict = rule.breached(stats)
                if verdict is None or verdict[0] == self._firing[rule.name]:
                    continue
                breached, value = verdict
                with self._lock:
                    self._firing[rule.name] = breached
                alert = Alert(
                    rule.name, rule.statistic, breached, value, rule.threshold, rule.window_s, stats.calls, stats.end
                )
                changed.append(alert)
        for alert in changed:
            self._announce(alert)
        return changed

    def _announce(self, alert: Alert) -> None:
        (logger.warning if alert.firing else logger.info)("rerank alert %s", alert.message)
        self._write(alert.as_event())
        for hook in self.hooks:
            try:
                hook(alert)
            except Exception:
                logger.exception("alert hook %r failed on %s", hook, alert.rule)

    def _open_breakers(self) -> int:
        with self._lock:
            breakers = list(self._breakers)
        return sum(1 for breaker in breakers if breaker.state == CircuitBreaker.OPEN)

    # --- recording ------------------------------------------------------------------------------

    def record(self, outcome: Finished, model: str, scorer: str) -> CallRecord:
        """Keep (and log) the record of one finished call; evaluates the rules when they are due."""
        now = self._clock()
        record = record_call(outcome, ts=now, model=model, scorer=scorer, gain_k=self.gain_k)
        with self._lock:
            records = self._records
            if len(records) == records.maxlen:
                self._evicted_until = records[0].ts
            records.append(record)
            horizon = now - self.retention_s
            while records[0].ts < horizon:
                records.popleft()
        self._write(record.as_event())
        if self.rules and self.evaluate_every_s == 0:
            self.check()
        return record

    def _write(self, event: dict[str, Any]) -> None:
        if self._log is None:
            return
        line = json.dumps(event, separators=(",", ":")) + "\n"
        try:
            with self._lock:
                self._log.write(line)
        except (OSError, ValueError) as failure:  # ValueError: written after close()
            logger.warning("rerank monitor: event log write failed: %s", failure)

    def close(self) -> None:
        """Stop the rule thread and close the event log (records and windows stay readable)."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)  # a hook still running keeps it a little longer; it is a daemon
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __repr__(self) -> str:
        return f"RerankMonitor(rules={[rule.name for rule in self.rules]}, retention_s={self.retention_s:g})"


def _evaluate_periodically(monitor: weakref.ref[RerankMonitor], stopped: threading.Event, every_s: float) -> None:
    """The rule thread; holds the monitor weakly so an unclosed, unused monitor can still be freed."""
    while not stopped.wait(every_s):
        alive = monitor()
        if alive is None:
            return
        try:
            alive.check()
        except Exception:
            logger.exception("rerank monitor: evaluating the alert rules failed")
        del alive


class _MonitorBinding:
    """The monitor as one reranker's observer; stateless per call, so it is its own observation."""

    __slots__ = ("_monitor", "_model", "_scorer")

    def __init__(self, monitor: RerankMonitor, model: str, scorer: str) -> None:
        self._monitor = monitor
        self._model = model
        self._scorer = scorer

    def start(self, candidates: int, top_n: int | None) -> _MonitorBinding:
        return self

    def stage_started(self, stage: str) -> None:
        return None

    def stage_ended(self, token: object, error: BaseException | None) -> None:
        return None

    def finished(self, outcome: Finished) -> None:
        self._monitor.record(outcome, self._model, self._scorer)

    def closed(self, error: BaseException | None) -> None:
        return None
