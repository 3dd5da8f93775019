"""`rerank-prod eval` end to end: load, first stage, run configurations, score, write the outputs."""

from __future__ import annotations

import json
import platform
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_prod.evaluation.configs import Spec
from rerank_prod.evaluation.dataset import EvalInputError, Qrels, load_beir
from rerank_prod.evaluation.first_stage import Ranking, candidate_sets, first_stage_rankings, write_run
from rerank_prod.evaluation.ir_metrics import evaluate, mean_metrics
from rerank_prod.evaluation.retrieval import corpus_retriever
from rerank_prod.evaluation.runner import ConfigRun, docids, gate_sweep, latency_ms, run_configs
from rerank_prod.gate import GateScale

WORTH_IT_NDCG5_GAIN = 0.03
"""The seeds' rule of thumb: below this NDCG@5 gain a re-ranker is probably not worth its latency."""
FIRST_STAGE_RUN = "runs/first-stage.trec"
VERDICT_CUTOFFS = (5, 10)
"""Always computed: NDCG@5 drives the verdict, NDCG@10 the plot and the gate sweep."""


@dataclass
class EvalOptions:
    """What `rerank-prod eval` runs; the CLI flags map one to one (see `rerank-prod eval --help`)."""

    dataset: Path
    specs: list[Spec]
    out: Path
    split: str = "test"
    top_k: int = 100
    ks: Sequence[int] = (5, 10)
    run_file: Path | None = None
    bm25_k1: float = 0.9
    bm25_b: float = 0.4
    max_queries: int | None = None
    replay: bool = True
    progress: bool = True
    sweep_thresholds: Sequence[float] = ()
    sweep_signal: str = "top_gap"
    sweep_top_k: int = 5
    sweep_scale: GateScale = "normalized"
    sweep_config: str | None = None
    plot: bool = True
    ray_actors: int | None = None
    """Re-rank on a Ray actor pool of this many actors (`rerank_prod.batch`); None: in this process."""


def verdict(ndcg5_gain: float, p95_ms: float | None) -> str:
    latency = "n/a" if p95_ms is None else f"{p95_ms:.0f} ms"
    if ndcg5_gain < WORTH_IT_NDCG5_GAIN:
        return (
            f"NDCG@5 {ndcg5_gain:+.4f} over the first stage (< {WORTH_IT_NDCG5_GAIN}): "
            f"probably not worth its latency (p95 {latency})"
        )
    return f"NDCG@5 {ndcg5_gain:+.4f} over the first stage: worth it if a p95 of {latency} fits your budget"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "run"


def _per_query(metrics: Mapping[str, dict[str, float]], run: ConfigRun | None) -> dict[str, dict[str, Any]]:
    if run is None:
        return {qid: dict(values) for qid, values in metrics.items()}
    return {
        qid: {
            **values,
            "latency_ms": run.latencies_s[qid] * 1000 if qid in run.latencies_s else None,
            "source": run.sources.get(qid),
        }
        for qid, values in metrics.items()
    }


def _system(
    name: str,
    metrics: dict[str, dict[str, float]],
    baseline: dict[str, float] | None,
    run: ConfigRun | None,
    run_file: str,
) -> dict[str, Any]:
    means = mean_metrics(metrics)
    system: dict[str, Any] = {
        "name": name,
        "kind": "first stage" if run is None else "re-ranker",
        "metrics": means,
        "run_file": run_file,
    }
    if run is not None and baseline is not None:
        latency = run.latency_ms()
        system.update(
            {
                "config": run.spec,
                "calls": len(run.sources),
                "replayed_model_time": run.replayed,
                "gain": {metric: means[metric] - baseline[metric] for metric in means if metric.startswith("ndcg@")},
                "latency_ms": latency,
                "rates": run.rates(),
            }
        )
        system["verdict"] = verdict(system["gain"]["ndcg@5"], latency["p95"])
    system["per_query"] = _per_query(metrics, run)
    return system


def _sweep_base(options: EvalOptions) -> str | None:
    """The configuration the gate sweep replays, checked before anything runs."""
    if not options.sweep_thresholds:
        return None
    if options.sweep_scale == "normalized" and max(options.sweep_thresholds) > 1:
        raise EvalInputError("normalized gate thresholds lie in [0, 1]; use --sweep-scale raw for larger ones")
    gated = {spec["name"]: bool(spec.get("gate")) for spec in options.specs}
    if options.sweep_config is not None and options.sweep_config not in gated:
        raise EvalInputError(f"--sweep-config {options.sweep_config!r} is not one of {sorted(gated)}")
    name = options.sweep_config or next((n for n, has_gate in gated.items() if not has_gate), None)
    if name is None or gated[name]:
        raise EvalInputError("the gate sweep needs an ungated configuration to replay (the sweep adds the gate)")
    return name


