"""The fallback warning is throttled per kind of failure: an overload cannot flood the log."""

from __future__ import annotations

import logging

import pytest

from rerank_prod import Candidate, LocalScorer, Reranker
from rerank_prod.errors import ScoringShed
from rerank_prod.throttled_log import ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_per_interval_then_the_count_held_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = ThrottledLog(logging.getLogger("test.throttle"), interval_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        for _ in range(5):
            log.warning("a", "failed %s", "x")
        log.warning("b", "other %s", "y")  # another kind is not held back by the first
        clock.now = 10.5
        log.warning("a", "failed %s", "x")
    assert [record.getMessage() for record in caplog.records] == [
        "failed x",
        "other y",
        "failed x (4 more like it in the last 10s not logged)",
    ]


def test_a_disabled_logger_counts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    quiet = logging.getLogger("test.throttle.quiet")
    quiet.setLevel(logging.ERROR)
    log = ThrottledLog(quiet, interval_s=10.0, clock=Clock())
    for _ in range(3):
        log.warning("a", "failed")
    quiet.setLevel(logging.WARNING)
    with caplog.at_level(logging.WARNING, logger="test.throttle.quiet"):
        log.warning("a", "failed")
    assert [record.getMessage() for record in caplog.records] == ["failed"]


class Shedding(LocalScorer):
    name = "shedding"
    identity = "shedding"

    def score(self, query: str, texts, deadline=None) -> list[float]:  # type: ignore[no-untyped-def]
        raise ScoringShed("shed by the engine: test")


def test_a_storm_of_fallbacks_logs_one_warning_and_every_result_says_why(caplog: pytest.LogCaptureFixture) -> None:
    reranker = Reranker(Shedding(), timeout_s=1.0)
    candidates = [Candidate(f"text {i}", str(i)) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="rerank_prod"):
        results = [reranker.rerank("q", candidates) for _ in range(200)]
    assert all("shed by the engine: test" in result.source.detail for result in results)
    assert [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()] == [
        "re-ranking with shedding failed (ScoringShed: shed by the engine: test); falling back"
    ]
