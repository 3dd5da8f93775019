"""`rerank-prod tune`: pick fusion weights and normalization, RRF k and the gate threshold on a
tuning split, by k-fold cross-validation over queries, and write the choice as a config file.

The right fusion depends on the data: a fixed 50/50 mix of a model and the retriever helps on one
collection and hurts on another. So the model scores each tuning query's candidates once; every
fusion in the grid then re-ranks the replayed scores through the production `Reranker` (the
evaluation runner's replay), and every gate in the grid is replayed on top (a skipped query keeps
the first-stage order and costs no model time). Selection is cross-validated: for each fold the
rule below picks a configuration on the other folds and is scored on this one, so the reported
estimate is that of the tuning procedure, not of the best point of a noisy grid.

Rule: the highest mean NDCG@10; among configurations within `max_ndcg_loss` of it, the lowest mean
latency (a gate that skips the model on confident queries costs nothing when quality holds).
Never tune on the split you report on (the command refuses to).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerank_prod.evaluation.configs import Spec, build_reranker, build_scorer, default_specs, normalize_spec
from rerank_prod.evaluation.dataset import EvalInputError, load_beir
from rerank_prod.evaluation.first_stage import candidate_sets, first_stage_rankings
from rerank_prod.evaluation.ir_metrics import evaluate
from rerank_prod.evaluation.runner import Recording, docids, run_config
from rerank_prod.gate import ConfidenceGate
from rerank_prod.types import Candidate

METRIC = "ndcg@10"
TUNED_NAME = "tuned"


def fusion_grid() -> list[dict[str, Any] | None]:
    """Fusions searched: none (the model alone); weighted fusion with the model's weight 0.1..0.9
    (the retriever's the rest) under min-max or z-score normalization of each signal; RRF with
    k in 10..100 and the retriever at half or full weight."""
    grid: list[dict[str, Any] | None] = [None]
    for weight in np.round(np.arange(0.1, 0.91, 0.1), 2).tolist():
        for rerank_norm in ("minmax", "zscore"):
            for retrieval_norm in ("minmax", "zscore"):
                grid.append(
                    {
                        "type": "weighted",
                        "rerank_weight": weight,
                        "retrieval_weight": round(1 - weight, 2),
                        "rerank_normalization": rerank_norm,
                        "retrieval_normalization": retrieval_norm,
                    }
                )
    for k in (10, 30, 60, 100):
        for retrieval_weight in (0.5, 1.0):
            grid.append({"type": "rrf", "k": k, "rerank_weight": 1.0, "retrieval_weight": retrieval_weight})
    return grid


GATE_TOP_K = 5
RAW_QUANTILES = (0.25, 0.5, 0.75)


def _gate(gap: float | None = None, variance: float | None = None, scale: str = "normalized") -> dict[str, Any]:
    """A `ConfidenceGate`'s settings with every signal named (None: off), so no default applies."""
    return {
        "min_top_gap": gap,
        "min_top_k_variance": variance,
        "min_top_k_std": None,
        "top_k": GATE_TOP_K,
        "scale": scale,
    }


def gate_grid() -> list[dict[str, Any] | None]:
    """Gates searched (`ConfidenceGate` settings): none; on min-max normalized retriever scores the
    top gap at 0.1..0.6, the top-5 variance at 0.01..0.15 (a standard deviation s is the variance
    s^2: no separate grid) and both together (the articles' rule: skip only when the gap is large and
    the top is not flat); on raw scores the articles' literal thresholds (gap 0.3, variance 0.01,
    both). `raw_gate_grid` adds raw thresholds sized to the tuning data."""
    grid: list[dict[str, Any] | None] = [None]
    grid += [_gate(gap=gap) for gap in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)]
    grid += [_gate(variance=v) for v in (0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15)]
    grid += [_gate(gap, v) for gap in (0.2, 0.3, 0.4) for v in (0.02, 0.05, 0.1)]
    grid += [_gate(gap=0.3, scale="raw"), _gate(variance=0.01, scale="raw"), _gate(0.3, 0.01, "raw")]
    return grid


