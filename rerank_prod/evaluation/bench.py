"""`rerank-prod bench`: the same candidate sets and model through this package and the frameworks'
own re-rankers. Latency (warm-up, interleaved rounds), agreement of the orders, peak memory and
throughput under concurrent async callers.

Each system gets freshly built framework inputs per call, outside the timer: LlamaIndex's
`SentenceTransformerRerank` writes scores into the nodes it is given, so inputs cannot be reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rerank_prod.evaluation.dataset import EvalInputError
from rerank_prod.evaluation.runner import latency_ms
from rerank_prod.scoring.cross_encoder import Isolation
from rerank_prod.scoring.precision import Precision
from rerank_prod.types import Candidate

CandidateSet = tuple[str, str, list[Candidate]]
"""(query id, query text, candidates in first-stage order)."""


@dataclass(frozen=True)
class BenchSystem:
    """One way to re-rank: `prepare` builds its inputs, `call`/`acall` return doc ids best first."""

    name: str
    prepare: Callable[[list[Candidate]], Any]
    call: Callable[[str, Any], list[str]]
    acall: Callable[[str, Any], Awaitable[list[str]]]
    async_path: str
    max_tokens: int
    """Input length cap of the loaded model: a system that changes it scores different text."""


def _core(model: str, top_n: int, precision: Precision = "auto", isolation: Isolation = "auto") -> BenchSystem:
    from rerank_prod import CrossEncoderScorer, Reranker

    scorer = CrossEncoderScorer(model, precision=precision, isolation=isolation)
    reranker = Reranker(scorer)

    async def acall(query: str, candidates: list[Candidate]) -> list[str]:
        return [item.candidate.id or "" for item in await reranker.arerank(query, candidates)]

    name = "rerank-prod core" + ("" if precision == "auto" else f" {scorer.precision}")
    return BenchSystem(
        name + (" in-process" if isolation == "thread" else ""),
        list,
        lambda query, candidates: [item.candidate.id or "" for item in reranker.rerank(query, candidates)],
        acall,
        f"native arerank; the shared engine's worker wakes the loop (precision {scorer.precision}, "
        f"model in {'a process of its own' if scorer.isolation == 'process' else 'this process'})",
        _max_tokens(reranker),
    )


def _max_tokens(loaded: Any) -> int:
    """Length cap of the sentence-transformers `CrossEncoder` inside a `Reranker` or a framework object."""
    from rerank_prod import Reranker

    holder: Any = loaded.scorer if isinstance(loaded, Reranker) else loaded  # a scorer's or the model's own
    return int(holder.max_seq_length)


def _documents(candidates: list[Candidate]) -> list[Any]:
    from langchain_core.documents import Document

    return [Document(page_content=c.text, metadata={"score": c.retrieval_score}, id=c.id) for c in candidates]


def _langchain_ids(documents: Sequence[Any]) -> list[str]:
    return [document.id for document in documents]


def _langchain_compressor(compressor: Any, name: str, async_path: str, max_tokens: int) -> BenchSystem:
    async def acall(query: str, documents: list[Any]) -> list[str]:
        return _langchain_ids(await compressor.acompress_documents(documents, query))

    return BenchSystem(
        name,
        _documents,
        lambda query, documents: _langchain_ids(compressor.compress_documents(documents, query)),
        acall,
        async_path,
        max_tokens,
    )


def _rerank_prod_langchain(model: str, top_n: int) -> BenchSystem:
    from langchain_rerank_prod import RerankProdCompressor

    compressor = RerankProdCompressor.from_cross_encoder(model, top_n=None)
    return _langchain_compressor(
        compressor, "rerank-prod LangChain", "native acompress_documents -> arerank", _max_tokens(compressor.reranker)
    )


def _langchain_cross_encoder(model: str, top_n: int) -> BenchSystem:
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_community.cross_encoders import HuggingFaceCrossEncoder

    cross_encoder = HuggingFaceCrossEncoder(model_name=model)
    compressor = CrossEncoderReranker(model=cross_encoder, top_n=top_n)
    return _langchain_compressor(
        compressor,
        "LangChain CrossEncoderReranker",
        "LangChain default: run_in_executor",
        _max_tokens(cross_encoder.client),
    )


def _nodes(candidates: list[Candidate]) -> list[Any]:
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=c.text, id_=c.id), score=c.retrieval_score) for c in candidates]


def _llamaindex_ids(nodes: Sequence[Any]) -> list[str]:
    return [node.node.node_id for node in nodes]


def _llamaindex_postprocessor(postprocessor: Any, name: str, async_path: str, max_tokens: int) -> BenchSystem:
    async def acall(query: str, nodes: list[Any]) -> list[str]:
        return _llamaindex_ids(await postprocessor.apostprocess_nodes(nodes, query_str=query))

    return BenchSystem(
        name,
        _nodes,
        lambda query, nodes: _llamaindex_ids(postprocessor.postprocess_nodes(nodes, query_str=query)),
        acall,
        async_path,
        max_tokens,
    )


def _rerank_prod_llamaindex(model: str, top_n: int) -> BenchSystem:
    from llamaindex_rerank_prod import RerankProdPostprocessor

    postprocessor = RerankProdPostprocessor.from_cross_encoder(model, top_n=None)
    return _llamaindex_postprocessor(
        postprocessor,
        "rerank-prod LlamaIndex",
        "native apostprocess_nodes -> arerank",
        _max_tokens(postprocessor.reranker),
    )


def _llamaindex_sentence_transformer(model: str, top_n: int) -> BenchSystem:
    from llama_index.core.postprocessor import SentenceTransformerRerank

    postprocessor = SentenceTransformerRerank(model=model, top_n=top_n, device="cpu")
    # LlamaIndex loads the model with max_length=512 whatever the model's own limit: see `max_tokens`
    return _llamaindex_postprocessor(
        postprocessor,
        "LlamaIndex SentenceTransformerRerank",
        "LlamaIndex default: asyncio.to_thread",
        _max_tokens(postprocessor._model),
    )


SYSTEMS: dict[str, Callable[[str, int], BenchSystem]] = {
    "core": _core,
    "core-fp32": functools.partial(_core, precision="fp32"),
    "core-bf16": functools.partial(_core, precision="bf16"),
    "core-thread": functools.partial(_core, isolation="thread"),
    "langchain": _rerank_prod_langchain,
    "llamaindex": _rerank_prod_llamaindex,
    "langchain-crossencoder": _langchain_cross_encoder,
    "llamaindex-sentence-transformer": _llamaindex_sentence_transformer,
}
"""Short names (for `--systems`) -> builder(model path, top_n). The first one chosen is the reference order."""


@dataclass
class BenchOptions:
    model: str
    sets: dict[int, list[CandidateSet]]
    """candidates per call -> the candidate sets of that size."""
    systems: Sequence[str] = tuple(SYSTEMS)
    repeats: int = 2
    warmup: int = 1
    concurrency: int = 4
    concurrency_size: int = 20
    calls_per_caller: int = 2
    memory: bool = True


def _rss_bytes() -> int | None:
    """Resident set size of this process and its descendants (a model process holds the model: its
    memory is the re-ranker's too), from Linux /proc; None where it cannot be read."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = _pages(os.getpid())
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    parents = [os.getpid()]
    while parents:
        for child in _children(parents.pop()):
            with contextlib.suppress(OSError, ValueError, IndexError):  # it exited while being read
                total += _pages(child)
                parents.append(child)
    return total * page


def _pages(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1])


