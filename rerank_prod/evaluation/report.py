"""Renders evaluation and benchmark results: terminal and markdown tables, and the quality/latency plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_prod.evaluation.ir_metrics import metric_names


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """Aligned columns; the first column left-aligned, numbers right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        padded = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in pairs]
        return f"| {' | '.join(padded)} |" if markdown else "  ".join(padded)

    rule = (
        "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
        if markdown
        else "  ".join("-" * w for w in widths)
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _cache_hits(rates: dict[str, float | None]) -> str:
    """Result-cache hits per call, plus the pair hit rate when a score cache is configured."""
    pairs = rates["score_cache_hit"]
    return percent(rates["cache_hit"]) + ("" if pairs is None else f" (pairs {percent(pairs)})")


def _eval_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names = metric_names(report["settings"]["ks"])
    header = [
        "system",
        *(name.upper().replace("RECALL", "R") for name in names),
        "dNDCG@5",
        "dNDCG@10",
        "mean ms",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "fallback",
        "gate skip",
        "cache hit",
    ]
    rows = []
    for system in report["systems"]:
        if "latency_ms" not in system:  # the first stage: quality only
            rows.append([system["name"], *(number(system["metrics"][name]) for name in names)] + ["-"] * 9)
            continue
        latency, rates = system["latency_ms"], system["rates"]
        rows.append(
            [
                system["name"],
                *(number(system["metrics"][name]) for name in names),
                *(f"{system['gain'][name]:+.4f}" for name in ("ndcg@5", "ndcg@10")),
                *(number(latency[p], 1) for p in ("mean", "p50", "p95", "p99")),
                percent(rates["fallback"]),
                percent(rates["gate_skip"]),
                _cache_hits(rates),
            ]
        )
    return header, rows


def _verdicts(report: dict[str, Any]) -> list[str]:
    return [f"{system['name']}: {system['verdict']}" for system in report["systems"] if "verdict" in system]


def _sweep_rows(sweep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "threshold",
        "skip rate",
        "NDCG@10",
        "NDCG@10 loss",
        "gain vs first stage",
        "est. mean ms",
        "est. p95 ms",
    ]
    rows = [
        [
            f"{p['threshold']:.3g}",
            percent(p["skip_rate"]),
            number(p["ndcg@10"]),
            number(p["ndcg@10_loss"]),
            number(p["gain_over_first_stage"]),
            number(p["est_latency_ms"]["mean"], 1),
            number(p["est_latency_ms"]["p95"], 1),
        ]
        for p in sweep["points"]
    ]
    return header, rows


def _sweep_title(sweep: dict[str, Any]) -> str:
    return (
        f"Gate sweep over {sweep['config']!r} (signal {sweep['signal']} on {sweep.get('scale', 'normalized')} "
        f"scores, top_k {sweep['top_k']}; "
        f"ungated NDCG@10 {sweep['ungated_ndcg@10']:.4f}); skipped queries keep the first-stage order. "
        "Pick the threshold on a split you tune on, then report it on a held-out one"
    )


def _settings_line(report: dict[str, Any]) -> str:
    s = report["settings"]
    return (
        f"{s['dataset']} [{s['split']}], {s['queries']} queries, first stage {s['first_stage']}, "
        f"top-{s['top_k']} candidates"
    )


def eval_terminal(report: dict[str, Any]) -> str:
    parts = [_settings_line(report), "", render_table(*_eval_rows(report)), "", *_verdicts(report)]
    if report["gate_sweep"]:
        parts += ["", _sweep_title(report["gate_sweep"]), render_table(*_sweep_rows(report["gate_sweep"]))]
    return "\n".join(parts)


def eval_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    parts = [
        "# Re-ranking evaluation",
        "",
        f"{_settings_line(report)}. Metrics by trec_eval (pytrec_eval); latency is per re-rank call in ms.",
        "",
        render_table(*_eval_rows(report), markdown=True),
        "",
        "## Verdicts",
        "",
        *(f"- {line}" for line in _verdicts(report)),
        "",
    ]
    if s["replay"]:
        parts += [
            "Configurations sharing a scorer scored each query once; later ones replay the scores and are "
            "charged the recorded model time plus their own measured pipeline time (configurations with a "
            "`timeout_s` always score live).",
            "",
        ]
    if report["gate_sweep"]:
        parts += [
            "## Gate sweep",
            "",
            _sweep_title(report["gate_sweep"]) + ".",
            "",
            render_table(*_sweep_rows(report["gate_sweep"]), markdown=True),
            "",
        ]
    parts += ["## Configurations", ""]
    parts += [
        f"- **{system['name']}**: `{json.dumps(system['config'])}` -> `{system['run_file']}`"
        for system in report["systems"]
        if "config" in system
    ]
    return "\n".join(parts) + "\n"


def plot_quality_latency(report: dict[str, Any], path: Path) -> None:
    """NDCG@10 against p95 re-rank latency, one point per system (the first stage sits at 0 ms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    markers = "osD^vP*Xh<>"
    for index, system in enumerate(report["systems"]):  # a legend, not annotations: close points overlap
        p95 = (system.get("latency_ms") or {}).get("p95") or 0.0
        ndcg10 = system["metrics"]["ndcg@10"]
        label = f"{system['name']}: {ndcg10:.4f} @ {p95:.0f} ms"
        axes.scatter(p95, ndcg10, s=45, marker=markers[index % len(markers)], label=label)
    axes.legend(fontsize=8, loc="lower right")
    axes.set_xlabel("p95 re-rank latency (ms)")
    axes.set_ylabel("NDCG@10")
    axes.set_title(
        f"Quality vs latency: {Path(report['settings']['dataset']).name} "
        f"[{report['settings']['split']}], top-{report['settings']['top_k']}"
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _bench_latency_rows(report: dict[str, Any], size: int) -> tuple[list[str], list[list[str]]]:
    reference = report["systems"][report["reference"]]["name"]
    header = ["system", "max tokens", "p50 ms", "p95 ms", "mean ms", "GFLOP/call", "GFLOP/s at p50", "calls"]
    header.append(f"same order as {reference}")
    rows = []
    for key, result in report["sizes"][size].items():
        latency = result["latency_ms"]
        first = sorted(d["first_difference_at_rank"] for d in result["differing"].values())
        agreement = f"{result['identical']}/{result['sets']}" + (f" (first diff at rank {first[0]})" if first else "")
        rows.append(
            [
                report["systems"][key]["name"],
                str(report["systems"][key]["max_tokens"]),
                number(latency["p50"], 1),
                number(latency["p95"], 1),
                number(latency["mean"], 1),
                number(result.get("gflop_per_call"), 1),
                number(result.get("gflop_per_s"), 0),
                str(result["calls"]),
                agreement,
            ]
        )
    return header, rows


def _bench_ratio_rows(report: dict[str, Any], size: int) -> tuple[list[str], list[list[str]]]:
    """p50 of the row's system divided by the column's: below 1 means the row is faster."""
    keys = list(report["sizes"][size])
    p50 = {key: report["sizes"][size][key]["latency_ms"]["p50"] for key in keys}
    header = ["p50 ratio (row / column)", *keys]
    rows = [[f"{report['systems'][row]['name']}", *(f"{p50[row] / p50[col]:.2f}x" for col in keys)] for row in keys]
    return header, rows


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _bench_memory_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "system",
        "before import+load MiB",
        "peak while loading",
        "after loading",
        "peak during calls",
        "calls added",
    ]
    rows = [
        [
            report["systems"][key]["name"],
            number(memory["rss_before_build_mib"], 0),
            number(memory["rss_peak_building_mib"], 0),
            number(memory["rss_after_build_mib"], 0),
            number(memory["rss_peak_calls_mib"], 0),
            number(_difference(memory["rss_peak_calls_mib"], memory["rss_after_build_mib"]), 0),
        ]
        for key, memory in report["memory"].items()
    ]
    return header, rows


def _bench_concurrency_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    concurrency = report["concurrency"]
    sequential = report["sizes"][concurrency["size"]]
    header = ["system", "async path", "callers", "calls", "calls/s", "sequential calls/s", "speed-up", "p95 ms"]
    rows = []
    for key, result in concurrency["systems"].items():
        alone = 1000 / sequential[key]["latency_ms"]["mean"]
        rows.append(
            [
                report["systems"][key]["name"],
                report["systems"][key]["async_path"],
                str(result["callers"]),
                str(result["calls"]),
                number(result["calls_per_s"], 2),
                number(alone, 2),
                f"{result['calls_per_s'] / alone:.2f}x",
                number(result["latency_ms"]["p95"], 1),
            ]
        )
    return header, rows


def bench_sections(report: dict[str, Any], *, markdown: bool = False) -> str:
    """All bench tables, titled; plain text for the terminal or markdown for the report file."""

    def title(text: str) -> str:
        return f"## {text}\n" if markdown else f"{text}\n"

    parts = []
    for size in report["sizes"]:
        parts += [
            title(f"{size} candidates per call (warm, interleaved rounds)"),
            render_table(*_bench_latency_rows(report, size), markdown=markdown),
            "",
            render_table(*_bench_ratio_rows(report, size), markdown=markdown),
            "",
        ]
    if report["concurrency"]:
        size = report["concurrency"]["size"]
        parts += [
            title(f"Concurrent async callers, {size} candidates per call"),
            render_table(*_bench_concurrency_rows(report), markdown=markdown),
            "",
        ]
    if report.get("quality"):
        quality = report["quality"]
        base = next((row["ndcg@10"] for row in quality["rows"] if row["system"].startswith("core fp32")), None)
        rows = [
            [row["system"], number(row["ndcg@10"]), "-" if base is None else f"{row['ndcg@10'] - base:+.4f}"]
            for row in quality["rows"]
        ]
        parts += [
            title(
                f"NDCG@10 per precision: {quality['queries']} queries x {quality['candidates']} candidates, unbounded"
            ),
            render_table(["system", "NDCG@10", "vs fp32"], rows, markdown=markdown),
            "",
        ]
    if report["memory"]:
        parts += [
            title(
                "Memory (MiB): resident set size of a fresh process per system, sampled every 5 ms from "
                "/proc; one call per size"
            ),
            render_table(*_bench_memory_rows(report), markdown=markdown),
            "",
        ]
    return "\n".join(parts)


def _tune_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [row["config"], number(row["ndcg@10"]), number(row["mean_latency_ms"], 1), percent(row["skip_rate"])]
        for row in rows
    ]


def tune_markdown(report: dict[str, Any], *, markdown: bool = True) -> str:
    """`rerank-prod tune`'s report: the choice, its cross-validated estimate, the best of the grid,
    and (when run) the held-out comparison."""
    settings, cv = report["settings"], report["cross_validated"]
    header = ["configuration", "NDCG@10", "mean ms", "gate skip"]
    lines = [
        "# rerank-prod tune" if markdown else "rerank-prod tune",
        "",
        f"Tuned on {Path(settings['dataset']).name} [{settings['split']}], {settings['queries']} queries"
        + (f" (sample, seed {settings['seed']})" if settings.get("sample") else "")
        + f", {settings['first_stage']} top-{settings['top_k']} (NDCG@10 {settings['first_stage_ndcg@10']:.4f}); "
        f"{settings['configurations']} configurations, {settings['folds']}-fold cross-validation, "
        f"max NDCG loss for a cheaper choice {settings['max_ndcg_loss']}.",
        "",
        render_table(header, _tune_rows([report["chosen"], report["default"]]), markdown=markdown),
        "",
        f"Cross-validated NDCG@10 of the tuning procedure: {cv['tuned']['ndcg@10']:.4f} "
        f"(default 50/50: {cv['default']['ndcg@10']:.4f}); picks per fold: {'; '.join(cv['tuned']['picks'])}",
        "",
        "Best of the grid on all tuning queries (optimistic: chosen and scored on the same queries):",
        "",
        render_table(header, _tune_rows(report["top"]), markdown=markdown),
    ]
    for sweep in report.get("gate_sweeps", []):
        rows = [
            [
                row["gate"],
                percent(row["skip_rate"]),
                number(row["ndcg@10"]),
                f"{-row['ndcg_loss']:+.4f}",
                number(row["mean_latency_ms"], 1),
            ]
            for row in sweep["rows"]
        ]
        gate_cv = sweep["cross_validated"]
        lines += [
            "",
            f"Gate sweep behind {sweep['fusion']} (ungated NDCG@10 {sweep['ungated']['ndcg@10']:.4f}); skipped "
            f"queries keep the first-stage order and cost no model time. The rule picks {sweep['chosen']}; "
            f"cross-validated with this fusion fixed: NDCG@10 {gate_cv['ndcg@10']:.4f}, "
            f"{gate_cv['mean_latency_ms']:.1f} ms mean, picks per fold: {'; '.join(gate_cv['picks'])}",
            "",
            render_table(["gate", "skip rate", "NDCG@10", "vs ungated", "mean ms"], rows, markdown=markdown),
        ]
    held_out = report.get("held_out")
    if held_out:
        rows = [
            [
                system["name"],
                number(system["ndcg@10"]),
                "-" if not system["latency_ms"] else number(system["latency_ms"]["mean"], 1),
                "-" if not system["latency_ms"] else number(system["latency_ms"]["p95"], 1),
                percent(system["gate_skip"]),
            ]
            for system in held_out["systems"]
        ]
        lines += [
            "",
            f"Held out: {held_out['split']} split, {held_out['queries']} queries (never seen by the tuning):",
            "",
            render_table(["system", "NDCG@10", "mean ms", "p95 ms", "gate skip"], rows, markdown=markdown),
        ]
    return "\n".join(lines) + "\n"
