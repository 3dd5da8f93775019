"""`rerank-prod`: measure a re-ranker on your data before you ship it.

    rerank-prod eval  DATASET_DIR --model PATH [--reranker SPEC ...] [--config FILE] [--gate-sweep 0:0.5:0.05]
    rerank-prod bench DATASET_DIR --model PATH [--sizes 20,100]

Heavy libraries (torch, bm25s, pytrec_eval, matplotlib, frameworks) load only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rerank_prod.evaluation.runner import SWEEP_SIGNALS
from rerank_prod.gate import GATE_SCALES
from rerank_prod.scoring import DEFAULT_CROSS_ENCODER

BENCH_SYSTEMS = ("core", "langchain", "llamaindex", "langchain-crossencoder", "llamaindex-sentence-transformer")
"""`rerank-prod bench --systems` names (see `rerank_prod.evaluation.bench.SYSTEMS`), kept here so
building the parser imports no framework."""


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    return _ints(text)[0] if "," not in text else _fail(f"expected one positive integer, got {text!r}")


def _fail(message: str) -> int:
    raise argparse.ArgumentTypeError(message)


def _thresholds(text: str) -> list[float]:
    """START:STOP:STEP, STOP included (0:0.5:0.1 -> 0, 0.1, ..., 0.5)."""
    try:
        start, stop, step = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP:STEP, got {text!r}") from None
    if step <= 0 or stop < start or start < 0:
        raise argparse.ArgumentTypeError(f"need 0 <= START <= STOP and STEP > 0, got {text!r}")
    count = int(round((stop - start) / step)) + 1
    return [round(start + i * step, 10) for i in range(count) if start + i * step <= stop + 1e-9]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", type=Path, help="BEIR-layout directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"
    )
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument(
        "--run",
        type=Path,
        dest="run_file",
        help="TREC run file ('qid Q0 docid rank score tag') as the first stage instead of BM25",
    )
    parser.add_argument("--bm25-k1", type=float, default=0.9, help="BM25 k1 (default 0.9, Anserini's)")
    parser.add_argument("--bm25-b", type=float, default=0.4, help="BM25 b (default 0.4, Anserini's)")
    parser.add_argument(
        "--model",
        default=DEFAULT_CROSS_ENCODER,
        help=f"cross-encoder path or hub id for the default scorer (default {DEFAULT_CROSS_ENCODER})",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the report, JSON and run files")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerank-prod", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser(
        "eval",
        help="ranking quality and latency of re-ranker configurations",
        description="Re-rank a first stage's top-K with each configuration and "
        "report NDCG/MRR/Recall, latency and a verdict per configuration.",
    )
    _add_common(evaluate)
    evaluate.add_argument(
        "--activation",
        default="identity",
        choices=("identity", "sigmoid", "default"),
        help="score the default scorer returns: raw logits (default; what per-query min-max "
        "fusion should see), sigmoid probabilities, or the model's own",
    )
    evaluate.add_argument("--batch-size", type=_positive_int, default=32)
    evaluate.add_argument("--max-length", type=_positive_int, default=None, help="token cap (default: the model's)")
    evaluate.add_argument("--top-k", type=_positive_int, default=100, help="candidates per query (default 100)")
    evaluate.add_argument(
        "--k",
        type=_ints,
        default=[5, 10],
        dest="ks",
        help="metric cutoffs, comma-separated (default 5,10; 5 and 10 are always added)",
    )
    evaluate.add_argument(
        "--reranker",
        "-r",
        action="append",
        default=[],
        metavar="SPEC",
        help="a configuration as comma-separated key=value, repeatable, e.g. "
        "'name=hybrid,fusion=weighted,fusion.retrieval_weight=0.5,gate.min_top_gap=0.3'. "
        "Keys: name, scorer, fusion, gate, result_cache, score_cache, semantic_cache, timeout_s, fallback, "
        "fallback_timeout_s, top_n, score_threshold ('table.option=value' for options). Scorer types: "
        "cross-encoder, embedding, openai-embedding, cohere, tei, rerank-server, llm-pointwise, llm-listwise; "
        "cache backends: memory, redis",
    )
    evaluate.add_argument("--config", type=Path, help="JSON or TOML file listing configurations")
    evaluate.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first, repeatable: it can register_scorer()/register_cache_backend() "
        "so configurations can name your own backends",
    )
    evaluate.add_argument("--max-queries", type=_positive_int, help="evaluate only the first N judged queries")
    evaluate.add_argument(
        "--no-replay",
        dest="replay",
        action="store_false",
        help="score live in every configuration instead of replaying shared scorer results",
    )
    evaluate.add_argument(
        "--gate-sweep",
        type=_thresholds,
        metavar="START:STOP:STEP",
        help="also sweep gate thresholds, e.g. 0:0.6:0.05 (replays scores, no re-scoring)",
    )
    evaluate.add_argument("--sweep-signal", choices=tuple(SWEEP_SIGNALS), default="top_gap")
    evaluate.add_argument(
        "--sweep-scale", choices=GATE_SCALES, default="normalized", help="gate on raw or min-max normalized scores"
    )
    evaluate.add_argument("--sweep-top-k", type=_positive_int, default=5, help="top_k for the top_k_std signal")
    evaluate.add_argument("--sweep-config", help="ungated configuration to sweep (default: the first ungated)")
    evaluate.add_argument("--no-plot", dest="plot", action="store_false")

    bench = commands.add_parser(
        "bench",
        help="latency, order agreement, memory and concurrency vs the frameworks' own re-rankers",
        description="Re-rank the same candidate sets with the same model through rerank-prod's core, its "
        "LangChain and LlamaIndex adapters, LangChain's CrossEncoderReranker and LlamaIndex's "
        "SentenceTransformerRerank. The defaults take a few minutes on 2 CPU cores.",
    )
    _add_common(bench)
    bench.add_argument("--sizes", type=_ints, default=[20, 100], help="candidates per call (default 20,100)")
    bench.add_argument("--queries", type=_positive_int, default=3, help="candidate sets per size (default 3)")
    bench.add_argument("--repeats", type=_positive_int, default=2, help="timed rounds over the sets (default 2)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed calls per system first (default 1)")
    bench.add_argument(
        "--systems",
        default=",".join(BENCH_SYSTEMS),
        help=f"comma-separated, the first gives the reference order (default {','.join(BENCH_SYSTEMS)})",
    )
    bench.add_argument("--concurrency", type=int, default=4, help="concurrent async callers (default 4; 0: skip)")
    bench.add_argument("--calls-per-caller", type=_positive_int, default=2)
    bench.add_argument(
        "--concurrency-size", type=_positive_int, help="candidates per call under concurrency (default: smallest)"
    )
    bench.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the per-system memory probes (each loads the model in a fresh process)",
    )
    return parser


def default_scorer(args: argparse.Namespace) -> dict[str, object]:
    scorer: dict[str, object] = {
        "type": "cross-encoder",
        "model": args.model,
        "activation": args.activation,
        "batch_size": args.batch_size,
    }
    if args.max_length is not None:
        scorer["max_length"] = args.max_length
    return scorer


def _import_plugins(modules: Sequence[str]) -> None:
    from rerank_prod.evaluation.dataset import EvalInputError

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise EvalInputError(f"--plugin {module}: {exc}") from None


def _eval(args: argparse.Namespace) -> None:
    from rerank_prod.evaluation.configs import resolve_specs
    from rerank_prod.evaluation.experiment import EvalOptions, run_eval
    from rerank_prod.evaluation.report import eval_terminal

    _import_plugins(args.plugin)
    options = EvalOptions(
        dataset=args.dataset,
        specs=resolve_specs(args.reranker, args.config, default_scorer(args)),
        out=args.out,
        split=args.split,
        top_k=args.top_k,
        ks=args.ks,
        run_file=args.run_file,
        bm25_k1=args.bm25_k1,
        bm25_b=args.bm25_b,
        max_queries=args.max_queries,
        replay=args.replay,
        progress=args.progress,
        sweep_thresholds=args.gate_sweep or (),
        sweep_signal=args.sweep_signal,
        sweep_top_k=args.sweep_top_k,
        sweep_scale=args.sweep_scale,
        sweep_config=args.sweep_config,
        plot=args.plot,
    )
    report = run_eval(options)
    print(eval_terminal(report))
    print(
        f"\nwrote {args.out / 'report.md'}, {args.out / 'results.json'}, {args.out / 'runs'}/"
        + (f", {args.out / 'plot.png'}" if args.plot else "")
    )


def _bench(args: argparse.Namespace) -> None:
    from rerank_prod.evaluation.bench import BenchOptions, run_bench
    from rerank_prod.evaluation.dataset import EvalInputError, load_beir
    from rerank_prod.evaluation.first_stage import candidate_sets, first_stage_rankings
    from rerank_prod.evaluation.report import bench_sections

    dataset = load_beir(args.dataset, args.split)
    depth = max(args.sizes)
    stage_name, first_stage = first_stage_rankings(
        dataset, dataset.query_ids, depth, run_file=args.run_file, k1=args.bm25_k1, b=args.bm25_b
    )
    full = [(q, dataset.queries[q], c) for q, c in candidate_sets(dataset, first_stage).items() if len(c) == depth]
    if not full:
        raise EvalInputError(f"no query has {depth} first-stage candidates; lower --sizes")
    chosen = full[: args.queries]
    options = BenchOptions(
        model=args.model,
        sets={size: [(qid, query, candidates[:size]) for qid, query, candidates in chosen] for size in args.sizes},
        systems=[name.strip() for name in args.systems.split(",") if name.strip()],
        repeats=args.repeats,
        warmup=args.warmup,
        concurrency=args.concurrency,
        concurrency_size=args.concurrency_size or min(args.sizes),
        calls_per_caller=args.calls_per_caller,
        memory=args.memory,
    )
    report = run_bench(options, (lambda m: print(f"... {m}", file=sys.stderr)) if args.progress else lambda _: None)
    report["settings"] = {
        "dataset": str(args.dataset),
        "split": args.split,
        "first_stage": stage_name,
        "queries": [qid for qid, _, _ in chosen],
        "repeats": args.repeats,
        "warmup": args.warmup,
    }
    heading = (
        f"{args.model} on {args.dataset} [{args.split}], {stage_name}: {len(chosen)} candidate sets per size, "
        f"{args.repeats} timed rounds after {args.warmup} warm-up call(s) per system"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    markdown = f"# Re-ranker benchmark\n\n{heading}\n\n{bench_sections(report, markdown=True)}"
    (args.out / "bench.md").write_text(markdown, encoding="utf-8")
    print(f"{heading}\n\n{bench_sections(report)}")
    print(f"wrote {args.out / 'bench.md'}, {args.out / 'bench.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rerank_prod.evaluation.dataset import EvalInputError

    try:
        {"eval": _eval, "bench": _bench}[args.command](args)
    except EvalInputError as exc:
        print(f"rerank-prod {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
