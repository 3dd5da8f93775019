"""The re-rank as its own child run in LangChain tracing (callback handlers, `collect_runs`,
`astream_events`, LangSmith), so a trace shows where the time went: model, candidates in and out,
source and latency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForChainRun,
    CallbackManager,
    CallbackManagerForChainRun,
    Callbacks,
)
from langchain_core.documents import Document

from rerank_prod import RerankResult

RUN_NAME = "RerankProdCompressor"


class RerankRun:
    """What the traced step reports when it ends; `finish` is called with the core's result."""

    def __init__(self) -> None:
        self.outputs: dict[str, Any] | None = None

    def finish(self, result: RerankResult, documents: Sequence[Document]) -> None:
        self.outputs = {
            "documents": list(documents),
            "candidates_out": len(documents),
            "rerank_source": str(result.source),
            "latency_s": result.latency_s,
        }


def _start_details(model: str, query: str, candidates_in: int) -> tuple[dict[str, Any], dict[str, Any]]:
    inputs = {"query": query, "candidates_in": candidates_in}
    metadata = {"rerank_model": model, "candidates_in": candidates_in}
    return inputs, metadata


@contextmanager
def traced(callbacks: Callbacks, model: str, query: str, candidates_in: int) -> Iterator[RerankRun]:
    """A child run of the caller's run (or of whatever tracer is active) around one re-rank."""
    inputs, metadata = _start_details(model, query, candidates_in)
    manager = CallbackManager.configure(inheritable_callbacks=callbacks, local_metadata=metadata)
    run_manager: CallbackManagerForChainRun = manager.on_chain_start(None, inputs, name=RUN_NAME)
    run = RerankRun()
    try:
        yield run
    except BaseException as failure:
        run_manager.on_chain_error(failure)
        raise
    run_manager.on_chain_end(run.outputs or {})


@asynccontextmanager
async def atraced(callbacks: Callbacks, model: str, query: str, candidates_in: int) -> AsyncIterator[RerankRun]:
    """`traced` for async callers: handlers are awaited, never run on a thread."""
    inputs, metadata = _start_details(model, query, candidates_in)
    manager = AsyncCallbackManager.configure(inheritable_callbacks=callbacks, local_metadata=metadata)
    run_manager: AsyncCallbackManagerForChainRun = await manager.on_chain_start(None, inputs, name=RUN_NAME)
    run = RerankRun()
    try:
        yield run
    except BaseException as failure:
        await run_manager.on_chain_error(failure)
        raise
    await run_manager.on_chain_end(run.outputs or {})