def raw_gate_grid(candidate_lists: Sequence[Sequence[Candidate]]) -> list[dict[str, Any] | None]:
    """Raw-score gates at the quartiles of the tuning queries' own raw top gap and top-5 variance:
    a raw threshold means something only on the retriever's scale (BM25 gaps are several points,
    cosine gaps hundredths), so the grid is read off the data. No relevance labels are used."""
    probe = ConfidenceGate(min_top_gap=0.0, min_top_k_variance=0.0, top_k=GATE_TOP_K, scale="raw")
    decisions = [probe.decide(candidates) for candidates in candidate_lists]
    gaps = [d.top_gap for d in decisions if d.top_gap is not None]
    variances = [d.top_k_variance for d in decisions if d.top_k_variance is not None]
    if not gaps or not variances:
        return []
    gap_levels = [float(f"{q:.3g}") for q in np.quantile(gaps, RAW_QUANTILES)]
    variance_levels = [float(f"{q:.3g}") for q in np.quantile(variances, RAW_QUANTILES)]
    grid: list[dict[str, Any] | None] = [_gate(gap=g, scale="raw") for g in gap_levels]
    grid += [_gate(variance=v, scale="raw") for v in variance_levels]
    grid += [_gate(gap_levels[1], variance_levels[1], "raw")]
    return grid


@dataclass
class TuneOptions:
    """What `rerank-prod tune` runs; the CLI flags map one to one (see `rerank-prod tune --help`)."""

    dataset: Path
    scorer: dict[str, Any]
    out: Path
    split: str = "train"
    sample: int | None = None
    seed: int = 42
    max_queries: int | None = None
    top_k: int = 100
    folds: int = 5
    max_ndcg_loss: float = 0.0
    run_file: Path | None = None
    bm25_k1: float = 0.9
    bm25_b: float = 0.4
    report_split: str | None = None
    report_max_queries: int | None = None
    progress: bool = True
    fusions: list[dict[str, Any] | None] = field(default_factory=fusion_grid)
    gates: list[dict[str, Any] | None] = field(default_factory=gate_grid)
    raw_gates: bool = True
    """Also search raw-score gates at the quartiles of the tuning data's signals (`raw_gate_grid`)."""


@dataclass(frozen=True)
class Grid:
    """Per-query NDCG@10 and latency of every (fusion, gate) pair, over the tuning queries."""

    pairs: list[tuple[dict[str, Any] | None, dict[str, Any] | None]]
    ndcg: np.ndarray  # pairs x queries
    latency_s: np.ndarray  # pairs x queries
    skip: np.ndarray  # pairs x queries, True where the gate skips the model


def tuning_queries(query_ids: Sequence[str], sample: int | None, seed: int, max_queries: int | None) -> list[str]:
    """`sample` queries drawn with `random.Random(seed)` (a validation carve), else the first `max_queries`.

    The draw is from the ids in sorted (string) order, so the carve does not depend on the qrels
    file's row order. SciFact train, 80, seed 42 is then the shared cross-encoder's held-out
    validation set (its card's BM25 NDCG@10 0.7720 is reproduced): the queries it was not trained on."""
    if sample is not None:
        if sample > len(query_ids):
            raise EvalInputError(f"--sample {sample} exceeds the split's {len(query_ids)} judged queries")
        return random.Random(seed).sample(sorted(query_ids), sample)
    return list(query_ids[:max_queries])


def select(ndcg: np.ndarray, latency_s: np.ndarray, queries: np.ndarray, max_ndcg_loss: float) -> int:
    """The rule on the given query columns: best mean NDCG; within `max_ndcg_loss` of it, least latency."""
    quality = ndcg[:, queries].mean(axis=1)
    cost = latency_s[:, queries].mean(axis=1)
    eligible = np.flatnonzero(quality >= quality.max() - max_ndcg_loss - 1e-12)
    return int(eligible[np.lexsort((-quality[eligible], cost[eligible]))[0]])


