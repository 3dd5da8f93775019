"""`rerank-prod bench --load` and `--anytime`: the budget under load, and quality as the budget shrinks.

Load: N sync threads or N asyncio callers re-rank back to back for T seconds with `timeout_s=B`.
Reported: calls, goodput (calls answered by the model, fully or partially, per second) against the
throughput of one caller alone with no budget, the share of their candidates the answered calls had
scored by the model and the scored pairs per second against one caller's (a partial answer of one
pair keeps retriever order: goodput alone would count it), fallback / shed / partial rates, latency percentiles
against the budget, event-loop lag (async), RSS and thread count over time, and how long after the
load stops a call is again fully scored by the model. RSS is compared with the idle process after a
warm-up load of the same kind (a quarter of the run, at most 5 s), its steady state: the first load
fills caches that stay (oneDNN keeps up to 1024 compiled kernels, one per matrix shape and thread
count, ~100-170 MB for the shapes a storm makes), which are not work piling up. The RSS before any
load is shown too.

Anytime: NDCG@10 of one caller at each budget (candidates scored in retriever order until the budget
ends, the rest in retriever order), next to the retriever order itself and the unbounded model.
"""

from __future__ import annotations

import array
import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rerank_prod.evaluation.bench import CandidateSet, _rss_bytes
from rerank_prod.evaluation.dataset import Qrels
from rerank_prod.evaluation.ir_metrics import evaluate, mean_metrics
from rerank_prod.evaluation.runner import latency_ms
from rerank_prod.scoring.cross_encoder import Isolation
from rerank_prod.scoring.precision import Precision
from rerank_prod.types import Candidate, RerankResult, SourceKind

_ANSWERED = (SourceKind.MODEL, SourceKind.PARTIAL)


@dataclass(frozen=True)
class LoadOptions:
    model: str
    sets: list[CandidateSet]
    mode: str = "threads"
    """"threads" (sync `rerank` from N threads) or "async" (N coroutines awaiting `arerank`)."""
    callers: int = 16
    seconds: float = 10.0
    budget_s: float = 0.3
    words: int | None = 25
    """Passages cut to this many words (None: full passages)."""
    precision: Precision = "auto"
    isolation: Isolation = "auto"
    """`CrossEncoderScorer`'s isolation; the report says which one was chosen."""
    sample_every_s: float = 0.25


def cut_words(candidates: Sequence[Candidate], words: int | None) -> list[Candidate]:
    if words is None:
        return list(candidates)
    return [Candidate(" ".join(c.text.split()[:words]), c.id, c.retrieval_score) for c in candidates]


