"""Replicas as separate OS processes sharing one real redis-server: hits cross process boundaries,
a model change misses for every replica that runs it, and a replica SIGKILLed mid-traffic costs
the others nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopback.redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.needs_models]

REPO_ROOT = Path(__file__).resolve().parent.parent
QUERY = "Vitamin D supplementation reduces the risk of bone fractures in older adults."
PASSAGES = [
    "Daily vitamin D and calcium supplements lowered hip fracture rates among elderly women.",
    "The reduction in fracture risk was not significant in community-dwelling older men.",
    "Gut microbiota composition changes with a high-fat diet in mice.",
    "Bone mineral density rose after two years of vitamin D3 at 800 IU per day.",
]
EXTRA = "Vitamin D deficiency is common in nursing-home residents."
TRAFFIC = [{"query": f"{QUERY} Cohort {number}.", "passages": PASSAGES} for number in range(12)]


class Replica:
    """`python -m tests.replica_worker` in its own process, spoken to over JSON lines."""

    def __init__(self, url: str, model: str, activation: str = "identity") -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.replica_worker", url, model, activation],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        self.identity: str | None = None

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"replica {self.process.pid} exited with {self.process.poll()}"
        return json.loads(line)

    def wait_ready(self) -> Replica:
        self.identity = self.read()["ready"]
        return self

    def send(self, request: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def rerank(self, query: str, passages: list[str]) -> dict[str, Any]:
        self.send({"query": query, "passages": passages})
        return self.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def replicas(redis_server: RedisServer, cross_encoder_path: str) -> Iterator[Any]:
    started: list[Replica] = []

    def start(count: int, activation: str = "identity") -> list[Replica]:
        new = [Replica(redis_server.url, cross_encoder_path, activation) for _ in range(count)]
        started.extend(new)
        return [replica.wait_ready() for replica in new]  # they load the model in parallel

    yield start
    for replica in started:
        replica.stop()


def test_hits_cross_processes_and_a_model_change_misses_for_all(replicas) -> None:
    first, second, third = replicas(3)
    assert len({first.process.pid, second.process.pid, third.process.pid}) == 3
    scored = first.rerank(QUERY, PASSAGES)
    assert scored["call"] == "model"
    shared = second.rerank(QUERY, PASSAGES)  # another process: the whole ranking from Redis
    assert shared["call"] == "cache" and shared["scores"] == scored["scores"]
    grown = third.rerank(QUERY, [*PASSAGES, EXTRA])  # only the new pair goes to the model
    assert grown["sources"] == ["cache:score"] * len(PASSAGES) + ["model"]
    assert grown["scores"][: len(PASSAGES)] == scored["scores"]

    # Deploy a different scorer (sigmoid instead of logits: another identity) on two new replicas.
    upgraded, upgraded_too = replicas(2, activation="sigmoid")
    assert upgraded.identity != first.identity
    fresh = upgraded.rerank(QUERY, [*PASSAGES, EXTRA])
    assert fresh["call"] == "model" and set(fresh["sources"]) == {"model"}  # nothing stale served
    assert fresh["scores"] != grown["scores"]
    assert upgraded_too.rerank(QUERY, [*PASSAGES, EXTRA])["call"] == "cache"  # the new model's entries are shared
    assert first.rerank(QUERY, PASSAGES)["call"] == "cache"  # old replicas keep their own namespace
    assert all(replica.rerank(QUERY, PASSAGES)["cache_errors"] == 0 for replica in (first, upgraded))


def test_a_replica_killed_mid_traffic_loses_nothing_for_the_others(replicas) -> None:
    victim, survivor = replicas(2)
    victim.send({"traffic": TRAFFIC, "pause_s": 0.05})
    survivor.send({"traffic": TRAFFIC[::-1], "pause_s": 0.05})  # running at the same time
    completed = [victim.read() for _ in range(3)]
    os.kill(victim.process.pid, signal.SIGKILL)  # mid-traffic, no shutdown of any kind
    victim.process.wait(timeout=30)
    assert victim.process.returncode == -signal.SIGKILL
    assert all(call["call"] in ("model", "cache") for call in completed)

    deadline = time.monotonic() + 120
    answered = []
    while len(answered) < len(TRAFFIC) and time.monotonic() < deadline:
        answered.append(survivor.read())
    assert survivor.read() == {"done": len(TRAFFIC)}
    assert all(len(call["sources"]) == len(PASSAGES) for call in answered)  # every call answered in full
    assert answered[-1]["cache_errors"] == 0
    # What the victim finished before it died is served to the survivor from Redis.
    for call in TRAFFIC[:3]:
        assert survivor.rerank(call["query"], call["passages"])["call"] == "cache"
    # And the whole traffic is cached now for any replica, including one started after the kill.
    (late,) = replicas(1)
    assert all(late.rerank(call["query"], call["passages"])["call"] == "cache" for call in TRAFFIC)
