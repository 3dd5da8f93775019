"""`rerank-prod report`: a `RerankMonitor` event log (JSON lines) as a markdown report.

Summary latency and rates, calls by source, fallbacks by reason, latency over time (a table per
time bucket and, with matplotlib installed, a plot), the relevance-gain distribution and the
alerts that fired. Plots are PNG files next to the report; without matplotlib the report says so
and keeps the tables.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rerank_prod.observability.records import CallRecord, WindowStats, summarize

_NICE_BUCKETS_S = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400)
_GAIN_BINS = np.linspace(-1.0, 1.0, 21)


class ReportInputError(ValueError):
    """The event log is missing, unreadable or holds no call events."""


@dataclass
class EventLog:
    """What a monitor log holds: call records (by time), alert events, and lines that were not events."""

    calls: list[CallRecord] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    skipped_lines: int = 0


def read_events(path: Path) -> EventLog:
    """Parse a JSON-lines event log; malformed lines are counted, not fatal."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as failure:
        raise ReportInputError(f"cannot read {path}: {failure.strerror or failure}") from None
    log = EventLog()
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            if event.get("event") == "call":
                log.calls.append(CallRecord.from_event(event))
            elif event.get("event") == "alert":
                log.alerts.append(event)
            else:
                log.skipped_lines += 1
        except (ValueError, TypeError, KeyError, AttributeError):
            log.skipped_lines += 1
    if not log.calls:
        raise ReportInputError(f"{path} holds no call events (is it a RerankMonitor log_path file?)")
    log.calls.sort(key=lambda record: record.ts)
    return log


def pick_bucket(span_s: float) -> float:
    """A round bucket width giving about 24 buckets over `span_s`."""
    return float(next((width for width in _NICE_BUCKETS_S if span_s / width <= 24), _NICE_BUCKETS_S[-1]))


