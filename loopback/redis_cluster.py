"""A real Redis Cluster on 127.0.0.1: `primaries` redis-server processes in cluster mode, each with
`replicas_per_primary` replicas, joined by `redis-cli --cluster create`. A caller can kill a primary
and watch its replica take over (`wait_for_failover`)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from loopback.redis_server import RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli")


class RedisCluster:
    """`node_timeout_ms` is redis' cluster-node-timeout: how long a primary may be silent before its
    replicas start an election (a failover then takes about twice that). `require_full_coverage`:
    redis' default (yes) refuses every key while any slot is uncovered; a cache wants "no", so the
    live primaries keep serving their slots while a dead one's replica takes over."""

    def __init__(
        self,
        workdir: Path,
        *,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        node_timeout_ms: int = 1000,
        require_full_coverage: bool = False,
    ) -> None:
        if REDIS_CLI is None:
            raise FileNotFoundError("redis-cli is not installed (Debian: apt-get install redis-tools)")
        self.replicas_per_primary = replicas_per_primary
        self.nodes: list[RedisServer] = []
        for number in range(primaries * (1 + replicas_per_primary)):
            node_dir = workdir / f"node{number}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                RedisServer(
                    node_dir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    "--cluster-require-full-coverage",
                    "yes" if require_full_coverage else "no",
                    # The bus port would be port + 10000, which may not exist for a high free port.
                    "--cluster-port",
                    str(free_port()),
                    # A replica that never finished its first sync cannot be promoted: sync at once.
                    "--repl-diskless-sync-delay",
                    "0",
                    "--logfile",
                    str(node_dir / "redis.log"),
                )
            )

    @property
    def url(self) -> str:
        """A seed node; the client discovers the others."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                str(REDIS_CLI),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas_per_primary),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_until_ok()
        return self

    def cli(self, node: RedisServer, *command: str) -> str:
        done = subprocess.run(
            [str(REDIS_CLI), "-p", str(node.port), *command], capture_output=True, text=True, timeout=5, check=False
        )
        return done.stdout

    def wait_until_ok(self, timeout_s: float = 30.0) -> None:
        """Every live node reports cluster_state:ok and knows all 16384 slots, and every live replica
        has finished syncing with its primary."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            infos = [self.cli(node, "cluster", "info") for node in self.live_nodes()]
            replication = [self.cli(node, "info", "replication") for node in self.live_nodes()]
            if all("cluster_state:ok" in info and "cluster_slots_assigned:16384" in info for info in infos) and all(
                "role:master" in info or "master_link_status:up" in info for info in replication
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout_s} s")

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def node_for_port(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def roles(self) -> dict[int, str]:
        """port -> "master" / "slave" as a live node sees the cluster (dead nodes show "fail")."""
        roles = {}
        for line in self.cli(self.live_nodes()[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            flags = fields[2].split(",")
            roles[port] = "fail" if "fail" in flags else ("master" if "master" in flags else "slave")
        return roles

    def primary_of(self, key: str) -> RedisServer:
        slot = int(self.cli(self.live_nodes()[0], "cluster", "keyslot", key).strip())
        for line in self.cli(self.live_nodes()[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return self.node_for_port(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        raise RuntimeError(f"no live primary serves slot {slot}")

    def kill(self, node: RedisServer) -> None:
        """SIGKILL, no goodbye to the cluster: what a crashed machine looks like."""
        node.stop()

    def wait_for_failover(self, dead_port: int, timeout_s: float = 30.0) -> int:
        """Waits until a replica of the dead primary is a primary and the cluster is ok again;
        returns that replica's port."""
        before = {port for port, role in self.roles().items() if role == "master"}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            promoted = {port for port, role in self.roles().items() if role == "master"} - before - {dead_port}
            if promoted:
                self.wait_until_ok(max(0.1, deadline - time.monotonic()))
                return promoted.pop()
            time.sleep(0.05)
        raise RuntimeError(f"no replica of 127.0.0.1:{dead_port} was promoted within {timeout_s} s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
