"""`rerank-prod`: measure a re-ranker on your data before you ship it.

    rerank-prod eval  DATASET_DIR --model PATH [--reranker SPEC ...] [--config FILE] [--gate-sweep 0:0.5:0.05]
    rerank-prod tune  DATASET_DIR --model PATH --split train [--sample 80] [--report-split test]
    rerank-prod bench DATASET_DIR --model PATH [--sizes 20,100]
    rerank-prod report EVENTS.jsonl --out DIR [--bucket SECONDS]
    rerank-prod batch DATASET_DIR|REQUESTS.jsonl|.parquet --model PATH --out DIR [--actors 4]

Heavy libraries (torch, bm25s, pytrec_eval, matplotlib, frameworks) load only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rerank_prod import __version__
from rerank_prod.evaluation.runner import SWEEP_SIGNALS
from rerank_prod.gate import GATE_SCALES
from rerank_prod.scoring import DEFAULT_CROSS_ENCODER

if TYPE_CHECKING:
    from rerank_prod.evaluation.bench import CandidateSet
    from rerank_prod.evaluation.dataset import Qrels

BENCH_SYSTEMS = (
    "core",
    "core-fp32",
    "core-bf16",
    "core-thread",
    "langchain",
    "llamaindex",
    "langchain-crossencoder",
    "llamaindex-sentence-transformer",
)
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


def _floats(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
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


_BEIR_HELP = "BEIR-layout directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"


def _add_common(parser: argparse.ArgumentParser, dataset_help: str = _BEIR_HELP) -> None:
    parser.add_argument("dataset", type=Path, help=dataset_help)
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


def _add_scorer_options(parser: argparse.ArgumentParser) -> None:
    """The default scorer's flags, shared by `eval`, `batch` and `tune`."""
    parser.add_argument(
        "--activation",
        default="identity",
        choices=("identity", "sigmoid", "default"),
        help="score the default scorer returns: raw logits (default; what per-query min-max "
        "fusion should see), sigmoid probabilities, or the model's own",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="model batch size (default 32)")
    parser.add_argument("--max-length", type=_positive_int, default=None, help="token cap (default: the model's)")
    parser.add_argument(
        "--chunk",
        choices=("max", "first", "mean"),
        help="score long passages as overlapping windows of the model's length, aggregated by max/first/mean",
    )


def _add_configurations(parser: argparse.ArgumentParser) -> None:
    """The re-ranker configuration flags, shared by `eval` and `batch`."""
    _add_scorer_options(parser)
    parser.add_argument(
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
    parser.add_argument("--config", type=Path, help="JSON or TOML file listing configurations")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first, repeatable: it can register_scorer()/register_cache_backend() "
        "so configurations can name your own backends",
    )


