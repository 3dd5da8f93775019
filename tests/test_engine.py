"""The shared scoring engine: micro-batches, shedding, partial answers, deadlines under a caller storm.

The engine is driven by a compute function that takes a fixed time per pair (a stand-in for a
forward pass, so timings are predictable on a loaded machine); the cross-encoder tests at the end
run the real fixture model through the same engine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import cast

import pytest

from rerank_prod import Reranker, SourceKind
from rerank_prod.deadline import Deadline
from rerank_prod.engine import ScoringEngine
from rerank_prod.errors import PartialScores, ScorerError, ScoringShed, ScoringTimeout
from rerank_prod.scoring.base import LocalScorer
from rerank_prod.service_time import ServiceTime

PER_PAIR_S = 0.01


class Forward:
    """Scores a pair by the number in its text, taking PER_PAIR_S per pair; records each batch."""

    def __init__(self, per_pair_s: float = PER_PAIR_S, fail_on: str | None = None) -> None:
        self.per_pair_s = per_pair_s
        self.fail_on = fail_on
        self.batches: list[list[tuple[str, str]]] = []

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float]:
        self.batches.append(pairs)
        time.sleep(self.per_pair_s * len(pairs))
        if self.fail_on is not None and any(text == self.fail_on for _, text in pairs):
            raise RuntimeError("model exploded")
        return [float(text.split()[-1]) for _, text in pairs]


class EngineScorer(LocalScorer):
    """A local scorer served by a ScoringEngine, as CrossEncoderScorer is."""

    honours_deadline = True

    def __init__(self, engine: ScoringEngine) -> None:
        self.engine = engine

    name = "engine-test"
    identity = "engine-test"

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        return self.engine.score(query, texts, deadline)

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        return await self.engine.ascore(query, texts, deadline)


def texts(n: int) -> list[str]:
    return [f"passage {i}" for i in range(n)]


def warmed(engine: ScoringEngine) -> ScoringEngine:
    """An engine with a service-time estimate (it sheds only once it has measured something)."""
    engine.score("warm-up", texts(4))
    return engine


def test_all_pairs_scored_in_order_without_deadline() -> None:
    forward = Forward(per_pair_s=0.0)
    engine = ScoringEngine(forward, name="t", max_batch_pairs=8)
    assert engine.score("q", texts(20)) == [float(i) for i in range(20)]
    ragged = [f"{'word ' * (i % 7)}{i}" for i in range(30)]
    forward.batches.clear()
    assert engine.score("q", ragged) == [float(i) for i in range(30)]  # answered in input order
    lengths = [len(text) for batch in forward.batches for _, text in batch]
    assert lengths == sorted(lengths, reverse=True)  # computed longest first: batches of like lengths
    assert engine.score("q", []) == []


def test_concurrent_callers_share_forward_passes() -> None:
    forward = Forward(per_pair_s=0.002)
    engine = ScoringEngine(forward, name="t", max_batch_pairs=16, batch_wait_s=0.02)
    results: dict[int, list[float]] = {}

    def call(i: int) -> None:
        results[i] = engine.score(f"query {i}", texts(3))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert all(results[i] == [0.0, 1.0, 2.0] for i in range(8))
    mixed = [batch for batch in forward.batches if len({query for query, _ in batch}) > 1]
    assert mixed, "no forward pass held more than one caller's pairs"
    assert max(len(batch) for batch in forward.batches) <= 16


def test_deadline_mid_way_gives_the_first_k_scores_on_time() -> None:
    forward = Forward()
    engine = warmed(ScoringEngine(forward, name="t", max_batch_pairs=4, max_chunk_s=0.04))
    started = time.monotonic()
    with pytest.raises(PartialScores) as partial:
        engine.score("q", texts(100), Deadline.after(0.15))
    waited = time.monotonic() - started
    assert waited < 0.15 + 0.03
    scores = partial.value.scores
    assert 1 <= len(scores) < 100 and scores == [float(i) for i in range(len(scores))]
    assert partial.value.total == 100 and str(partial.value).startswith(f"partial: {len(scores)}/100 scored in")
    time.sleep(0.2)  # the abandoned rest is never computed: at most the chunk in flight is wasted
    snapshot = engine.snapshot()
    assert snapshot["wasted_pairs"] is not None and snapshot["wasted_pairs"] <= 4
    assert snapshot["queued_requests"] == 0 and snapshot["partial"] == 1


def test_work_that_cannot_fit_the_budget_is_shed_at_once() -> None:
    engine = warmed(ScoringEngine(Forward(), name="t", max_batch_pairs=8))
    blocker = threading.Thread(target=engine.score, args=("busy", texts(60)))  # ~0.6 s of queued work
    blocker.start()
    time.sleep(0.02)
    started = time.monotonic()
    with pytest.raises(ScoringShed, match="shed by the engine: "):
        engine.score("q", texts(10), Deadline.after(0.2))
    assert time.monotonic() - started < 0.02
    blocker.join(timeout=10)
    assert engine.snapshot()["shed"] == 1
    assert engine.score("q", texts(10), Deadline.after(0.5)) == [float(i) for i in range(10)]  # recovered


def test_queued_work_counts_only_until_its_callers_deadline() -> None:
    """6 s of pairs queued by a caller with 0.15 s left hold the worker 0.15 s at most: a request
    behind it that fits in what remains after that is admitted and fully scored, not shed."""
    engine = warmed(ScoringEngine(Forward(), name="t", max_batch_pairs=4, max_chunk_s=0.04))
    hurried: list[BaseException] = []

    def hurried_caller() -> None:
        try:
            engine.score("busy", texts(600), Deadline.after(0.15))
        except PartialScores as partial:
            hurried.append(partial)

    blocker = threading.Thread(target=hurried_caller)
    blocker.start()
    time.sleep(0.02)
    assert engine.score("q", texts(10), Deadline.after(0.6)) == [float(i) for i in range(10)]
    blocker.join(timeout=10)
    assert len(hurried) == 1 and engine.snapshot()["shed"] == 0


def test_a_call_too_big_for_its_budget_is_admitted_with_half_its_budget_free() -> None:
    """A call that cannot finish within its budget anyway (100 pairs of 10 ms in 0.3 s) is admitted
    only when half its budget is left to it behind the work queued ahead: not for the sliver of one
    pair that a storm of callers would otherwise each get (retriever order, labelled partial)."""
    engine = warmed(ScoringEngine(Forward(), name="t", max_batch_pairs=4, max_chunk_s=0.04))
    ahead = threading.Thread(
        target=lambda: pytest.raises(PartialScores, engine.score, "a", texts(100), Deadline.after(0.3))
    )
    ahead.start()
    time.sleep(0.1)  # the call ahead holds the worker ~0.2 s more: a third of the next one's budget
    with pytest.raises(ScoringShed, match="shed by the engine"):
        engine.score("b", texts(100), Deadline.after(0.3))
    time.sleep(0.12)  # ~0.08 s more: over two thirds of the budget is left to the next call
    with pytest.raises(PartialScores) as partial:
        engine.score("c", texts(100), Deadline.after(0.3))
    ahead.join(timeout=5)
    assert len(partial.value.scores) >= 10  # ~0.2 s of 10 ms pairs, less what the noise takes


def test_a_budget_shorter_than_a_chunk_still_gets_its_first_pairs() -> None:
    """max_chunk_s (0.2 s) above the whole budget (0.1 s) must not shed a request whose first pair
    (0.01 s) fits: it is answered partially, on time."""
    engine = warmed(ScoringEngine(Forward(), name="t", max_batch_pairs=32, max_chunk_s=0.2))
    started = time.monotonic()
    with pytest.raises(PartialScores) as partial:
        engine.score("q", texts(100), Deadline.after(0.1))
    assert time.monotonic() - started < 0.1 + 0.03
    assert 1 <= len(partial.value.scores) < 100 and engine.snapshot()["shed"] == 0


def test_an_estimate_inflated_under_a_storm_is_corrected_once_the_engine_is_idle() -> None:
    """A service-time estimate 100x too high would shed every call (nothing fits), and with nothing
    admitted it would never be measured again. An idle engine admits one call as a probe: its
    first pair re-measures, and the calls after it are served in full."""
    engine = warmed(ScoringEngine(Forward(), name="t", max_batch_pairs=8))
    storm = ServiceTime()  # 100x the measured line, as measured under a storm
    storm.observe(100.0, 100 * cast(float, engine._service.seconds(100.0)))
    engine._settings.services[engine._settings.current] = storm
    outcomes = []
    for _ in range(8):
        try:
            outcomes.append(len(engine.score("q", texts(5), Deadline.after(0.3))))
        except PartialScores as partial:
            outcomes.append(len(partial.scores))
        except (ScoringShed, ScoringTimeout):
            outcomes.append(0)
    assert outcomes[-1] == 5, outcomes  # recovered: fully scored within budget again
    assert engine.snapshot()["shed"] == 0


class FixedCostForward(Forward):
    """A pass costs PER_PASS_S whatever its size, plus a little per pair: a forward pass whose
    tokenizing and kernel launches dominate, as under a storm of Python callers."""

    PER_PASS_S = 0.04

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float]:
        time.sleep(self.PER_PASS_S)
        return super().__call__(pairs)


def test_a_fixed_cost_per_pass_is_not_charged_to_every_pair() -> None:
    """Measured on one- and four-pair passes, 0.04 s per pass + 0.002 s per pair: a 20-pair call
    costs ~0.08 s and fits a 0.3 s budget. A per-unit rate (0.042 s per pair, from the one-pair
    passes) would put it at 0.84 s and shed it or cut it to a few pairs."""
    forward = FixedCostForward(per_pair_s=0.002)
    engine = ScoringEngine(forward, name="t", max_batch_pairs=32, max_chunk_s=0.2)
    for size in (1, 4, 1, 4, 1, 4, 1):
        engine.score("warm-up", texts(size))
    per_pass = engine.snapshot()["seconds_per_pass"]
    assert per_pass is not None and 0.025 < per_pass < 0.06, engine.snapshot()
    assert engine.score("q", texts(20), Deadline.after(0.3)) == [float(i) for i in range(20)]
    assert engine.snapshot()["shed"] == 0 and engine.snapshot()["partial"] == 0


def test_the_faster_thread_count_is_chosen_by_measurement() -> None:
    """Two thread counts, the second measured 4x faster on this load: the engine moves to it after
    trying it, keeps trying the other now and then, and applies each count in the worker."""
    applied: list[int] = []
    per_pair = {2: 0.004, 1: 0.001}
    forward = Forward(per_pair_s=0.0)

    def compute(pairs: list[tuple[str, str]]) -> list[float]:
        time.sleep(per_pair[applied[-1]] * len(pairs))
        return forward(pairs)

    engine = ScoringEngine(compute, name="t", max_batch_pairs=4, thread_counts=(2, 1), set_threads=applied.append)
    engine._settings.explore_every = 5
    for _ in range(30):
        engine.score("q", texts(4))
    assert applied[0] == 2 and 1 in applied
    assert engine.snapshot()["threads"] == 1
    assert applied.count(2) >= 2, applied  # the slower count is re-tried while the faster one serves
    with pytest.raises(ValueError, match="set_threads"):
        ScoringEngine(compute, name="t", thread_counts=(2, 1))

    def refuse(count: int) -> None:
        raise RuntimeError(f"cannot apply {count} threads")

    assert ScoringEngine(forward, name="t", set_threads=refuse).score("q", texts(3)) == [0.0, 1.0, 2.0]  # no counts
    failing = ScoringEngine(forward, name="t", thread_counts=(2, 1), set_threads=refuse)
    with pytest.raises(ScorerError, match="failed: RuntimeError"):  # reported to the caller; the worker lives on
        failing.score("q", texts(3))
    with pytest.raises(ScorerError, match="failed: RuntimeError"):
        failing.score("q", texts(3))


def test_a_full_queue_sheds() -> None:
    engine = ScoringEngine(Forward(), name="t", max_batch_pairs=2, max_queued_pairs=10)
    blocker = threading.Thread(target=engine.score, args=("busy", texts(10)))
    blocker.start()
    time.sleep(0.005)
    with pytest.raises(ScoringShed, match="queue full"):
        engine.score("q", texts(5))
    blocker.join(timeout=10)


def test_a_model_failure_reaches_every_caller_of_the_batch_and_the_worker_survives() -> None:
    engine = ScoringEngine(Forward(per_pair_s=0.0, fail_on="boom"), name="t")
    with pytest.raises(ScorerError, match="failed: RuntimeError"):
        engine.score("q", ["passage 1", "boom"])
    assert engine.score("q", texts(3)) == [0.0, 1.0, 2.0]


def test_expired_in_the_queue_is_a_timeout_not_a_partial() -> None:
    engine = ScoringEngine(Forward(), name="t", max_batch_pairs=8)  # no estimate yet: nothing is shed
    blocker = threading.Thread(target=engine.score, args=("busy", texts(30)))
    blocker.start()
    time.sleep(0.005)
    with pytest.raises(ScoringTimeout, match="timeout before any pair was scored"):
        engine.score("q", texts(4), Deadline.after(0.03))
    blocker.join(timeout=10)


def test_caller_storm_stays_within_budget_and_leaves_nothing_behind() -> None:
    """24 threads calling back to back for 1.5 s with a 0.15 s budget on an engine that serves ~4."""
    engine = warmed(ScoringEngine(Forward(), name="t", max_batch_pairs=8, max_chunk_s=0.04))
    threads_before = threading.active_count()
    budget, stop_at = 0.15, time.monotonic() + 1.5
    latencies: list[float] = []
    outcomes: list[str] = []
    lock = threading.Lock()

    def caller() -> None:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                engine.score("q", texts(5), Deadline.after(budget))
                outcome = "full"
            except PartialScores:
                outcome = "partial"
            except ScoringShed:
                outcome = "shed"
            except ScoringTimeout:
                outcome = "timeout"
            with lock:
                latencies.append(time.monotonic() - started)
                outcomes.append(outcome)
            time.sleep(0.005)  # the caller uses its answer before asking again (no spinning on the GIL)

    callers = [threading.Thread(target=caller) for _ in range(24)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(timeout=10)
    assert max(latencies) < budget + 0.05
    assert outcomes.count("full") >= 1.5 / (5 * PER_PAIR_S) * 0.5  # at least half the sequential throughput
    assert "shed" in outcomes
    time.sleep(0.1)
    assert threading.active_count() <= threads_before  # nothing left behind (another test's thread may end meanwhile)
    assert engine.snapshot()["queued_requests"] == 0
    assert engine.score("q", texts(5), Deadline.after(budget)) == [float(i) for i in range(5)]  # recovered


def test_asyncio_run_does_not_wait_for_abandoned_work() -> None:
    engine = warmed(ScoringEngine(Forward(per_pair_s=0.05), name="t", max_batch_pairs=2))
    reranker = Reranker(EngineScorer(engine), timeout_s=0.12)
    started = time.monotonic()
    result = asyncio.run(reranker.arerank("q", texts(40)))
    assert time.monotonic() - started < 0.12 + 0.05
    assert result.source.kind is SourceKind.PARTIAL


async def test_a_cancelled_async_caller_frees_its_work() -> None:
    engine = warmed(ScoringEngine(Forward(), name="t", max_batch_pairs=4))
    task = asyncio.ensure_future(engine.ascore("q", texts(100)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    snapshot = engine.snapshot()
    assert snapshot["queued_requests"] == 0
    assert snapshot["pairs"] is not None and snapshot["pairs"] < 4 + 40  # warm-up + a few chunks, not 100


# --- anytime ranking through the core ---------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True])
async def test_partial_ranking_puts_scored_first_by_model_then_retriever_order(use_async: bool) -> None:
    engine = warmed(ScoringEngine(Forward(per_pair_s=0.02), name="t", max_batch_pairs=2))
    reranker = Reranker(EngineScorer(engine), timeout_s=0.15)
    candidates = texts(30)
    result = await reranker.arerank("q", candidates) if use_async else reranker.rerank("q", candidates)
    assert result.source.kind is SourceKind.PARTIAL
    scored = [item for item in result if item.rerank_score is not None]
    k = len(scored)
    assert 1 <= k < 30 and str(result.source).startswith(f"partial:{k}/30 scored in ")
    assert [item.original_rank for item in scored] == list(range(k))[::-1]  # the model: higher number first
    assert [item.original_rank for item in result][k:] == list(range(k, 30))  # the rest: retriever order
    relevance = [item.relevance_score for item in result]
    assert relevance == sorted(relevance, reverse=True)
    assert all(str(item.source) == "model" for item in scored)
    assert reranker.metrics.snapshot()["by_source"]["partial"] == 1


def test_shed_falls_back_at_once_and_says_so() -> None:
    engine = warmed(ScoringEngine(Forward(), name="t", max_batch_pairs=8))
    reranker = Reranker(EngineScorer(engine), timeout_s=0.1)
    blocker = threading.Thread(target=engine.score, args=("busy", texts(60)))
    blocker.start()
    time.sleep(0.02)
    result = reranker.rerank("q", texts(10))
    blocker.join(timeout=10)
    assert result.latency_s < 0.02
    assert (
        str(result.source)
        == "fallback:retriever order: shed by the engine: the work queued ahead would not let it finish within budget"
    )
    assert reranker.metrics.snapshot()["fallback_reasons"] == {str(result.source.detail): 1}


def test_fallback_budget_is_kept_inside_the_call_budget() -> None:
    engine = ScoringEngine(Forward(per_pair_s=0.3), name="t", max_batch_pairs=1)  # its first pair ends after 0.1 s
    secondary = EngineScorer(warmed(ScoringEngine(Forward(per_pair_s=0.0), name="fast")))
    reranker = Reranker(EngineScorer(engine), timeout_s=0.2, fallback_scorer=secondary, fallback_timeout_s=0.1)
    started = time.monotonic()
    result = reranker.rerank("q", texts(5))  # the primary gets 0.1 s and times out, then the secondary
    assert time.monotonic() - started < 0.2 + 0.03
    assert result.source.kind is SourceKind.FALLBACK and result.source.detail.startswith("secondary engine-test")
    with pytest.raises(ValueError, match="fallback_timeout_s"):
        Reranker(EngineScorer(engine), timeout_s=0.2, fallback_timeout_s=0.2)


# --- the real cross-encoder -------------------------------------------------------------------------


@pytest.mark.needs_models
def test_fp32_is_the_models_own_predict_and_bf16_has_its_own_identity(cross_encoder_path: str) -> None:
    from sentence_transformers import CrossEncoder

    from rerank_prod import CrossEncoderScorer

    passages = [f"Vitamin D and bone density, study {i}: {'calcium ' * i}" for i in range(12)]
    exact = CrossEncoderScorer(cross_encoder_path, precision="fp32", max_chunk_s=60.0, isolation="thread")  # one pass
    exact.score("warm-up", passages[:2])  # the engine's first (calibration) batch is small
    reference = CrossEncoder(cross_encoder_path).predict([("vitamin d bones", p) for p in passages], batch_size=32)
    assert exact.score("vitamin d bones", passages) == reference.tolist()  # bit for bit
    assert exact._model.model._rerank_prod_traced  # ... though its forward ran as TorchScript (traced.py)
    assert exact.precision == "fp32"
    assert exact.identity == f"cross-encoder:{cross_encoder_path}|max_length=256|activation=default"
    half = CrossEncoderScorer(cross_encoder_path, precision="bf16", isolation="thread")
    assert half.precision == "bf16" and half.identity == f"{exact.identity}|precision=bf16"
    assert half._model is not exact._model  # the fp32 weights are not converted under other users
    head, encoder = half._model.model.classifier.weight, half._model.model.bert.encoder.layer[0].output.dense.weight
    assert (str(head.dtype), str(encoder.dtype)) == ("torch.float32", "torch.bfloat16")  # the head stays fp32
    assert half.score("vitamin d bones", passages) == pytest.approx(reference.tolist(), abs=5e-3)
    import torch

    eager_bf16 = CrossEncoder(cross_encoder_path).to(torch.bfloat16)
    half_reference = eager_bf16.predict([("vitamin d bones", p) for p in passages], batch_size=32)
    # traced bf16 on its grid of shapes (traced.ShapeGrid): eager bf16's scores to within bf16 rounding
    assert half.score("vitamin d bones", passages) == pytest.approx(half_reference.tolist(), abs=1e-2)
    auto = CrossEncoderScorer(cross_encoder_path)
    assert auto.precision in ("fp32", "bf16") and auto.engine is CrossEncoderScorer(cross_encoder_path).engine
    with pytest.raises(ValueError, match="precision must be one of"):
        CrossEncoderScorer(cross_encoder_path, precision="int8")  # type: ignore[arg-type]


@pytest.mark.needs_models
def test_a_new_model_is_warmed_up_before_its_first_call(cross_encoder_path: str) -> None:
    """Tracing and TorchScript's first optimization happen when the engine is built, out of every
    budget (the README quickstart's one call, budget 0.5 s, fell back on them). The forward is traced
    on a padded batch; a batch without padding still gets the eager model's scores."""
    from sentence_transformers import CrossEncoder

    from rerank_prod import CrossEncoderScorer

    scorer = CrossEncoderScorer(cross_encoder_path, precision="fp32", max_length=224, isolation="thread")  # own model
    assert scorer._model.model._rerank_prod_traced  # traced before any call
    first = Reranker(scorer, timeout_s=0.5).rerank("vitamin d bones", ["Vitamin D and bone density.", "Soil bacteria."])
    assert first.source.kind is SourceKind.MODEL, str(first.source)
    unpadded = ["Vitamin D and bone density in older adults."] * 3
    reference = CrossEncoder(cross_encoder_path, max_length=224).predict([("vitamin d bones", p) for p in unpadded])
    assert scorer.score("vitamin d bones", unpadded) == reference.tolist()


@pytest.mark.needs_models
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_intra_op_thread_gives_the_scores_of_several(cross_encoder_path: str, precision: str) -> None:
    """The engine may run a pass with 1 thread instead of torch's count (SettingChoice): the scores
    must not depend on which it measured faster."""
    import torch

    from rerank_prod import CrossEncoderScorer

    scorer = CrossEncoderScorer(cross_encoder_path, precision=precision, isolation="thread")  # type: ignore[arg-type]
    pairs = [("vitamin d bones", f"Vitamin D and bone density, study {i}: {'calcium ' * i}") for i in range(24)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(2, threads))
        several = scorer._model.predict(pairs, batch_size=32)
        torch.set_num_threads(1)
        one = scorer._model.predict(pairs, batch_size=32)
    finally:
        torch.set_num_threads(threads)
    assert one.tolist() == several.tolist()
    if threads > 1:
        assert scorer.engine._settings.settings == (threads, 1)


@pytest.mark.needs_models
def test_cross_encoder_answers_partially_when_the_budget_is_short(cross_encoder_path: str) -> None:
    from rerank_prod import CrossEncoderScorer

    scorer = CrossEncoderScorer(cross_encoder_path)
    passages = [f"Passage {i} about vitamin D, calcium and bone density in older adults. " * 8 for i in range(200)]
    scorer.score("warm-up", passages[:8])
    reranker = Reranker(scorer, timeout_s=0.3)
    started = time.monotonic()
    result = reranker.rerank("vitamin d bone density", passages)
    assert time.monotonic() - started < 0.3 + 0.05
    assert result.source.kind is SourceKind.PARTIAL, str(result.source)
    k = sum(item.rerank_score is not None for item in result)
    assert 0 < k < 200 and [item.original_rank for item in result][k:] == list(range(k, 200))


# --- many queries at once ---------------------------------------------------------------------------


def test_rerank_many_shares_forward_passes_and_matches_single_calls() -> None:
    forward = Forward(per_pair_s=0.001)
    engine = warmed(ScoringEngine(forward, name="t", max_batch_pairs=32, batch_wait_s=0.01))
    reranker = Reranker(EngineScorer(engine), top_n=3, timeout_s=5.0)
    requests = [(f"query {i}", texts(4 + i)) for i in range(6)]
    forward.batches.clear()
    many = reranker.rerank_many(requests)
    assert [r.query for r in many] == [q for q, _ in requests]
    assert len(forward.batches) < len(requests)  # several queries per forward pass
    singles = [reranker.rerank(query, candidates) for query, candidates in requests]
    assert [[i.original_rank for i in r] for r in many] == [[i.original_rank for i in r] for r in singles]
    assert all(r.source.kind is SourceKind.MODEL for r in many)


async def test_arerank_many_validates_everything_before_any_work() -> None:
    forward = Forward(per_pair_s=0.0)
    reranker = Reranker(EngineScorer(ScoringEngine(forward, name="t")))
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        await reranker.arerank_many([("fine", ["a 1"]), ("  ", ["b 2"])])
    with pytest.raises(TypeError, match=r"request 0 must be a \(query, candidates\) tuple"):
        await reranker.arerank_many(["just a query"])  # type: ignore[list-item]
    assert forward.batches == []
    results = await reranker.arerank_many([("q", ["x 2", "y 1"]), ("r", [])])
    assert [i.candidate.text for i in results[0]] == ["x 2", "y 1"] and len(results[1]) == 0