def buckets(calls: Sequence[CallRecord], width_s: float) -> list[WindowStats]:
    """Aggregates per time bucket [t, t + width), from the first call's bucket to the last's."""
    first = math.floor(calls[0].ts / width_s) * width_s
    grouped: dict[int, list[CallRecord]] = {}
    for record in calls:
        grouped.setdefault(int((record.ts - first) // width_s), []).append(record)
    return [
        summarize(grouped[index], start=first + index * width_s, end=first + (index + 1) * width_s)
        for index in sorted(grouped)
    ]


def build_report(log: EventLog, out: Path, *, source: str, bucket_s: float | None = None, plot: bool = True) -> str:
    """The markdown report; plot files (latency.png, gain.png) are written to `out`."""
    if bucket_s is not None and not (isinstance(bucket_s, (int, float)) and math.isfinite(bucket_s) and bucket_s > 0):
        raise ReportInputError(f"bucket must be a positive number of seconds, got {bucket_s!r}")
    calls = log.calls
    overall = summarize(calls, start=calls[0].ts, end=calls[-1].ts)
    width = bucket_s or pick_bucket(overall.end - overall.start)
    timeline = buckets(calls, width)
    gains = np.array([record.gain for record in calls if record.gain is not None], dtype=np.float64)
    no_plots = _plots(calls, timeline, gains, out) if plot else "plots not requested (--no-plot)"
    sections = [
        "# Re-ranking monitor report",
        f"{source}: {len(calls)} calls from {_utc(overall.start)} to {_utc(overall.end)} "
        f"({_duration(overall.end - overall.start)}), {len(log.alerts)} alert events"
        + (f", {log.skipped_lines} lines that were not events skipped" if log.skipped_lines else "")
        + ".",
        "## Summary",
        _table(
            ["calls", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "fallback", "shed", "gate skip", "gain mean"],
            [[str(overall.calls), *_latencies(overall), *_rates(overall), _num(overall.gain_mean)]],
        ),
        "## Calls by source",
        _table(
            ["source", "calls", "share"],
            [[kind, str(n), _pct(n / overall.calls)] for kind, n in sorted(overall.by_source.items())],
        ),
        *_fallback_section(calls),
        f"## Latency over time ({_duration(width)} buckets)",
        "![latency over time](latency.png)" if no_plots is None else f"_{no_plots}_",
        _table(
            ["bucket start (UTC)", "calls", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "fallback", "gain mean"],
            [[_utc(b.start), str(b.calls), *_latencies(b), _pct(b.fallback_rate), _num(b.gain_mean)] for b in timeline],
        ),
        "## Relevance gain",
        "Label-free: by the model's own scores, how much better the returned top-k is than the retriever's "
        "top-k, as a fraction of the call's score range (0: re-ranking changed nothing the model cares about; "
        "1: the largest possible gain). Only calls the model scored have one.",
        *_gain_section(gains, overall, plotted=no_plots is None),
        "## Alerts",
        _alerts(log.alerts),
    ]
    return "\n\n".join(sections) + "\n"


def _fallback_section(calls: Sequence[CallRecord]) -> list[str]:
    reasons = Counter((r.fallback_to, r.fallback_reason) for r in calls if r.fallback_to is not None)
    if not reasons:
        return []
    rows = [[str(to), str(reason), str(n)] for (to, reason), n in reasons.most_common()]
    return ["## Fallbacks by reason", _table(["to", "reason", "calls"], rows)]


def _gain_section(gains: np.ndarray[Any, Any], overall: WindowStats, *, plotted: bool) -> list[str]:
    if not gains.size:
        return ["_no call in the log has a gain (none was scored by the model)_"]
    p10, p50, p90 = np.percentile(gains, [10, 50, 90]).tolist()
    counts, edges = np.histogram(np.clip(gains, -1, 1), bins=_GAIN_BINS)
    rows = [
        [f"[{low:+.1f}, {high:+.1f})", str(int(n)), _pct(n / gains.size)]
        for low, high, n in zip(edges[:-1], edges[1:], counts, strict=True)
        if n
    ]
    lines = [
        f"{gains.size} calls with a gain: mean {gains.mean():.3f}, p10 {p10:.3f}, median {p50:.3f}, p90 {p90:.3f}; "
        f"mean share of the top-k the retriever had not ranked there: {_num(overall.moved_mean)}.",
    ]
    if plotted:
        lines.append("![gain distribution](gain.png)")
    lines.append(_table(["gain", "calls", "share"], rows))
    return lines


def _plots(
    calls: Sequence[CallRecord], timeline: Sequence[WindowStats], gains: np.ndarray[Any, Any], out: Path
) -> str | None:
    """Writes latency.png and gain.png; returns None, or why there are no plots."""
    if importlib.util.find_spec("matplotlib") is None:
        return "plots skipped: matplotlib is not installed (pip install matplotlib, or rerank-prod[eval])"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    start = calls[0].ts
    figure, axes = plt.subplots(figsize=(9, 4))
    axes.scatter(
        [(r.ts - start) / 60 for r in calls], [r.latency_s * 1000 for r in calls], s=4, alpha=0.3, label="calls"
    )
    middles = [((b.start + b.end) / 2 - start) / 60 for b in timeline]
    for name, values in (("p50", [b.latency_p50_s for b in timeline]), ("p95", [b.latency_p95_s for b in timeline])):
        axes.plot(middles, [1000 * v if v is not None else math.nan for v in values], marker="o", label=name)
    axes.set_xlabel(f"minutes since {_utc(start)}")
    axes.set_ylabel("latency (ms)")
    axes.set_yscale("log")
    axes.set_title("Rerank latency over time")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=110)
    plt.close(figure)
    if gains.size:
        figure, axes = plt.subplots(figsize=(6, 3.5))
        axes.hist(np.clip(gains, -1, 1), bins=_GAIN_BINS.tolist())
        axes.set_xlabel("relevance gain (label-free)")
        axes.set_ylabel("calls")
        axes.set_title("Relevance gain distribution")
        figure.tight_layout()
        figure.savefig(out / "gain.png", dpi=110)
        plt.close(figure)
    return None


def _alerts(alerts: Sequence[dict[str, Any]]) -> str:
    if not alerts:
        return "_no alert fired_"
    rows = []
    for alert in alerts:
        try:
            rows.append(
                [
                    _utc(float(alert["ts"])),
                    str(alert["rule"]),
                    "FIRING" if alert["firing"] else "resolved",
                    f"{alert['statistic']} = {float(alert['value']):.4g}",
                    f"{float(alert['threshold']):.4g}",
                    f"{float(alert['window_s']):g}s",
                ]
            )
        except (KeyError, TypeError, ValueError):
            continue
    return _table(["time (UTC)", "rule", "state", "value", "threshold", "window"], rows)


def _latencies(stats: WindowStats) -> list[str]:
    return [
        _ms(value)
        for value in (
            stats.latency_mean_s,
            stats.latency_p50_s,
            stats.latency_p95_s,
            stats.latency_p99_s,
            stats.latency_max_s,
        )
    ]


def _rates(stats: WindowStats) -> list[str]:
    return [_pct(stats.fallback_rate), _pct(stats.shed_rate), _pct(stats.skip_rate)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