def _children(pid: int) -> list[int]:
    """Child process ids of `pid`; none where it exited or the kernel does not list them
    (CONFIG_PROC_CHILDREN)."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children += [int(child) for child in listed.read().split()]
    return children


class _PeakRss:
    """Samples RSS every 5 ms in a thread while the block runs; `.mib` is the highest seen."""

    def __enter__(self) -> _PeakRss:
        self._peak, self._running = 0, threading.Event()
        self._running.set()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running.is_set():
            self._peak = max(self._peak, _rss_bytes() or 0)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._running.clear()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes() or 0)

    @property
    def mib(self) -> float | None:
        return self._peak / 2**20 if self._peak else None


def _memory_probe(builder: str, model: str, sets: dict[int, list[CandidateSet]], results: Any) -> None:
    """Runs in a fresh process: imports and builds one system, then makes one call per size.
    (`ru_maxrss` would not do: Linux carries it over from the parent across fork and exec.)"""
    baseline = _rss_bytes()
    with _PeakRss() as building:
        system = SYSTEMS[builder](model, max(sets))
    loaded = _rss_bytes()
    with _PeakRss() as calling:
        for candidate_sets in sets.values():
            _, query, candidates = candidate_sets[0]
            system.call(query, system.prepare(candidates))
    results.put(
        {
            "rss_before_build_mib": None if baseline is None else baseline / 2**20,
            "rss_after_build_mib": None if loaded is None else loaded / 2**20,
            "rss_peak_building_mib": building.mib,
            "rss_peak_calls_mib": calling.mib,
        }
    )


def measure_memory(builder: str, model: str, sets: dict[int, list[CandidateSet]]) -> dict[str, float | None]:
    """Peak memory of one system in a fresh process, so systems cannot inherit each other's memory."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    probe = context.Process(target=_memory_probe, args=(builder, model, sets, results))
    probe.start()
    try:
        while True:
            try:
                measured: dict[str, float | None] = results.get(timeout=1)
                return measured
            except queue.Empty:
                if not probe.is_alive():
                    raise RuntimeError(f"memory probe for {builder!r} died (exit code {probe.exitcode})") from None
    finally:
        probe.join()