class _Sampler:
    """RSS (MiB) and thread count every `every_s` seconds while the block runs."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Sampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(
                (time.monotonic() - self._started, (_rss_bytes() or 0) / 2**20, threading.active_count())
            )

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _reranker(model: str, precision: Precision, timeout_s: float | None, isolation: Isolation = "auto") -> Any:
    from rerank_prod import CrossEncoderScorer, Reranker

    return Reranker(CrossEncoderScorer(model, precision=precision, isolation=isolation), timeout_s=timeout_s)


def _sequential_throughput(reranker: Any, sets: list[CandidateSet], seconds: float) -> float:
    """Calls per second of one caller alone, unbounded: the capacity goodput is compared with."""
    calls, started = 0, time.monotonic()
    while time.monotonic() - started < seconds or calls < 2:
        _, query, candidates = sets[calls % len(sets)]
        reranker.rerank(query, candidates)
        calls += 1
    return calls / (time.monotonic() - started)


_KINDS = list(SourceKind)
_KIND_INDEX = {kind: index for index, kind in enumerate(_KINDS)}


class _Outcomes:
    """What the load report needs of each call, in flat arrays. Neither the results (each holds every
    candidate) nor an object per call are kept: ~150k small objects made one of the garbage
    collector's full passes take ~30 ms, which the run would then report as the re-ranker's."""

    def __init__(self) -> None:
        self.kinds = array.array("B")
        self.shed = array.array("B")
        self.latencies = array.array("d")
        self.scored = array.array("I")
        """Candidates the model scored in each call: a partial answer may hold one pair, or most."""

    def add(self, result: RerankResult) -> None:
        kind = result.source.kind
        self.kinds.append(_KIND_INDEX[kind])
        self.shed.append("shed by the engine" in result.source.detail)
        self.latencies.append(result.latency_s)
        self.scored.append(sum(item.rerank_score is not None for item in result) if kind in _ANSWERED else 0)

    def __len__(self) -> int:
        return len(self.latencies)

    def kind_counts(self) -> Counter[SourceKind]:
        return Counter(_KINDS[index] for index in self.kinds)


def _threads(reranker: Any, sets: list[CandidateSet], callers: int, seconds: float) -> _Outcomes:
    results = _Outcomes()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def caller(index: int) -> None:
        call = index
        while time.monotonic() < stop_at:
            _, query, candidates = sets[call % len(sets)]
            result = reranker.rerank(query, candidates)
            with lock:
                results.add(result)
            call += callers
            time.sleep(0)  # a server thread reads its next request: let the others (and the engine) run

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


async def _coroutines(
    reranker: Any, sets: list[CandidateSet], callers: int, seconds: float
) -> tuple[_Outcomes, list[float]]:
    results = _Outcomes()
    lags: list[float] = []
    stop_at = time.monotonic() + seconds

    async def caller(index: int) -> None:
        call = index
        while time.monotonic() < stop_at:
            _, query, candidates = sets[call % len(sets)]
            results.add(await reranker.arerank(query, candidates))
            call += callers
            await asyncio.sleep(0)  # a shed call never suspends: yield as a server awaiting its next request

    async def ticker() -> None:  # how late a 10 ms sleep wakes up: the loop's responsiveness
        while time.monotonic() < stop_at:
            started = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - started - 0.01)

    await asyncio.gather(ticker(), *(caller(i) for i in range(callers)))
    return results, lags


def _load_phase(
    reranker: Any, sets: list[CandidateSet], mode: str, callers: int, seconds: float
) -> tuple[_Outcomes, list[float]]:
    """The calls' outcomes and, for coroutines, the event loop's lags."""
    if mode == "threads":
        return _threads(reranker, sets, callers, seconds), []
    return asyncio.run(_coroutines(reranker, sets, callers, seconds))


def _recovery_s(reranker: Any, sets: list[CandidateSet], limit_s: float = 10.0) -> float | None:
    """Seconds after the load until a call is fully scored by the model again (None: not within limit_s)."""
    started = time.monotonic()
    call = 0
    while time.monotonic() - started < limit_s:
        _, query, candidates = sets[call % len(sets)]
        if reranker.rerank(query, candidates).source.kind is SourceKind.MODEL:
            return time.monotonic() - started
        call += 1
    return None


def run_load(options: LoadOptions, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """One load run; see the module docstring for what is measured."""
    if options.mode not in ("threads", "async"):
        raise ValueError(f"mode must be 'threads' or 'async', got {options.mode!r}")
    sets = [(qid, query, cut_words(candidates, options.words)) for qid, query, candidates in options.sets]
    unbounded = _reranker(options.model, options.precision, None, options.isolation)
    bounded = _reranker(options.model, options.precision, options.budget_s, options.isolation)
    progress("warm-up and sequential throughput")
    for _, query, candidates in sets[:3]:
        unbounded.rerank(query, candidates)
    sequential = _sequential_throughput(unbounded, sets, min(5.0, max(1.0, options.seconds / 3)))
    cold_rss = (_rss_bytes() or 0) / 2**20
    warm_s = min(5.0, options.seconds / 4)
    progress(f"warm-up load for {warm_s:g}s (the steady state RSS is measured against)")
    _load_phase(bounded, sets, options.mode, options.callers, warm_s)
    time.sleep(0.5)
    idle_rss, idle_threads = (_rss_bytes() or 0) / 2**20, threading.active_count()
    progress(f"{options.callers} {options.mode} callers for {options.seconds:g}s, budget {options.budget_s:g}s")
    with _Sampler(options.sample_every_s) as sampler:
        started = time.monotonic()
        results, lags = _load_phase(bounded, sets, options.mode, options.callers, options.seconds)
        wall = time.monotonic() - started
    recovery = _recovery_s(bounded, sets)
    kinds = results.kind_counts()
    shed = sum(results.shed)
    answered = sum(kinds[kind] for kind in _ANSWERED)
    scored_pairs = sum(results.scored)
    per_call = len(sets[0][2])
    latencies = list(results.latencies)
    calls = len(results)
    scorer = bounded.scorer
    return {
        "mode": options.mode,
        "callers": options.callers,
        "seconds": options.seconds,
        "budget_s": options.budget_s,
        "words": options.words,
        "candidates": per_call,
        "precision": scorer.precision,
        "isolation": scorer.isolation,
        "calls": calls,
        "sequential_calls_per_s": sequential,
        "goodput_calls_per_s": answered / wall,
        "goodput_vs_sequential": answered / wall / sequential,
        "scored_share": scored_pairs / answered / per_call if answered else None,
        "scored_pairs_vs_sequential": scored_pairs / wall / (sequential * per_call),
        "model_rate": kinds[SourceKind.MODEL] / calls if calls else None,
        "partial_rate": kinds[SourceKind.PARTIAL] / calls if calls else None,
        "fallback_rate": kinds[SourceKind.FALLBACK] / calls if calls else None,
        "shed_rate": shed / calls if calls else None,
        "latency_ms": latency_ms(latencies),
        "max_latency_ms": max(latencies) * 1000 if latencies else None,
        "over_budget_25ms": sum(latency > options.budget_s + 0.025 for latency in latencies),
        "loop_lag_ms": latency_ms(lags) if lags else None,
        "max_loop_lag_ms": max(lags) * 1000 if lags else None,
        "cold_rss_mib": cold_rss,
        "idle_rss_mib": idle_rss,
        "peak_rss_mib": max((rss for _, rss, _ in sampler.samples), default=idle_rss),
        "idle_threads": idle_threads,
        "peak_threads": max((threads for _, _, threads in sampler.samples), default=idle_threads),
        "samples": sampler.samples,
        "recovery_s": recovery,
        "engine": scorer.engine.snapshot(),
    }


def run_anytime(
    model: str,
    sets: list[CandidateSet],
    qrels: Qrels,
    budgets: Sequence[float | None],
    precision: Precision = "auto",
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """NDCG@10 per budget (None: unbounded), with the retriever order and how much got scored."""
    judged = {qid: qrels[qid] for qid, _, _ in sets if qid in qrels}
    retriever = {qid: [c.id or "" for c in candidates] for qid, _, candidates in sets}
    rows: list[dict[str, Any]] = [{"budget_s": "retriever order", "ndcg@10": _ndcg(judged, retriever)}]
    for budget in budgets:
        progress(f"anytime ranking, budget {budget}")
        reranker = _reranker(model, precision, budget)
        reranker.rerank(sets[0][1], sets[0][2])  # warm-up
        rankings: dict[str, list[str]] = {}
        kinds: Counter[str] = Counter()
        fractions: list[float] = []
        latencies: list[float] = []
        for qid, query, candidates in sets:
            result = reranker.rerank(query, candidates)
            rankings[qid] = [item.candidate.id or "" for item in result]
            kinds[result.source.kind.value] += 1
            fractions.append(sum(item.rerank_score is not None for item in result) / len(candidates))
            latencies.append(result.latency_s)
        rows.append(
            {
                "budget_s": budget,
                "ndcg@10": _ndcg(judged, rankings),
                "scored_fraction": sum(fractions) / len(fractions),
                "sources": dict(kinds),
                "latency_ms": latency_ms(latencies),
            }
        )
    return {"queries": len(sets), "candidates": len(sets[0][2]), "precision": precision, "rows": rows}


def _ndcg(qrels: Qrels, rankings: dict[str, list[str]]) -> float:
    return mean_metrics(evaluate(qrels, rankings, [10]))["ndcg@10"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def load_text(report: dict[str, Any], *, markdown: bool = False) -> str:
    """The load run as a table of outcomes and one of resources over time."""
    from rerank_prod.evaluation.report import render_table

    latency, lag = report["latency_ms"], report["loop_lag_ms"] or {}
    header = ["calls", "goodput/s", "vs sequential", "scored share", "pairs vs sequential"]
    header += ["model", "partial", "fallback", "shed"]
    header += ["p50 ms", "p99 ms", "max ms", "> budget+25ms", "loop lag p99/max ms", "recovery s"]
    row = [
        str(report["calls"]),
        f"{report['goodput_calls_per_s']:.1f}",
        f"{report['goodput_vs_sequential']:.2f}x of {report['sequential_calls_per_s']:.1f}/s",
        _pct(report["scored_share"]),
        f"{report['scored_pairs_vs_sequential']:.2f}x",
        _pct(report["model_rate"]),
        _pct(report["partial_rate"]),
        _pct(report["fallback_rate"]),
        _pct(report["shed_rate"]),
        _ms(latency["p50"]),
        _ms(latency["p99"]),
        _ms(report["max_latency_ms"]),
        str(report["over_budget_25ms"]),
        f"{_ms(lag.get('p99'))}/{_ms(report['max_loop_lag_ms'])}",
        "-" if report["recovery_s"] is None else f"{report['recovery_s']:.2f}",
    ]
    title = (
        f"{report['callers']} {report['mode']} callers, {report['seconds']:g}s, "
        f"budget {report['budget_s'] * 1000:.0f} ms, "
        f"{report['candidates']} candidates of {report['words'] or 'all'} words, precision {report['precision']}, "
        f"model in {'a process of its own' if report.get('isolation') == 'process' else 'this process'}"
    )
    resources = [
        ["cold (before any load)", f"{report['cold_rss_mib']:.0f}", "-"],
        ["idle (after a warm-up load)", f"{report['idle_rss_mib']:.0f}", str(report["idle_threads"])],
        *[
            [f"{t:.2f}s", f"{rss:.0f}", str(threads)]
            for t, rss, threads in report["samples"][:: max(1, len(report["samples"]) // 8)]
        ],
        ["peak", f"{report['peak_rss_mib']:.0f}", str(report["peak_threads"])],
        ["peak vs idle", f"{100 * (report['peak_rss_mib'] / report['idle_rss_mib'] - 1):+.1f}%", "-"],
    ]
    return "\n\n".join(
        [
            title,
            render_table(header, [row], markdown=markdown),
            render_table(["time", "RSS MiB", "threads"], resources, markdown=markdown),
        ]
    )


def anytime_text(report: dict[str, Any], *, markdown: bool = False) -> str:
    from rerank_prod.evaluation.report import render_table

    rows = []
    for row in report["rows"]:
        budget = row["budget_s"]
        label = budget if isinstance(budget, str) else ("unbounded" if budget is None else f"{budget:g}s")
        latency = row.get("latency_ms") or {}
        sources = ", ".join(f"{kind} {count}" for kind, count in sorted(row.get("sources", {}).items()))
        scored = row.get("scored_fraction")
        rows.append([label, f"{row['ndcg@10']:.4f}", _pct(scored), _ms(latency.get("p50")), sources or "-"])
    title = (
        f"Anytime ranking: {report['queries']} queries x {report['candidates']} candidates, "
        f"precision {report['precision']}"
    )
    return f"{title}\n\n" + render_table(["budget", "NDCG@10", "scored", "p50 ms", "sources"], rows, markdown=markdown)
