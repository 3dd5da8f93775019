"""A reranker whose every call falls back says so once, loudly, with the fix; one that re-ranks never does."""

from __future__ import annotations

import logging

import pytest

from rerank_prod import Reranker
from rerank_prod.never_reranked import CALLS_BEFORE_WARNING
from tests.support import ConstantTimeScorer, FailingScorer

CANDIDATES = ["red fox", "blue sky", "red sky"]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "has not re-ranked once" in r.getMessage()]


def test_a_budget_too_short_is_named_once_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    reranker = Reranker(ConstantTimeScorer(delay_s=0.5), timeout_s=0.01)
    with pytest.warns(RuntimeWarning, match="raise timeout_s"):
        for _ in range(CALLS_BEFORE_WARNING):
            assert reranker.rerank("red fox", CANDIDATES).source.kind.value == "fallback"
    for _ in range(3):
        reranker.rerank("red fox", CANDIDATES)
    [message] = _warnings(caplog)
    assert f"all {CALLS_BEFORE_WARNING} calls so far fell back" in message and "timeout after 0.01s" in message
    assert [r.levelno for r in caplog.records if r.getMessage() == message] == [logging.ERROR]


async def test_a_backend_that_always_fails_is_named(caplog: pytest.LogCaptureFixture) -> None:
    reranker = Reranker(FailingScorer())
    with pytest.warns(RuntimeWarning, match="fails on every call"):
        for _ in range(CALLS_BEFORE_WARNING):
            await reranker.arerank("red fox", CANDIDATES)
    assert "error ConnectionError" in _warnings(caplog)[0]


def test_silent_once_it_has_re_ranked(caplog: pytest.LogCaptureFixture) -> None:
    scorer = ConstantTimeScorer()
    reranker = Reranker(scorer, timeout_s=5.0)
    reranker.rerank("red fox", CANDIDATES)
    scorer.delay_s, reranker.timeout_s = 0.05, 0.005
    for _ in range(CALLS_BEFORE_WARNING + 2):
        reranker.rerank("red fox", CANDIDATES)
    assert _warnings(caplog) == []


def test_fewer_fallbacks_than_the_threshold_stay_quiet(caplog: pytest.LogCaptureFixture) -> None:
    reranker = Reranker(FailingScorer())
    for _ in range(CALLS_BEFORE_WARNING - 1):
        reranker.rerank("red fox", CANDIDATES)
    assert _warnings(caplog) == []