def cross_validate(grid: Grid, folds: int, seed: int, max_ndcg_loss: float) -> dict[str, Any]:
    """k folds over queries: per fold, the rule picks on the other folds; the pick is scored on this one."""
    count = grid.ndcg.shape[1]
    if not 2 <= folds <= count:
        raise EvalInputError(f"--folds must be between 2 and the number of tuning queries ({count}), got {folds}")
    order = np.random.default_rng(seed).permutation(count)
    held_out_ndcg = np.zeros(count)
    held_out_latency = np.zeros(count)
    picks = []
    for fold in np.array_split(order, folds):
        rest = np.setdiff1d(order, fold)
        chosen = select(grid.ndcg, grid.latency_s, rest, max_ndcg_loss)
        picks.append(chosen)
        held_out_ndcg[fold] = grid.ndcg[chosen, fold]
        held_out_latency[fold] = grid.latency_s[chosen, fold]
    return {
        "folds": folds,
        "picks": [describe_pair(*grid.pairs[p]) for p in picks],
        METRIC: float(held_out_ndcg.mean()),
        "mean_latency_ms": float(held_out_latency.mean() * 1000),
    }


def describe_gate(gate: Mapping[str, Any] | None) -> str:
    """E.g. "gap>=0.3 & top-5 var>=0.01 (raw)"; "no gate" for None."""
    if gate is None:
        return "no gate"
    top_k = gate.get("top_k", GATE_TOP_K)
    labels = {"min_top_gap": "gap", "min_top_k_variance": f"top-{top_k} var", "min_top_k_std": f"top-{top_k} std"}
    rules = [f"{label}>={gate[key]:g}" for key, label in labels.items() if gate.get(key) is not None]
    return " & ".join(rules) + (" (raw)" if gate.get("scale") == "raw" else "")


def describe_pair(fusion: Mapping[str, Any] | None, gate: Mapping[str, Any] | None) -> str:
    if fusion is None:
        text = "model alone"
    elif fusion["type"] == "rrf":
        text = f"rrf k={fusion['k']} retrieval={fusion['retrieval_weight']}"
    else:
        text = (
            f"weighted {fusion['rerank_weight']}/{fusion['retrieval_weight']} "
            f"{fusion['rerank_normalization']}/{fusion['retrieval_normalization']}"
        )
    return text if gate is None else f"{text} + gate {describe_gate(gate)}"


def _default_pair(grid: Grid) -> int:
    """The 50/50 min-max fusion without a gate: what `rerank-prod eval` shows by default."""
    default = default_specs()[1]["fusion"]
    for index, (fusion, gate) in enumerate(grid.pairs):
        if gate is None and fusion is not None and fusion["type"] == "weighted":
            same = all(fusion.get(key, "minmax") == value for key, value in default.items() if key != "type")
            if same and fusion["rerank_normalization"] == fusion["retrieval_normalization"] == "minmax":
                return index
    raise EvalInputError("the fusion grid must include the 50/50 min-max default to compare against")


