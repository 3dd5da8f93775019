"""Runs re-ranker configurations over identical first-stage candidates and measures them.

Scoring 30k pairs takes minutes on a CPU, so by default each distinct scorer scores each query's
candidates once: the first configuration using it calls the model (and is timed for real), later
ones get the recorded scores back and are charged the recorded model time on top of their own
measured pipeline time (caches, gate, fusion). Their latency is then what it would have been with
the same model time, which also keeps model-time noise from deciding comparisons. Configurations
with a `timeout_s` always score live: a replay cannot time out.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rerank_prod.deadline import Deadline
from rerank_prod.evaluation.configs import Spec, build_reranker
from rerank_prod.evaluation.first_stage import Ranking
from rerank_prod.evaluation.retrieval import CorpusRetriever, Pipeline, build_pipeline
from rerank_prod.gate import ConfidenceGate, GateScale
from rerank_prod.metrics import latency_summary
from rerank_prod.pipeline import Reranker
from rerank_prod.resilience import CircuitBreaker
from rerank_prod.retrieval import ExpansionResult, MultiHopResult
from rerank_prod.scoring import Scorer
from rerank_prod.types import Candidate, RerankResult, SourceKind

Recording = dict[tuple[str, tuple[str, ...]], tuple[list[float], float]]
"""(query, candidate texts) -> (scores, seconds the model took)."""


def latency_ms(seconds: Iterable[float]) -> dict[str, float | None]:
    """`latency_summary` in milliseconds, the unit reports use."""
    return {name: None if value is None else value * 1000 for name, value in latency_summary(seconds).items()}


class ReplayScorer:
    """Wraps a scorer: the first call for given (query, texts) runs the model and is recorded;
    repeats return the recording and add its model time to `replayed_s`."""

    def __init__(self, scorer: Scorer, recording: Recording) -> None:
        self.scorer = scorer
        self.recording = recording
        self.replayed_s = 0.0

    @property
    def name(self) -> str:
        return self.scorer.name

    @property
    def identity(self) -> str:
        return self.scorer.identity

    @property
    def independent_scores(self) -> bool:
        return self.scorer.independent_scores

    @property
    def circuit_breaker(self) -> CircuitBreaker | None:
        return self.scorer.circuit_breaker

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        key = (query, tuple(texts))
        if key in self.recording:
            scores, model_s = self.recording[key]
            self.replayed_s += model_s
            return list(scores)
        started = time.perf_counter()
        scores = self.scorer.score(query, texts, deadline=deadline)
        self.recording[key] = (list(scores), time.perf_counter() - started)
        return scores

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        return self.score(query, texts, deadline=deadline)

    def take_replayed_s(self) -> float:
        replayed, self.replayed_s = self.replayed_s, 0.0
        return replayed


@dataclass
class ConfigRun:
    """Everything measured for one configuration: its rankings, per-query latency and sources."""

    spec: Spec
    replayed: bool
    rankings: dict[str, Ranking] = field(default_factory=dict)
    latencies_s: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    gate_skips: int = 0
    score_cache: dict[str, int] | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def rates(self) -> dict[str, float | None]:
        """Shares of re-rank calls that fell back, were skipped by the gate, or came from the
        result cache; and the pair hit rate of the score cache when there is one."""
        calls = len(self.sources) or 1
        kinds = Counter(source.split(":", 1)[0] for source in self.sources.values())
        looked_up = self.score_cache and self.score_cache["hits"] + self.score_cache["misses"]
        return {
            "fallback": kinds[SourceKind.FALLBACK.value] / calls,
            "gate_skip": self.gate_skips / calls,
            "cache_hit": kinds[SourceKind.CACHE.value] / calls,
            "score_cache_hit": self.score_cache["hits"] / looked_up if self.score_cache and looked_up else None,
        }

    def latency_ms(self) -> dict[str, float | None]:
        return latency_ms(self.latencies_s.values())


def _ranking(result: RerankResult | MultiHopResult | ExpansionResult) -> Ranking:
    return [(item.candidate.id or "", item.relevance_score) for item in result.items]


def run_config(
    spec: Spec,
    reranker: Reranker,
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[Candidate]],
    recordings: dict[str, Recording] | None,
    *,
    progress: bool = False,
    pipeline: Pipeline | None = None,
) -> ConfigRun:
    """Re-rank every query's candidates with one configuration. `recordings` (None: never replay)
    is shared across configurations and keyed by scorer settings. `pipeline`: multi-hop or
    expansion around `reranker` (its source in the report gets the hop / variant summary)."""
    from tqdm.auto import tqdm

    replay = recordings is not None and spec.get("timeout_s") is None
    replayer = None
    if replay:
        key = json.dumps(spec["scorer"], sort_keys=True, default=str)
        replayer = ReplayScorer(reranker.scorer, recordings.setdefault(key, {}))  # type: ignore[union-attr]
        reranker.scorer = replayer
    run = ConfigRun(spec, replayed=replay)
    for qid in tqdm(list(candidates), desc=spec["name"], unit="query", disable=not progress, leave=False):
        if not candidates[qid]:
            run.rankings[qid] = []
            continue
        result = (pipeline or reranker).rerank(queries[qid], candidates[qid])
        run.rankings[qid] = _ranking(result)
        run.latencies_s[qid] = result.latency_s + (replayer.take_replayed_s() if replayer else 0.0)
        if isinstance(result, RerankResult):
            run.sources[qid] = str(result.source)
            run.gate_skips += result.gate is not None and not result.gate.rerank
        else:
            run.sources[qid] = f"{result.source} [{result.summary}]"
    if reranker.score_cache is not None:
        run.score_cache = reranker.score_cache.stats.snapshot()
    return run


SWEEP_SIGNALS = {"top_gap": "min_top_gap", "top_k_std": "min_top_k_std", "top_k_variance": "min_top_k_variance"}
"""`--sweep-signal` value -> the `ConfidenceGate` setting it sweeps (the other signals are off)."""


@dataclass(frozen=True)
class SweepPoint:
    threshold: float
    skip_rate: float
    rankings: dict[str, list[str]]
    latencies_s: list[float]


def gate_sweep(
    base: ConfigRun,
    candidates: Mapping[str, Sequence[Candidate]],
    first_stage: Mapping[str, Ranking],
    thresholds: Sequence[float],
    signal: str,
    top_k: int = 5,
    scale: GateScale = "normalized",
) -> list[SweepPoint]:
    """Replays gate decisions over an ungated configuration's results: a skipped query keeps the
    first-stage order and costs no re-rank time, the rest keep the measured ranking and latency.
    Nothing is scored again; the decisions come from the production `ConfidenceGate`."""
    if base.spec.get("gate"):
        raise ValueError(f"the gate sweep needs an ungated configuration; {base.name!r} has a gate")
    points = []
    for threshold in thresholds:
        signals: dict[str, float | None] = {name: None for name in SWEEP_SIGNALS.values()}
        signals[SWEEP_SIGNALS[signal]] = threshold
        gate = ConfidenceGate(top_k=top_k, scale=scale, **signals)
        rankings, latencies = docids(base.rankings), dict(base.latencies_s)
        skipped = [qid for qid in base.latencies_s if not gate.decide(candidates[qid]).rerank]
        for qid in skipped:
            rankings[qid] = [docid for docid, _ in first_stage[qid]]
            latencies[qid] = 0.0
        points.append(SweepPoint(threshold, len(skipped) / max(1, len(latencies)), rankings, list(latencies.values())))
    return points


def run_configs(
    specs: Sequence[Spec],
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[Candidate]],
    *,
    replay: bool = True,
    progress: bool = False,
    corpus: CorpusRetriever | None = None,
) -> list[ConfigRun]:
    """Builds every configuration before running any, so a broken one fails in seconds, not after
    the others have run for minutes. `corpus`: the retriever of multi-hop / expansion configurations."""
    rerankers = [build_reranker(spec) for spec in specs]
    pipelines = [build_pipeline(spec, reranker, corpus) for spec, reranker in zip(specs, rerankers, strict=True)]
    recordings: dict[str, Recording] | None = {} if replay else None
    return [
        run_config(
            spec,
            reranker,
            queries,
            candidates,
            recordings,
            progress=progress,
            pipeline=None if pipeline is reranker else pipeline,
        )
        for spec, reranker, pipeline in zip(specs, rerankers, pipelines, strict=True)
    ]


def docids(rankings: Mapping[str, Ranking]) -> dict[str, list[str]]:
    return {qid: [docid for docid, _ in ranking] for qid, ranking in rankings.items()}
