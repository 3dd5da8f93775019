"""Fault matrix: every backend x fault x sync/async, against the call's budget.

Run from the repository root (offline; loopback stand-in servers and a throwaway redis-server):

    python -m benchmarks.fault_matrix [--calls 6] [--budget 0.3] [--smoke]

Each case sends `--calls` re-rank calls through a `Reranker` (budget `timeout_s`) whose backend
meets the fault on every request, then heals the backend and sends one more call. Printed per case:
the worst latency against the budget, how many exceptions escaped, the `rerank_source` values seen,
whether the API key appeared in any log line, source or exception, and the breaker's state after
the faulty calls and after healing. A summary line gives the share of calls within budget + 25 ms.
`--smoke` runs a few cases with two calls each (for CI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopback.redis_server import RedisServer
from loopback.standin_servers import (
    Fault,
    StandInServer,
    drip,
    echo_credentials,
    hang,
    huge,
    llm_says,
    raw,
    reset_mid_body,
    running,
    status,
)
from rerank_prod import (
    CircuitBreaker,
    CohereScorer,
    Deadline,
    LLMPointwiseScorer,
    OpenAIEmbeddingScorer,
    RedisCache,
    Reranker,
    RerankServerScorer,
    ResultCache,
    RetryPolicy,
    ScoreCache,
    TEIScorer,
)

QUERY = "how do vaccines train the immune system"
PASSAGES = [
    "Vaccines train the immune system to recognise a pathogen.",
    "Paris is the capital of France.",
    "The immune system fights infections.",
    "How trains run on time in Switzerland.",
]
KEY = "sk-fault-matrix-0123456789abcdef"
TOLERANCE_S = 0.025
RETRY = RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05)


# --- backends ---------------------------------------------------------------------------------------


def _rerank_body(flavor: str, pairs: Sequence[tuple[Any, Any]]) -> bytes:
    if flavor == "tei":
        return json.dumps([{"index": i, "score": s} for i, s in pairs]).encode()
    key = "relevance_score"
    return json.dumps({"results": [{"index": i, key: s} for i, s in pairs]}).encode()


def _embedding_body(count: int) -> bytes:
    data = [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}] * count
    return json.dumps({"object": "list", "data": data, "model": "m"}).encode()


@dataclass(frozen=True)
class Backend:
    name: str
    flavor: str
    path: str
    make: Callable[[str, CircuitBreaker], Any]
    garbage: dict[str, Fault] = field(default_factory=dict)  # wrong count, NaN, duplicate indices


def _rerank_garbage(flavor: str) -> dict[str, Fault]:
    return {
        "wrong count": raw(_rerank_body(flavor, [(0, 0.5)])),
        "NaN scores": raw(_rerank_body(flavor, [(i, "NaN") for i in range(len(PASSAGES))]).replace(b'"NaN"', b"NaN")),
        "duplicate indices": raw(_rerank_body(flavor, [(0, 0.5)] * len(PASSAGES))),
    }


BACKENDS = [
    Backend(
        "TEI",
        "tei",
        "/rerank",
        lambda url, b: TEIScorer(url, api_key=KEY, retry=RETRY, circuit_breaker=b),
        _rerank_garbage("tei"),
    ),
    Backend(
        "Infinity/vLLM",
        "infinity",
        "/rerank",
        lambda url, b: RerankServerScorer(url, api_key=KEY, retry=RETRY, circuit_breaker=b),
        _rerank_garbage("infinity"),
    ),
    Backend(
        "Cohere",
        "cohere",
        "/v2/rerank",
        lambda url, b: CohereScorer(base_url=url, api_key=KEY, retry=RETRY, circuit_breaker=b),
        _rerank_garbage("cohere"),
    ),
    Backend(
        "OpenAI chat",
        "openai",
        "/v1/chat/completions",
        lambda url, b: LLMPointwiseScorer(
            "gpt-4o-mini", base_url=url + "/v1", api_key=KEY, retry=RETRY, circuit_breaker=b
        ),
        {"NaN scores": llm_says('{"relevance": NaN}'), "out-of-range scores": llm_says('{"relevance": 99}')},
    ),
    Backend(
        "embeddings",
        "openai",
        "/v1/embeddings",
        lambda url, b: OpenAIEmbeddingScorer(base_url=url + "/v1", api_key=KEY, retry=RETRY, circuit_breaker=b),
        {"wrong count": raw(_embedding_body(1))},
    ),
]

HTTP_FAULTS: dict[str, Fault] = {
    "never answers": hang(),
    "drip-feed": drip(0.1),
    "429 huge Retry-After": status(429, 100000),
    "5xx storm": status(503),
    "invalid JSON": raw(b"{not json"),
    "huge body": huge(50 * 2**20),
    "reset mid-body": reset_mid_body(),
    "echoed credentials": echo_credentials(),
}


class OverlapScorer:
    """A local stand-in model: word overlap, instant. Enough to see what a cache fault costs."""

    name = "overlap"
    identity = "overlap:v1"
    independent_scores = True
    circuit_breaker = None

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        words = set(query.lower().split())
        return [len(words & set(text.lower().split())) / len(words) for text in texts]

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        return self.score(query, texts)


# --- measuring one case -----------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    fault: str
    mode: str
    latencies: list[float] = field(default_factory=list)
    exceptions: int = 0
    sources: set[str] = field(default_factory=set)
    leaked: bool = False
    breaker: str = "-"
    healed: str = "-"


_runner = asyncio.Runner()  # one event loop for all async calls, as in a service


def _call(reranker: Reranker, mode: str, query: str) -> tuple[str, float]:
    if mode == "sync":
        started = time.perf_counter()
        result = reranker.rerank(query, PASSAGES)
        return str(result.source), time.perf_counter() - started

    async def timed() -> tuple[str, float]:
        started = time.perf_counter()
        answer = await reranker.arerank(query, PASSAGES)
        return str(answer.source), time.perf_counter() - started

    return _runner.run(timed())


def _measure(row: Row, reranker: Reranker, calls: int, log: io.StringIO, queries: Callable[[int], str]) -> None:
    for number in range(calls):
        try:
            source, elapsed = _call(reranker, row.mode, queries(number))
            row.sources.add(source.split(":")[0] if "retriever order" not in source else "fallback:retriever")
            row.leaked |= KEY in source
        except Exception as failure:  # an escaped exception is what the matrix counts
            row.exceptions += 1
            elapsed = float("nan")
            row.leaked |= KEY in "".join(traceback.format_exception(failure))
        row.latencies.append(elapsed)
    row.leaked |= KEY in log.getvalue()


def http_case(backend: Backend, fault_name: str, fault: Fault, mode: str, calls: int, budget: float, log) -> Row:
    row = Row(backend.name, fault_name, mode)
    with running(backend.flavor, api_key=KEY) as server:
        breaker = CircuitBreaker(failure_threshold=3, cooldown_s=0.5)
        reranker = Reranker(backend.make(server.url, breaker), timeout_s=budget)
        server.fail_next(backend.path, *[fault] * 500)
        _measure(row, reranker, calls, log, lambda n: QUERY)
        time.sleep(0.2)  # abandoned attempts end and are counted
        row.breaker = breaker.state
        server.clear_faults()
        time.sleep(0.6)
        row.healed = _call(reranker, mode, QUERY)[0].split(":")[0] + f"/{breaker.state}"
        _stop_server_threads(server)
    return row


def _stop_server_threads(server: StandInServer) -> None:
    server.closing.set()  # slow faults still being served end now


def redis_case(fault: str, mode: str, calls: int, budget: float, log, workdir: Path) -> Row:
    row = Row("Redis", fault, mode)
    extra = ("--maxmemory", "1mb", "--maxmemory-policy", "noeviction") if fault == "full" else ()
    server = RedisServer(workdir, *extra).start()
    try:
        backend = RedisCache(server.url)
        reranker = Reranker(
            OverlapScorer(), result_cache=ResultCache(backend), score_cache=ScoreCache(backend), timeout_s=budget
        )
        _call(reranker, mode, QUERY)
        import redis

        client = redis.Redis.from_url(server.url)
        if fault == "full":
            with_filler = client.pipeline()
            for index in range(2000):
                with_filler.set(f"filler:{index}", b"x" * 1024)
            with contextlib.suppress(redis.ResponseError):  # OOM: full
                with_filler.execute()
        if fault == "corrupt":
            for name in client.keys("*"):
                client.set(name, b'{"v":1,"d":[[0,NaN,0.1],[0,0.5,0.5]]}')
        if fault == "dead":
            server.stop()
        if fault == "hung" and server.process is not None:
            server.process.send_signal(signal.SIGSTOP)
        try:
            _measure(row, reranker, calls, log, lambda n: QUERY if fault == "corrupt" else f"{QUERY} {n}")
        finally:
            if fault == "hung" and server.process is not None:
                server.process.send_signal(signal.SIGCONT)
        row.breaker = "n/a"
        row.healed = "n/a"
    finally:
        server.stop()
    return row


# --- running the matrix -----------------------------------------------------------------------------


def _cases(smoke: bool) -> list[tuple[str, Any]]:
    modes = ["sync", "async"]
    if smoke:
        tei = BACKENDS[0]
        return [
            *[("http", (tei, name, HTTP_FAULTS[name], mode)) for name in ("drip-feed", "huge body") for mode in modes],
            *[("redis", ("hung", mode)) for mode in modes],
        ]
    cases: list[tuple[str, Any]] = []
    for backend in BACKENDS:
        for name, fault in {**HTTP_FAULTS, **backend.garbage}.items():
            cases += [("http", (backend, name, fault, mode)) for mode in modes]
    for fault in ("dead", "hung", "full", "corrupt"):
        cases += [("redis", (fault, mode)) for mode in modes]
    return cases


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=6, help="faulty calls per case (default 6)")
    parser.add_argument("--budget", type=float, default=0.3, help="timeout_s of every call (default 0.3)")
    parser.add_argument("--smoke", action="store_true", help="a few cases, two calls each (CI)")
    args = parser.parse_args(argv)
    calls = 2 if args.smoke else args.calls
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for kind, case in _cases(args.smoke):
            if kind == "http":
                rows.append(http_case(*case, calls, args.budget, log))
            else:
                rows.append(redis_case(*case, calls, args.budget, log, Path(workdir)))
    root.removeHandler(handler)
    _print(rows, args.budget)


def _print(rows: list[Row], budget: float) -> None:
    header = (
        f"{'backend':<14}{'fault':<22}{'mode':<6}{'max ms':>8}{'budget':>8}  {'within':<7}{'exc':>4}  "
        f"{'key':<5}{'breaker':<10}{'healed':<18}sources"
    )
    print(header)
    print("-" * len(header))
    within = total = escaped = leaks = 0
    for row in rows:
        worst = max((t for t in row.latencies if t == t), default=float("nan"))
        ok = sum(t <= budget + TOLERANCE_S for t in row.latencies if t == t)
        within, total, escaped, leaks = (
            within + ok,
            total + len(row.latencies),
            escaped + row.exceptions,
            leaks + row.leaked,
        )
        print(
            f"{row.backend:<14}{row.fault:<22}{row.mode:<6}{worst * 1000:>8.0f}{budget * 1000:>8.0f}  "
            f"{f'{ok}/{len(row.latencies)}':<7}{row.exceptions:>4}  {'LEAK' if row.leaked else 'no':<5}"
            f"{row.breaker:<10}{row.healed:<18}{','.join(sorted(row.sources))}"
        )
    print(
        f"\n{len(rows)} cases, {total} calls: {within / max(total, 1):.1%} within budget"
        f" + {TOLERANCE_S * 1000:.0f} ms, "
        f"{escaped} exceptions escaped, key leaked in {leaks} cases"
    )


if __name__ == "__main__":
    main()
