"""The effect layer: backend failures degrade, the pipeline's own bugs surface; sync and async alike."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from rerank_prod import InMemoryCache, Reranker, ResultCache, ScoreCache, SemanticCache, SourceKind
from rerank_prod.effects import EffectFailed, Plan, arun, ask, effect, run
from rerank_prod.pipeline import Reranker as PipelineReranker
from rerank_prod.pipeline import _Fresh
from tests.support import ConstantTimeScorer, FailingScorer

DOCS = ["blue sky", "a red fox", "red sky at night"]


def rerank(reranker: Reranker, use_async: bool, query: str = "red fox"):
    return asyncio.run(reranker.arerank(query, DOCS)) if use_async else reranker.rerank(query, DOCS)


def _double(value: int) -> int:
    return 2 * value


async def _adouble(value: int) -> int:
    return 2 * value


def _broken(value: int) -> int:
    raise ConnectionError(f"backend down for {value}")


async def _abroken(value: int) -> int:
    raise ConnectionError(f"backend down for {value}")


def _plan() -> Plan[tuple[int, str]]:
    doubled = yield from ask(effect("double", _double, _adouble, 21))
    try:
        yield from ask(effect("broken", _broken, _abroken, 1))
    except EffectFailed as failure:
        return doubled, f"{failure.stage}: {type(failure.cause).__name__}"
    return doubled, "no failure"


def test_a_plan_runs_the_same_sync_and_async() -> None:
    assert run(_plan()) == asyncio.run(arun(_plan())) == (42, "broken: ConnectionError")


@pytest.mark.parametrize("use_async", [False, True])
def test_a_bug_in_the_pipeline_surfaces_instead_of_falling_back(
    use_async: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    score_plan = PipelineReranker._score

    def one_score_short(self: PipelineReranker, request: object) -> Plan[_Fresh]:
        fresh = yield from score_plan(self, request)  # type: ignore[arg-type]
        return _Fresh(fresh.scores[:-1], fresh.details)  # a slip in the pipeline's own code, in the scoring stage

    monkeypatch.setattr(PipelineReranker, "_score", one_score_short)
    with pytest.raises(ValueError, match="zip"):
        rerank(Reranker(ConstantTimeScorer()), use_async)


class _BrokenBackend(InMemoryCache):
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise ConnectionError("cache down")

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise ConnectionError("cache down")


def _broken_embedder(query: str) -> list[float]:
    raise RuntimeError("embedder crashed")


@pytest.mark.parametrize("use_async", [False, True])
def test_backend_failures_still_degrade(use_async: bool) -> None:
    # A scorer that fails: fallback, labelled.
    assert rerank(Reranker(FailingScorer()), use_async).source.kind is SourceKind.FALLBACK
    # Caches and an embedder that fail: no cache for the call, the model still ranks.
    backend = _BrokenBackend()
    reranker = Reranker(
        ConstantTimeScorer(),
        result_cache=ResultCache(backend),
        score_cache=ScoreCache(backend),
        semantic_cache=SemanticCache(InMemoryCache(), _broken_embedder, embedder_identity="broken"),
    )
    result = rerank(reranker, use_async)
    assert result.source.kind is SourceKind.MODEL
    assert [item.original_rank for item in result] == [1, 2, 0]
