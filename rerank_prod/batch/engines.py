"""Where the batches run: in this process, or on a Ray cluster with Ray Data.

Both take the requests cut into batches and yield result tables as they complete (Ray: in
completion order). On Ray, every batch is its own block, so the actor pool spreads them over
`actors` actors that each hold one model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from rerank_prod.batch.worker import RerankWorker
from rerank_prod.evaluation.configs import Spec
from rerank_prod.validation import check_int, check_number

ENGINES = ("ray", "local")


def connect_ray(address: str | None = None) -> None:
    """Join the Ray cluster at `address` ("auto": the one `ray start` runs here), or start a local
    one with the machine's CPUs; nothing when this process is connected already."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("the Ray engine needs Ray Data: pip install 'rerank-prod[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)


def batches(requests: pa.Table, batch_size: int) -> list[pa.Table]:
    """Zero-copy slices of at most `batch_size` requests: the unit of work and of output."""
    check_int("batch_size", batch_size)
    return [requests.slice(start, batch_size) for start in range(0, requests.num_rows, batch_size)]


def local_results(requests: pa.Table, spec: Spec, *, batch_size: int) -> Iterator[pa.Table]:
    """One worker in this process: the single-process reference. Settings are checked at once,
    the model loads when the first batch is asked for."""
    parts = batches(requests, batch_size)

    def run() -> Iterator[pa.Table]:
        if parts:
            worker = RerankWorker(spec)
            yield from (worker(part) for part in parts)

    return run()


def ray_results(
    requests: pa.Table,
    spec: Spec,
    *,
    batch_size: int,
    actors: int,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    progress: bool = False,
) -> Iterator[pa.Table]:
    """Ray Data: `map_batches` over an actor pool of `actors` `RerankWorker`s, `cpus_per_actor`
    CPUs each (Ray caps each actor's torch threads at that) and `gpus_per_actor` GPUs (give the
    scorer `device="cuda"` in the configuration). Uses the Ray cluster this process is connected
    to, or starts a local one with the machine's CPUs."""
    check_int("actors", actors)
    check_number("cpus_per_actor", cpus_per_actor)
    check_number("gpus_per_actor", gpus_per_actor, allow_zero=True)
    parts = batches(requests, batch_size)
    if not parts:
        return iter(())
    try:
        import ray.data
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("the Ray engine needs Ray Data: pip install 'rerank-prod[ray]'") from exc
    context: Any = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    dataset = ray.data.from_arrow(parts).map_batches(
        RerankWorker,
        fn_constructor_kwargs={"spec": spec},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
        batch_size=batch_size,
        batch_format="pyarrow",
    )
    return iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