def _sweep(
    options: EvalOptions,
    base: ConfigRun,
    candidates: Mapping[str, Any],
    first_stage: Mapping[str, Ranking],
    qrels: Qrels,
    baseline_ndcg10: float,
) -> dict[str, Any]:
    full_ndcg10 = mean_metrics(evaluate(qrels, docids(base.rankings), [10]))["ndcg@10"]
    points = []
    for point in gate_sweep(
        base,
        candidates,
        first_stage,
        options.sweep_thresholds,
        options.sweep_signal,
        options.sweep_top_k,
        options.sweep_scale,
    ):
        ndcg10 = mean_metrics(evaluate(qrels, point.rankings, [10]))["ndcg@10"]
        points.append(
            {
                "threshold": point.threshold,
                "skip_rate": point.skip_rate,
                "ndcg@10": ndcg10,
                "ndcg@10_loss": full_ndcg10 - ndcg10,
                "gain_over_first_stage": ndcg10 - baseline_ndcg10,
                "est_latency_ms": latency_ms(point.latencies_s),
            }
        )
    return {
        "config": base.name,
        "signal": options.sweep_signal,
        "top_k": options.sweep_top_k,
        "scale": options.sweep_scale,
        "ungated_ndcg@10": full_ndcg10,
        "points": points,
    }


def run_eval(options: EvalOptions) -> dict[str, Any]:
    """Runs everything and writes report.md, results.json, runs/*.trec and plot.png under `out`."""
    started = time.time()
    sweep_base = _sweep_base(options)
    run_files = {spec["name"]: f"runs/{slug(spec['name'])}.trec" for spec in options.specs}
    if len(set(run_files.values()) | {FIRST_STAGE_RUN}) != len(run_files) + 1:
        raise EvalInputError(f"configuration names must give distinct run file names: {sorted(run_files.values())}")
    dataset = load_beir(options.dataset, options.split)
    query_ids = dataset.query_ids[: options.max_queries]
    stage_name, first_stage = first_stage_rankings(
        dataset, query_ids, options.top_k, run_file=options.run_file, k1=options.bm25_k1, b=options.bm25_b
    )
    candidates = candidate_sets(dataset, first_stage)
    queries = {q: dataset.queries[q] for q in query_ids}
    if options.ray_actors is None:
        corpus = corpus_retriever(dataset, options.top_k, k1=options.bm25_k1, b=options.bm25_b)
        runs = run_configs(
            options.specs, queries, candidates, replay=options.replay, progress=options.progress, corpus=corpus
        )
    else:
        retrieval = [spec["name"] for spec in options.specs if spec.get("multihop") or spec.get("expansion")]
        if retrieval:
            raise EvalInputError(f"multihop / expansion configurations {retrieval} do not run on Ray; drop --ray")
        from rerank_prod.batch.evaluation import run_configs_on_ray

        runs = run_configs_on_ray(options.specs, queries, candidates, actors=options.ray_actors)

    ks = sorted(set(options.ks) | set(VERDICT_CUTOFFS))
    qrels = {qid: dataset.qrels[qid] for qid in query_ids}
    runs_dir = options.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    baseline_metrics = evaluate(qrels, docids(first_stage), ks)
    write_run(options.out / FIRST_STAGE_RUN, first_stage, "first-stage")
    systems = [_system(stage_name, baseline_metrics, None, None, FIRST_STAGE_RUN)]
    baseline = systems[0]["metrics"]
    for run in runs:
        write_run(options.out / run_files[run.name], run.rankings, slug(run.name))
        systems.append(_system(run.name, evaluate(qrels, docids(run.rankings), ks), baseline, run, run_files[run.name]))

    report: dict[str, Any] = {
        "settings": {
            "dataset": str(options.dataset),
            "split": options.split,
            "queries": len(query_ids),
            "first_stage": stage_name,
            "top_k": options.top_k,
            "ks": ks,
            "replay": options.replay and options.ray_actors is None,
            "ray_actors": options.ray_actors,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        },
        "systems": systems,
        "gate_sweep": None
        if sweep_base is None
        else _sweep(
            options,
            next(run for run in runs if run.name == sweep_base),
            candidates,
            first_stage,
            qrels,
            baseline["ndcg@10"],
        ),
    }
    report["settings"]["wall_s"] = time.time() - started
    from rerank_prod.evaluation import report as writers

    (options.out / "results.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (options.out / "report.md").write_text(writers.eval_markdown(report), encoding="utf-8")
    if options.plot:
        writers.plot_quality_latency(report, options.out / "plot.png")
    return report