def build_grid(options: TuneOptions) -> tuple[Grid, dict[str, Any]]:
    """Score the tuning queries once, replay every fusion through the pipeline, every gate on top."""
    dataset = load_beir(options.dataset, options.split)
    query_ids = tuning_queries(dataset.query_ids, options.sample, options.seed, options.max_queries)
    stage_name, first_stage = first_stage_rankings(
        dataset, query_ids, options.top_k, run_file=options.run_file, k1=options.bm25_k1, b=options.bm25_b
    )
    candidates = candidate_sets(dataset, first_stage)
    queries = {qid: dataset.queries[qid] for qid in query_ids}
    qrels = {qid: dataset.qrels[qid] for qid in query_ids}
    scorer = build_scorer(options.scorer)
    recordings: dict[str, Recording] = {}

    def column(rankings: Mapping[str, Sequence[str]]) -> np.ndarray:
        per_query = evaluate(qrels, rankings, [10])
        return np.array([per_query[qid][METRIC] for qid in query_ids])

    first_stage_ndcg = column(docids(first_stage))
    fusion_ndcg, fusion_latency = [], []
    for position, fusion in enumerate(options.fusions):
        spec = normalize_spec({"name": f"fusion {position}", "fusion": fusion}, options.scorer, position + 1)
        run = run_config(spec, build_reranker(spec, scorer), queries, candidates, recordings, progress=options.progress)
        fusion_ndcg.append(column(docids(run.rankings)))
        fusion_latency.append(np.array([run.latencies_s.get(qid, 0.0) for qid in query_ids]))
    gates = list(options.gates)
    if options.raw_gates:
        gates += raw_gate_grid([candidates[qid] for qid in query_ids])
    pairs, ndcg, latency, skip = [], [], [], []
    for gate in gates:
        gate_object = None if gate is None else ConfidenceGate(**gate)
        skipped = np.array(
            [gate_object is not None and not gate_object.decide(candidates[qid]).rerank for qid in query_ids]
        )
        for fusion, quality, cost in zip(options.fusions, fusion_ndcg, fusion_latency, strict=True):
            pairs.append((fusion, gate))
            ndcg.append(np.where(skipped, first_stage_ndcg, quality))
            latency.append(np.where(skipped, 0.0, cost))
            skip.append(skipped)
    settings = {
        "dataset": str(options.dataset),
        "split": options.split,
        "queries": len(query_ids),
        "sample": options.sample,
        "seed": options.seed,
        "first_stage": stage_name,
        "top_k": options.top_k,
        "first_stage_ndcg@10": float(first_stage_ndcg.mean()),
    }
    return Grid(pairs, np.array(ndcg), np.array(latency), np.array(skip)), settings


def _row(grid: Grid, index: int) -> dict[str, Any]:
    return {
        "config": describe_pair(*grid.pairs[index]),
        METRIC: float(grid.ndcg[index].mean()),
        "mean_latency_ms": float(grid.latency_s[index].mean() * 1000),
        "skip_rate": float(grid.skip[index].mean()),
    }


def gate_sweep(
    grid: Grid, fusion: Mapping[str, Any] | None, folds: int, seed: int, max_ndcg_loss: float
) -> dict[str, Any]:
    """Every gate of the grid behind one fusion: skip rate against NDCG@10 lost to the ungated
    fusion, and the gate the selection rule picks, cross-validated over queries with the fusion
    held fixed (how `ConfidenceGate`'s defaults were chosen)."""
    rows = [i for i, (f, _) in enumerate(grid.pairs) if f == fusion]
    ungated = next(i for i in rows if grid.pairs[i][1] is None)
    sub = Grid([grid.pairs[i] for i in rows], grid.ndcg[rows], grid.latency_s[rows], grid.skip[rows])
    every = np.arange(sub.ndcg.shape[1])
    chosen = rows[select(sub.ndcg, sub.latency_s, every, max_ndcg_loss)]
    cv = cross_validate(sub, folds, seed, max_ndcg_loss)
    cv["picks"] = [pick.split(" + gate ", 1)[1] if " + gate " in pick else "no gate" for pick in cv["picks"]]
    base = float(grid.ndcg[ungated].mean())
    table = []
    for i in rows:
        row = _row(grid, i)
        table.append({**row, "gate": describe_gate(grid.pairs[i][1]), "ndcg_loss": base - row[METRIC]})
    return {
        "fusion": describe_pair(fusion, None),
        "ungated": {METRIC: base, "mean_latency_ms": float(grid.latency_s[ungated].mean() * 1000)},
        "chosen": describe_gate(grid.pairs[chosen][1]),
        "chosen_settings": grid.pairs[chosen][1],
        "cross_validated": cv,
        "rows": table,
    }


