"""Alert rules over a time window of calls, and the alerts they raise.

A rule watches one `WindowStats` number over the last `window_s` seconds. It fires when the
number crosses its threshold (with at least `min_calls` calls in the window) and resolves when it
crosses back: each change is one `Alert`, so a hook is called once per incident, not per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rerank_prod.observability.records import NUMERIC_STATISTICS, WindowStats
from rerank_prod.types import as_finite_float
from rerank_prod.validation import check_int, check_number, check_text

LatencyStatistic = Literal["mean", "p50", "p95", "p99", "max"]


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Fire when `statistic` (a `WindowStats` field) is above `threshold` (`above=True`) or below
    it, over the last `window_s` seconds, given at least `min_calls` calls there."""

    name: str
    statistic: str
    threshold: float
    above: bool = True
    window_s: float = 300.0
    min_calls: int = 1

    def __post_init__(self) -> None:
        check_text("name", self.name)
        if self.statistic not in NUMERIC_STATISTICS:
            raise ValueError(f"statistic must be one of {sorted(NUMERIC_STATISTICS)}, got {self.statistic!r}")
        object.__setattr__(self, "threshold", as_finite_float(self.threshold, "threshold"))
        if not isinstance(self.above, bool):
            raise TypeError(f"above must be a bool, got {type(self.above).__name__}")
        object.__setattr__(self, "window_s", check_number("window_s", self.window_s))
        check_int("min_calls", self.min_calls, minimum=0)

    def breached(self, stats: WindowStats) -> tuple[bool, float] | None:
        """(breached?, value), or None when the window has too few calls or no value to judge."""
        value = getattr(stats, self.statistic)
        if stats.calls < self.min_calls or value is None:
            return None
        return (value > self.threshold if self.above else value < self.threshold), float(value)


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule started (`firing=True`) or stopped firing, at `at` (epoch seconds)."""

    rule: str
    statistic: str
    firing: bool
    value: float
    threshold: float
    window_s: float
    calls: int
    at: float

    @property
    def message(self) -> str:
        state = "FIRING" if self.firing else "resolved"
        return (
            f"[{state}] {self.rule}: {self.statistic} = {self.value:.4g} (threshold {self.threshold:.4g}, "
            f"last {self.window_s:g}s, {self.calls} calls)"
        )

    def as_event(self) -> dict[str, Any]:
        """The JSON-lines form (`{"event": "alert", ...}`)."""
        return {
            "event": "alert",
            "rule": self.rule,
            "statistic": self.statistic,
            "firing": self.firing,
            "value": self.value,
            "threshold": self.threshold,
            "window_s": self.window_s,
            "calls": self.calls,
            "ts": self.at,
        }


def latency_over(
    threshold_s: float = 1.0, *, statistic: LatencyStatistic = "p95", window_s: float = 60.0, min_calls: int = 1
) -> AlertRule:
    """Latency over `threshold_s`: the window's p95 by default; `statistic="max"` fires on any one slow call."""
    if statistic not in ("mean", "p50", "p95", "p99", "max"):
        raise ValueError(f"statistic must be mean, p50, p95, p99 or max, got {statistic!r}")
    return AlertRule("latency_over", f"latency_{statistic}_s", threshold_s, True, window_s, min_calls)


def gain_below(threshold: float = 0.02, *, window_s: float = 300.0, min_calls: int = 20) -> AlertRule:
    """Mean relevance gain (see `rerank_prod.observability.records`) under `threshold`: the model
    has stopped changing what the retriever returns (or is getting equal scores for everything)."""
    return AlertRule("gain_below", "gain_mean", threshold, False, window_s, min_calls)


def fallback_rate_over(fraction: float = 0.05, *, window_s: float = 300.0, min_calls: int = 20) -> AlertRule:
    """More than `fraction` of the window's calls fell back (timeout, error, open breaker, shed)."""
    return AlertRule(
        "fallback_rate_over", "fallback_rate", check_number("fraction", fraction, at_most=1), True, window_s, min_calls
    )


def shed_rate_over(fraction: float = 0.05, *, window_s: float = 300.0, min_calls: int = 20) -> AlertRule:
    """More than `fraction` of the window's calls were shed (fallback reason "shed": not started
    because they could not finish in their budget)."""
    return AlertRule(
        "shed_rate_over", "shed_rate", check_number("fraction", fraction, at_most=1), True, window_s, min_calls
    )


def breaker_open(*, window_s: float = 60.0) -> AlertRule:
    """A circuit breaker of a watched scorer is open (checked with each call and on `check()`)."""
    return AlertRule("breaker_open", "breakers_open", 0, True, window_s, 0)