def _timed_rounds(
    systems: dict[str, BenchSystem], candidate_sets: list[CandidateSet], repeats: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, dict[str, list[str]]]]:
    """Warm-up, then rounds in which each system handles each set, the order of systems rotating
    every set so none always runs first (cold caches) or last (a hot CPU)."""
    names = list(systems)
    for _ in range(warmup):
        for name in names:
            _, query, candidates = candidate_sets[0]
            systems[name].call(query, systems[name].prepare(candidates))
    latencies: dict[str, list[float]] = {name: [] for name in names}
    orders: dict[str, dict[str, list[str]]] = {name: {} for name in names}
    turn = 0
    for _ in range(repeats):
        for qid, query, candidates in candidate_sets:
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                inputs = systems[name].prepare(candidates)
                started = time.perf_counter()
                order = systems[name].call(query, inputs)
                latencies[name].append(time.perf_counter() - started)
                orders[name].setdefault(qid, order)
            turn += 1
    return latencies, orders


def _agreement(reference: Mapping[str, list[str]], other: Mapping[str, list[str]]) -> dict[str, Any]:
    """How many candidate sets come back in exactly the reference's order, and where others diverge."""
    differing = {}
    for qid, expected in reference.items():
        got = other[qid]
        if got != expected:
            first = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), len(got))
            differing[qid] = {"first_difference_at_rank": first + 1, "top10_same": got[:10] == expected[:10]}
    return {"identical": len(reference) - len(differing), "sets": len(reference), "differing": differing}


async def _concurrent(
    system: BenchSystem, candidate_sets: list[CandidateSet], callers: int, calls_per_caller: int
) -> dict[str, Any]:
    """`callers` coroutines, each awaiting `calls_per_caller` re-ranks back to back."""
    latencies: list[float] = []

    async def caller(index: int) -> None:
        for call in range(calls_per_caller):
            _, query, candidates = candidate_sets[(index + call) % len(candidate_sets)]
            inputs = system.prepare(candidates)
            started = time.perf_counter()
            await system.acall(query, inputs)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    wall = time.perf_counter() - started
    return {
        "callers": callers,
        "calls": len(latencies),
        "wall_s": wall,
        "calls_per_s": len(latencies) / wall,
        "latency_ms": latency_ms(latencies),
    }


