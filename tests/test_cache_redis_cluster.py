"""The shared caches on a real Redis Cluster: 3 primaries + 3 replicas (redis-server processes on
127.0.0.1), redis-py's sync and asyncio cluster clients, and a primary killed mid-traffic."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loopback.redis_cluster import RedisCluster
from rerank_prod import RedisCache, Reranker, ResultCache, ScoreCache, SemanticCache, SourceKind
from tests.support import ConstantTimeScorer

pytestmark = [pytest.mark.needs_redis, pytest.mark.slow]

QUERY = "Vitamin D supplementation reduces the risk of bone fractures in older adults."
PASSAGES = [f"Passage {i} on vitamin D, calcium and fracture risk in cohort {i}." for i in range(24)]
CALL_BUDGET_S = 0.75
"""The failover test's `timeout_s`: it bounds cache I/O too, so no call may outlive it while a primary
is down (socket timeouts are 0.25 s), give or take the scheduling slack of a loaded machine."""
SLACK_S = 0.25


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    started = RedisCluster(tmp_path).start()
    yield started
    started.stop()


def cluster_url(cluster: RedisCluster) -> str:
    return cluster.url.replace("redis://", "redis+cluster://")


def keys_per_primary(cluster: RedisCluster) -> dict[int, int]:
    roles = cluster.roles()
    return {
        node.port: int(cluster.cli(node, "dbsize").strip())
        for node in cluster.live_nodes()
        if roles.get(node.port) == "master"
    }


async def rerank(reranker: Reranker, mode: str, query: str, passages: list[str]):
    return reranker.rerank(query, passages) if mode == "sync" else await reranker.arerank(query, passages)


async def warm_up(mode: str, *rerankers: Reranker) -> None:
    """A client's first operation on an event loop loads the cluster's slot map and command table;
    on a loaded machine that can outlast the 0.1 s operation bound, which is "no cache" for that
    call and opens the cache breaker for its cooldown. Pay it before the checks."""
    for reranker in rerankers:
        await rerank(reranker, mode, "warm-up", PASSAGES[:1])
    if any(sum(layer["errors"] for layer in r.metrics.snapshot()["cache"].values()) for r in rerankers):
        await asyncio.sleep(2.2)


@pytest.mark.needs_models
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_replicas_share_hits_and_keys_spread_over_every_primary(
    cluster: RedisCluster, cross_encoder, mode: str
) -> None:
    def replica() -> Reranker:
        backend = RedisCache(cluster_url(cluster))
        return Reranker(cross_encoder, result_cache=ResultCache(backend), score_cache=ScoreCache(backend))

    first, second = replica(), replica()
    await warm_up(mode, first, second)
    scored = await rerank(first, mode, QUERY, PASSAGES)
    shared = await rerank(second, mode, QUERY, PASSAGES)
    assert scored.source.kind is SourceKind.MODEL and str(shared.source) == "cache"
    assert [(i.original_rank, i.relevance_score) for i in shared] == [
        (i.original_rank, i.relevance_score) for i in scored
    ]
    grown = await rerank(second, mode, QUERY, [*PASSAGES, "Vitamin D deficiency is common in care homes."])
    assert sorted(i.metadata()["rerank_source"] for i in grown) == ["cache:score"] * len(PASSAGES) + ["model"]
    # 24 pair keys + 2 result keys, no hash tags: every primary holds some (a hot query is no hot slot).
    spread = keys_per_primary(cluster)
    assert len(spread) == 3 and sum(spread.values()) == len(PASSAGES) + 1 + 2 + 2  # + the warm-up's 2
    assert min(spread.values()) >= 3, spread


@pytest.mark.needs_models
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_semantic_cache_log_is_shared_through_the_cluster(
    cluster: RedisCluster, cross_encoder, embedder_path: str, mode: str
) -> None:
    def replica() -> Reranker:
        backend = RedisCache(cluster_url(cluster))
        semantic = SemanticCache(backend, embedder_path, sync_interval_s=0)
        return Reranker(cross_encoder, score_cache=ScoreCache(backend), semantic_cache=semantic)

    writer, reader = replica(), replica()
    await warm_up(mode, writer, reader)
    await rerank(writer, mode, QUERY, PASSAGES[:6])
    paraphrase = "Does vitamin D supplementation lower the risk of bone fractures in older adults?"
    result = await rerank(reader, mode, paraphrase, PASSAGES[:6])
    assert {i.metadata()["rerank_source"] for i in result} == {"cache:semantic"}
    assert reader.metrics.snapshot()["cache"]["semantic"]["errors"] == 0


@dataclass(frozen=True)
class Call:
    at_s: float  # since the primary was killed (negative: before)
    latency_s: float
    candidates: int
    hits: int
    errors: int
    source: str

    @property
    def state(self) -> str:
        if self.errors:
            return "degraded: cache errors, model scored the misses"
        return "all hits" if self.hits == self.candidates else "partial hits"


class Traffic:
    """Re-rank calls in a loop on a thread (sync) or an event loop (async), one record per call."""

    def __init__(self, reranker: Reranker, mode: str) -> None:
        self.reranker = reranker
        self.mode = mode
        self.calls: list[Call] = []
        self.killed_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _record(self, started: float, result) -> None:
        cache = self.reranker.metrics.snapshot()["cache"]["score"]
        hits = sum(item.metadata()["rerank_source"] == "cache:score" for item in result)
        self.calls.append(
            Call(started, time.monotonic() - started, len(result), hits, cache["errors"], str(result.source))
        )

    def _run(self) -> None:
        if self.mode == "async":
            asyncio.run(self._arun())
            return
        while not self._stop.is_set() and len(self.calls) < 5000:
            started = time.monotonic()
            self._record(started, self.reranker.rerank(QUERY, PASSAGES))
            time.sleep(0.01)

    async def _arun(self) -> None:
        while not self._stop.is_set() and len(self.calls) < 5000:
            started = time.monotonic()
            self._record(started, await self.reranker.arerank(QUERY, PASSAGES))
            await asyncio.sleep(0.01)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def per_call_errors(self) -> list[Call]:
        """Times relative to the kill, and per-call errors (the metrics count them cumulatively)."""
        calls, previous, origin = [], 0, self.killed_at or time.monotonic()
        for call in list(self.calls):
            at_s = call.at_s - origin
            calls.append(Call(at_s, call.latency_s, call.candidates, call.hits, call.errors - previous, call.source))
            previous = call.errors
        return calls

    def wait_for(self, predicate, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.per_call_errors()):
                return
            time.sleep(0.05)
        raise AssertionError(f"traffic did not reach the expected state within {timeout_s} s")


def timeline(calls: list[Call], events: dict[str, float]) -> str:
    """Consecutive calls in the same state as one line, with the cluster's events in between."""
    lines, pending = [], sorted(events.items(), key=lambda item: item[1])
    groups: list[list[Call]] = []
    for call in calls:
        if groups and groups[-1][-1].state == call.state:
            groups[-1].append(call)
        else:
            groups.append([call])
    for group in groups:
        while pending and pending[0][1] <= group[0].at_s:
            name, at_s = pending.pop(0)
            lines.append(f"  t={at_s:+7.2f} s  ** {name}")
        worst = max(call.latency_s for call in group) * 1000
        lines.append(
            f"  t={group[0].at_s:+7.2f} .. {group[-1].at_s:+7.2f} s  {len(group):4d} calls  {group[0].state:48s} "
            f"max latency {worst:6.1f} ms"
        )
    lines.extend(f"  t={at_s:+7.2f} s  ** {name}" for name, at_s in pending)
    return "\n".join(lines)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_primary_failover_degrades_to_no_cache_then_recovers(cluster: RedisCluster, mode: str) -> None:
    """Kill (SIGKILL) the primary of a third of the slots mid-traffic: calls never fail and stay
    within budget, the keys on the dead primary read as misses (scored by the model) until its
    replica is promoted, then every candidate is a hit again: the replica had the data."""
    reranker = Reranker(
        ConstantTimeScorer(), score_cache=ScoreCache(RedisCache(cluster_url(cluster))), timeout_s=CALL_BUDGET_S
    )
    reranker.rerank(QUERY, PASSAGES)  # fill the cache
    time.sleep(0.2)  # let the replicas receive the writes (replication is asynchronous)
    traffic = Traffic(reranker, mode).start()
    try:
        traffic.wait_for(lambda calls: sum(c.state == "all hits" for c in calls) >= 5, timeout_s=10)
        victim = cluster.node_for_port(max(keys_per_primary(cluster).items(), key=lambda item: item[1])[0])
        killed = time.monotonic()
        cluster.kill(victim)
        traffic.killed_at = killed
        promoted = cluster.wait_for_failover(victim.port, timeout_s=30)
        promoted_at = time.monotonic() - killed
        traffic.wait_for(
            lambda calls: len(calls) >= 10 and all(c.state == "all hits" for c in calls[-10:]), timeout_s=15
        )
    finally:
        traffic.stop()
    calls = traffic.per_call_errors()
    print(
        f"\nRedis Cluster failover ({mode}): primary 127.0.0.1:{victim.port} killed at t=0, "
        f"replica 127.0.0.1:{promoted} promoted at t=+{promoted_at:.2f} s\n"
        + timeline(calls, {"primary SIGKILLed": 0.0, "replica promoted (cluster_state:ok)": promoted_at})
    )
    short = [call for call in calls if call.candidates != len(PASSAGES)]
    assert not short, short  # no call failed or lost candidates
    assert max(call.latency_s for call in calls) < CALL_BUDGET_S + SLACK_S
    degraded = [call for call in calls if call.errors]
    # Killing the primary shows up as cache errors (before the kill, a loaded machine can make an
    # operation miss its 0.1 s bound now and then: that is a cache timeout, also "no cache").
    assert any(call.at_s >= 0 for call in degraded), "killing a primary must show up as cache errors"
    assert all(call.source == "model" for call in degraded)  # the misses went to the model
    recovered = [call for call in calls if call.at_s > degraded[-1].at_s]
    assert recovered and all(call.state == "all hits" for call in recovered[-10:])


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_cluster_down_at_start_up_is_no_cache_until_it_comes_up(tmp_path: Path, mode: str) -> None:
    cluster = RedisCluster(tmp_path)  # ports chosen, nothing listening yet
    reranker = Reranker(ConstantTimeScorer(), score_cache=ScoreCache(RedisCache(cluster_url(cluster))))
    try:
        down = await rerank(reranker, mode, QUERY, PASSAGES)
        assert {item.metadata()["rerank_source"] for item in down} == {"model"}
        assert reranker.metrics.snapshot()["cache"]["score"]["errors"] >= 1
        cluster.start()
        # Connects now and fills the cache; a first operation that outlasts its bound opens the
        # cache's breaker for its cooldown (2 s), so allow a few seconds.
        deadline = time.monotonic() + 15
        sources: set[str] = set()
        while sources != {"cache:score"} and time.monotonic() < deadline:
            up = await rerank(reranker, mode, QUERY, PASSAGES)
            sources = {item.metadata()["rerank_source"] for item in up}
            await asyncio.sleep(0.2)
        assert sources == {"cache:score"}
    finally:
        cluster.stop()