def _add_batch(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser(
        "batch",
        help="offline re-ranking of a large request set, on Ray or in this process; resumable",
        description="Re-rank every query's candidates with one configuration and write result parts "
        "(Parquet or JSONL) and a TREC run file under --out. Run it again on the same --out to resume: "
        "queries already written are skipped.",
    )
    _add_common(
        batch,
        "a BEIR-layout directory (its judged queries, candidates from the first stage) or a .jsonl/.parquet "
        "file of requests {query_id, query, candidates: [{id, text, retrieval_score}]}",
    )
    _add_configurations(batch)
    batch.add_argument("--top-k", type=_positive_int, default=100, help="first-stage candidates per query (BEIR)")
    batch.add_argument("--max-queries", type=_positive_int, help="only the first N judged queries (BEIR)")
    batch.add_argument("--engine", choices=("ray", "local"), default="ray", help="Ray Data (default) or this process")
    batch.add_argument("--actors", type=_positive_int, default=2, help="Ray actors, one model each (default 2)")
    batch.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs (torch threads) per actor (default 1)")
    batch.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (default 0)")
    batch.add_argument("--queries-per-batch", type=_positive_int, default=8, help="requests per batch (default 8)")
    batch.add_argument("--format", choices=("parquet", "jsonl"), default="parquet", dest="output_format")
    batch.add_argument("--ray-address", help="Ray cluster to join (default: start a local one)")


def _add_tune(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tune = commands.add_parser(
        "tune",
        help="pick fusion, RRF k and gate thresholds on a tuning split (cross-validated); write a config file",
        description="Score a tuning split's first-stage top-K once, replay every fusion (weights, "
        "normalizations, RRF k) and gate threshold of a grid over those scores, choose by k-fold "
        "cross-validation over queries, and write OUT/tuned.json: load it with "
        "rerank_prod.load_reranker() or pass it to 'rerank-prod eval --config'.",
    )
    _add_common(tune)
    _add_scorer_options(tune)
    tune.set_defaults(split="train")
    tune.add_argument("--top-k", type=_positive_int, default=100, help="candidates per query (default 100)")
    tune.add_argument(
        "--sample", type=_positive_int, help="tune on N queries drawn from the split (a validation carve)"
    )
    tune.add_argument("--seed", type=int, default=42, help="seed for --sample and the folds (default 42)")
    tune.add_argument("--max-queries", type=_positive_int, help="tune on the first N judged queries")
    tune.add_argument("--folds", type=_positive_int, default=5, help="cross-validation folds (default 5)")
    tune.add_argument(
        "--max-ndcg-loss",
        type=float,
        default=0.0,
        help="take the cheapest configuration within this NDCG@10 of the best (default 0: the best)",
    )
    tune.add_argument("--report-split", help="also compare default and tuned on this held-out split (e.g. test)")
    tune.add_argument("--report-max-queries", type=_positive_int, help="only the first N queries of --report-split")


def _tune(args: argparse.Namespace) -> None:
    from rerank_prod.evaluation.report import tune_markdown
    from rerank_prod.evaluation.tune import TuneOptions, run_tune

    options = TuneOptions(
        dataset=args.dataset,
        scorer=default_scorer(args),
        out=args.out,
        split=args.split,
        sample=args.sample,
        seed=args.seed,
        max_queries=args.max_queries,
        top_k=args.top_k,
        folds=args.folds,
        max_ndcg_loss=args.max_ndcg_loss,
        run_file=args.run_file,
        bm25_k1=args.bm25_k1,
        bm25_b=args.bm25_b,
        report_split=args.report_split,
        report_max_queries=args.report_max_queries,
        progress=args.progress,
    )
    print(tune_markdown(run_tune(options), markdown=False))
    print(f"wrote {args.out / 'tuned.json'}, {args.out / 'tune.md'}, {args.out / 'tune.json'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerank-prod", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser(
        "eval",
        help="ranking quality and latency of re-ranker configurations",
        description="Re-rank a first stage's top-K with each configuration and "
        "report NDCG/MRR/Recall, latency and a verdict per configuration.",
    )
    _add_common(evaluate)
    _add_configurations(evaluate)
    evaluate.add_argument("--top-k", type=_positive_int, default=100, help="candidates per query (default 100)")
    evaluate.add_argument(
        "--k",
        type=_ints,
        default=[5, 10],
        dest="ks",
        help="metric cutoffs, comma-separated (default 5,10; 5 and 10 are always added)",
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
    evaluate.add_argument(
        "--ray",
        action="store_true",
        help="re-rank on a Ray actor pool: live scoring, no replay (pip install 'rerank-prod[ray]')",
    )
    evaluate.add_argument("--ray-actors", type=_positive_int, default=2, help="actors with --ray (default 2)")
    evaluate.add_argument("--ray-address", help="Ray cluster to join with --ray (default: start a local one)")

    _add_batch(commands)

    _add_tune(commands)

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
        "--ndcg-queries",
        type=int,
        default=0,
        help="also NDCG@10 per precision (auto, fp32, bf16) over this many queries' top-(largest size) "
        "candidates, unbounded, next to the first stage (default 0: skip)",
    )
    budget = bench.add_argument_group("budget under load (--load) and anytime ranking (--anytime)")
    budget.add_argument(
        "--load",
        choices=("threads", "async"),
        help="run the load mode instead of the latency bench; each call gets the smallest of --sizes candidates "
        "(default 20: a call that fits its budget alone), --anytime the largest",
    )
    budget.add_argument("--callers", type=_positive_int, default=16, help="concurrent callers under --load")
    budget.add_argument("--seconds", type=float, default=10.0, help="length of the --load run (default 10)")
    budget.add_argument("--budget", type=float, default=0.3, help="timeout_s of every call under --load")
    budget.add_argument("--words", type=int, default=25, help="passages cut to this many words (0: full)")
    budget.add_argument("--anytime", type=_floats, help="budgets (s) for anytime NDCG@10, e.g. 1,0.5,0.3,0.1")
    budget.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    budget.add_argument(
        "--isolation",
        choices=("auto", "thread", "process"),
        default="auto",
        help="CrossEncoderScorer's isolation under --load: a model process of its own, this process, or auto "
        "(the default: a model process where one can run)",
    )
    bench.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the per-system memory probes (each loads the model in a fresh process)",
    )
    report = commands.add_parser(
        "report",
        help="markdown report (latency over time, gain distribution, alerts) from a RerankMonitor event log",
        description="Turn the JSON-lines event log a RerankMonitor(log_path=...) wrote into DIR/report.md, "
        "with DIR/latency.png and DIR/gain.png when matplotlib is installed.",
    )
    report.add_argument("events", type=Path, help="the monitor's JSON-lines event log")
    report.add_argument("--out", type=Path, required=True, help="directory for report.md and the plots")
    report.add_argument("--bucket", type=float, help="seconds per latency-over-time bucket (default: ~24 buckets)")
    report.add_argument("--no-plot", dest="plot", action="store_false")
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
    if args.chunk is not None:
        scorer["chunk"] = args.chunk
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
        plot=args.plot and _can_plot(),
        ray_actors=args.ray_actors if args.ray else None,
    )
    if args.ray:
        _connect_ray(args.ray_address)
    report = run_eval(options)
    print(eval_terminal(report))
    print(
        f"\nwrote {args.out / 'report.md'}, {args.out / 'results.json'}, {args.out / 'runs'}/"
        + (f", {args.out / 'plot.png'}" if args.plot else "")
    )


def _connect_ray(address: str | None) -> None:
    from rerank_prod.batch.engines import connect_ray

    connect_ray(address)


def _batch(args: argparse.Namespace) -> None:
    from rerank_prod.batch import beir_requests, read_requests, run_batch
    from rerank_prod.evaluation.configs import resolve_specs
    from rerank_prod.evaluation.dataset import EvalInputError

    _import_plugins(args.plugin)
    specs = resolve_specs(args.reranker, args.config, default_scorer(args), defaults=[{"name": "model"}])
    if len(specs) != 1:
        raise EvalInputError(f"batch runs one configuration, got {len(specs)}: {[spec['name'] for spec in specs]}")
    if args.dataset.is_dir():
        source, requests = beir_requests(
            args.dataset,
            split=args.split,
            top_k=args.top_k,
            run_file=args.run_file,
            max_queries=args.max_queries,
            bm25_k1=args.bm25_k1,
            bm25_b=args.bm25_b,
        )
    else:
        source, requests = f"requests {args.dataset.name}", read_requests(args.dataset)
    if args.engine == "ray":
        _connect_ray(args.ray_address)
    report = run_batch(
        requests,
        specs[0],
        args.out,
        engine=args.engine,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor,
        batch_size=args.queries_per_batch,
        output_format=args.output_format,
        progress=args.progress,
    )
    print(
        f"{specs[0]['name']!r} over {source}: {report.queries} queries re-ranked ({report.pairs} pairs, "
        f"{report.pairs_per_s:.1f} pairs/s, {report.wall_s:.1f} s, engine {report.engine}, {report.actors} "
        f"actor(s)); {report.resumed} already done; {report.failed} refused\nwrote {args.out / 'results'}/, "
        f"{report.run_file}"
    )


def _can_plot() -> bool:
    """The plot is optional: without matplotlib the evaluation runs and says how to get it."""
    if importlib.util.find_spec("matplotlib") is None:
        print("rerank-prod eval: matplotlib is not installed, so no plot.png: pip install 'rerank-prod[plot]'")
        return False
    return True


def _bench(args: argparse.Namespace) -> None:
    from rerank_prod.evaluation.bench import BenchOptions, precision_quality, run_bench
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
    if args.load or args.anytime:
        return _bench_budget(args, chosen, dataset.qrels)
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
    progress = (lambda m: print(f"... {m}", file=sys.stderr)) if args.progress else lambda _: None
    report = run_bench(options, progress)
    if args.ndcg_queries > 0:
        report["quality"] = precision_quality(
            args.model, full[: args.ndcg_queries], dataset.qrels, ("auto", "fp32", "bf16"), progress
        )
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


def _bench_budget(args: argparse.Namespace, chosen: list[CandidateSet], qrels: Qrels) -> None:
    from rerank_prod.evaluation.load import LoadOptions, anytime_text, load_text, run_anytime, run_load

    progress = (lambda m: print(f"... {m}", file=sys.stderr)) if args.progress else lambda _: None
    sets = [(qid, query, candidates[: max(args.sizes)]) for qid, query, candidates in chosen]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.load:  # the smallest size: a storm of calls that each fit their budget alone
        load_sets = [(qid, query, candidates[: min(args.sizes)]) for qid, query, candidates in chosen]
        words = args.words or None
        options = LoadOptions(
            args.model,
            load_sets,
            args.load,
            args.callers,
            args.seconds,
            args.budget,
            words,
            args.precision,
            args.isolation,
        )
        report = run_load(options, progress)
        (args.out / "load.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(load_text(report))
    if args.anytime:
        anytime = run_anytime(args.model, sets, qrels, [None, *args.anytime], args.precision, progress)
        (args.out / "anytime.json").write_text(json.dumps(anytime, indent=2), encoding="utf-8")
        print(anytime_text(anytime))


def _report(args: argparse.Namespace) -> None:
    from rerank_prod.observability.report import build_report, read_events

    markdown = build_report(
        read_events(args.events), args.out, source=str(args.events), bucket_s=args.bucket, plot=args.plot
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {args.out / 'report.md'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rerank_prod.evaluation.dataset import EvalInputError
    from rerank_prod.observability.report import ReportInputError

    try:
        {"eval": _eval, "tune": _tune, "bench": _bench, "report": _report, "batch": _batch}[args.command](args)
    except (EvalInputError, ReportInputError) as exc:
        print(f"rerank-prod {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