def encoder_gflop(model: str, candidate_sets: list[CandidateSet], max_tokens: int) -> float:
    """Mean GFLOP of one call on the real tokens (no padding): per pair of n tokens, the encoder's
    matrix products (2 x layer parameters x n, per layer) plus attention (4 x hidden x n^2, per layer).
    Embeddings, norms and the head are left out (under 1% here): the rate it gives is a floor."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    hidden, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_token = 2 * layers * (4 * hidden * hidden + 2 * hidden * inner)
    total = 0.0
    for _, query, candidates in candidate_sets:
        encoded = tokenizer(
            [query] * len(candidates), [c.text for c in candidates], truncation=True, max_length=max_tokens
        )
        for ids in encoded["input_ids"]:
            n = len(ids)
            total += per_token * n + 4 * layers * hidden * n * n
    return total / len(candidate_sets) / 1e9


def precision_quality(
    model: str,
    candidate_sets: list[CandidateSet],
    qrels: Mapping[str, Mapping[str, int]],
    precisions: Sequence[Precision],
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """NDCG@10 of the core at each precision (no budget) and of the first-stage order, same sets."""
    from rerank_prod import CrossEncoderScorer, Reranker
    from rerank_prod.evaluation.ir_metrics import evaluate, mean_metrics

    judged = {qid: dict(qrels[qid]) for qid, _, _ in candidate_sets if qid in qrels}

    def ndcg(rankings: dict[str, list[str]]) -> float:
        return mean_metrics(evaluate(judged, rankings, [10]))["ndcg@10"]

    rows = [{"system": "first stage", "ndcg@10": ndcg({q: [c.id or "" for c in cs] for q, _, cs in candidate_sets})}]
    for precision in precisions:
        scorer = CrossEncoderScorer(model, precision=precision)
        progress(f"NDCG@10 at precision {precision} ({scorer.precision}), {len(candidate_sets)} queries")
        reranker = Reranker(scorer)
        rankings = {
            qid: [item.candidate.id or "" for item in reranker.rerank(query, candidates)]
            for qid, query, candidates in candidate_sets
        }
        rows.append({"system": f"core {precision} ({scorer.precision})", "ndcg@10": ndcg(rankings)})
    return {"queries": len(judged), "candidates": len(candidate_sets[0][2]), "rows": rows}


def run_bench(options: BenchOptions, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Latency, agreement, memory and concurrency for every system and candidate-set size.
    Everything is keyed by the systems' short names; the first system's order is the reference."""
    unknown = sorted(set(options.systems) - set(SYSTEMS))
    if unknown or not options.systems:
        raise EvalInputError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    progress("loading the systems")
    systems = {key: SYSTEMS[key](options.model, max(options.sets)) for key in options.systems}
    reference = options.systems[0]
    report: dict[str, Any] = {
        "model": options.model,
        "reference": reference,
        "systems": {
            key: {"name": s.name, "async_path": s.async_path, "max_tokens": s.max_tokens} for key, s in systems.items()
        },
        "sizes": {},
        "concurrency": None,
        "memory": {},
    }
    for size, candidate_sets in options.sets.items():
        progress(f"{len(systems)} systems x {len(candidate_sets)} sets x {options.repeats} rounds, {size} candidates")
        latencies, orders = _timed_rounds(systems, candidate_sets, options.repeats, options.warmup)
        work = {
            cap: encoder_gflop(options.model, candidate_sets, cap) for cap in {s.max_tokens for s in systems.values()}
        }
        report["sizes"][size] = {}
        for key, system in systems.items():
            latency = latency_ms(latencies[key])
            p50_ms = latency["p50"]
            report["sizes"][size][key] = {
                "latency_ms": latency,
                "calls": len(latencies[key]),
                "gflop_per_call": work[system.max_tokens],
                "gflop_per_s": None if not p50_ms else work[system.max_tokens] / (p50_ms / 1000),
                **_agreement(orders[reference], orders[key]),
            }
        if size == options.concurrency_size and options.concurrency > 0:
            progress(f"{options.concurrency} concurrent async callers, {size} candidates")
            report["concurrency"] = {
                "size": size,
                "systems": {
                    key: asyncio.run(_concurrent(system, candidate_sets, options.concurrency, options.calls_per_caller))
                    for key, system in systems.items()
                },
            }
    if options.memory:
        first_sets = {size: sets[:1] for size, sets in options.sets.items()}
        for key, system in systems.items():
            progress(f"memory of {system.name} in a fresh process")
            report["memory"][key] = measure_memory(key, options.model, first_sets)
    return report