def _unique(fusions: Sequence[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
    return [fusion for i, fusion in enumerate(fusions) if fusion not in fusions[:i]]


def tuned_spec(options: TuneOptions, fusion: dict[str, Any] | None, gate: dict[str, Any] | None) -> Spec:
    spec: Spec = {"name": TUNED_NAME, "scorer": dict(options.scorer)}
    if fusion is not None:
        spec["fusion"] = fusion
    if gate is not None:
        spec["gate"] = {key: value for key, value in gate.items() if value is not None}
    return spec


def run_tune(options: TuneOptions) -> dict[str, Any]:
    """Tunes, writes `tuned.json` (load it with `rerank_prod.config_file.load_reranker` or pass it to
    `rerank-prod eval --config`) and `tune.json`/`tune.md` under `out`; with `report_split`, also
    evaluates the default and the tuned configuration there (`out/heldout/`)."""
    if options.report_split is not None and options.report_split == options.split:
        raise EvalInputError(
            f"the tuning split and the report split are both {options.split!r}: a tuned setting "
            "reported on its own tuning split flatters itself"
        )
    if not 0 <= options.max_ndcg_loss < 1:
        raise EvalInputError(f"--max-ndcg-loss must be in [0, 1), got {options.max_ndcg_loss}")
    grid, settings = build_grid(options)
    every = np.arange(grid.ndcg.shape[1])
    chosen = select(grid.ndcg, grid.latency_s, every, options.max_ndcg_loss)
    default = _default_pair(grid)
    cv = cross_validate(grid, options.folds, options.seed, options.max_ndcg_loss)
    fixed_default_cv = float(grid.ndcg[default].mean())  # a fixed choice needs no selection: its CV is its mean
    ranked = sorted(range(len(grid.pairs)), key=lambda i: -grid.ndcg[i].mean())
    spec = tuned_spec(options, *grid.pairs[chosen])
    report: dict[str, Any] = {
        "settings": {
            **settings,
            "folds": options.folds,
            "max_ndcg_loss": options.max_ndcg_loss,
            "configurations": len(grid.pairs),
        },
        "chosen": _row(grid, chosen),
        "default": _row(grid, default),
        "cross_validated": {"tuned": cv, "default": {METRIC: fixed_default_cv}},
        "top": [_row(grid, i) for i in ranked[:10]],
        "gate_sweeps": [
            gate_sweep(grid, fusion, options.folds, options.seed, options.max_ndcg_loss)
            for fusion in _unique([grid.pairs[chosen][0], grid.pairs[default][0]])
        ],
    }
    options.out.mkdir(parents=True, exist_ok=True)
    tuned = {"rerankers": [spec], "tuning": {k: report[k] for k in ("settings", "chosen", "cross_validated")}}
    (options.out / "tuned.json").write_text(json.dumps(tuned, indent=2), encoding="utf-8")
    if options.report_split is not None:
        report["held_out"] = _held_out(options, spec)
    (options.out / "tune.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    from rerank_prod.evaluation.report import tune_markdown

    (options.out / "tune.md").write_text(tune_markdown(report), encoding="utf-8")
    return report


def _held_out(options: TuneOptions, spec: Spec) -> dict[str, Any]:
    """The default trade-offs and the tuned configuration through `rerank-prod eval` on the report split."""
    from rerank_prod.evaluation.experiment import EvalOptions, run_eval

    specs = [normalize_spec(raw, options.scorer, i + 1) for i, raw in enumerate([*default_specs(), spec])]
    eval_report = run_eval(
        EvalOptions(
            dataset=options.dataset,
            specs=specs,
            out=options.out / "heldout",
            split=options.report_split or "test",
            top_k=options.top_k,
            run_file=options.run_file,
            bm25_k1=options.bm25_k1,
            bm25_b=options.bm25_b,
            max_queries=options.report_max_queries,
            progress=options.progress,
            plot=False,
        )
    )
    return {
        "split": options.report_split,
        "queries": eval_report["settings"]["queries"],
        "systems": [
            {
                "name": system["name"],
                METRIC: system["metrics"][METRIC],
                "latency_ms": system.get("latency_ms"),
                "gate_skip": (system.get("rates") or {}).get("gate_skip"),
            }
            for system in eval_report["systems"]
        ],
    }
