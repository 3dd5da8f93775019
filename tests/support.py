"""Test helpers: real-embedder wrappers for both frameworks and scorers with controlled behaviour."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from functools import lru_cache

from rerank_prod import Deadline


class ConstantTimeScorer:
    """Scores by word overlap after sleeping `delay_s`; counts the texts it was asked to score."""

    independent_scores = True
    circuit_breaker = None

    def __init__(self, delay_s: float = 0.0, name: str = "overlap") -> None:
        self.delay_s = delay_s
        self._name = name
        self.scored_texts: list[str] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def identity(self) -> str:
        return f"test-overlap:{self._name}"

    def _overlap(self, query: str, texts: Sequence[str]) -> list[float]:
        with self._lock:
            self.scored_texts.extend(texts)
        words = set(query.lower().split())
        return [float(len(words & set(text.lower().split()))) for text in texts]

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        time.sleep(self.delay_s)
        return self._overlap(query, texts)

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        await asyncio.sleep(self.delay_s)
        return self._overlap(query, texts)


class FailingScorer(ConstantTimeScorer):
    """A backend that is down."""

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        raise ConnectionError("backend at 127.0.0.1:9 refused the connection")

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        raise ConnectionError("backend at 127.0.0.1:9 refused the connection")


# --- real embedders wrapped for each framework --------------------------------------------------


@lru_cache(maxsize=2)
def sentence_transformer(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


def langchain_embeddings(path: str):
    from langchain_core.embeddings import Embeddings

    class SentenceTransformerEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return sentence_transformer(path).encode(texts, normalize_embeddings=True).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    return SentenceTransformerEmbeddings()


def langchain_scored_retriever(path: str, texts: Sequence[str], k: int):
    """A vector-store retriever that keeps each hit's similarity in metadata['score'],
    the usual way LangChain users carry retriever scores."""
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(langchain_embeddings(path))
    store.add_documents([Document(page_content=text, id=f"doc-{i}") for i, text in enumerate(texts)])

    class ScoredRetriever(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            hits = store.similarity_search_with_score(query, k=k)
            return [doc.model_copy(update={"metadata": {**doc.metadata, "score": score}}) for doc, score in hits]

    return ScoredRetriever()


def llamaindex_embedding(path: str):
    from llama_index.core.base.embeddings.base import BaseEmbedding

    class SentenceTransformerEmbedding(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return sentence_transformer(path).encode([text], normalize_embeddings=True)[0].tolist()

    return SentenceTransformerEmbedding(model_name=path)


class CountingScorer:
    """Wraps a real scorer and records every text it is asked to score."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.scored_texts: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def independent_scores(self) -> bool:
        return self.inner.independent_scores

    @property
    def circuit_breaker(self):
        return self.inner.circuit_breaker

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        self.scored_texts.extend(texts)
        return self.inner.score(query, texts, deadline=deadline)

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        self.scored_texts.extend(texts)
        return await self.inner.ascore(query, texts, deadline=deadline)


class BrokenRemoteScorer(FailingScorer):
    """A remote backend that is down, behind a real circuit breaker (opens after `failures`)."""

    def __init__(self, failures: int = 2, name: str = "remote") -> None:
        super().__init__(name=name)
        from rerank_prod import CircuitBreaker

        self.circuit_breaker = CircuitBreaker(failure_threshold=failures, cooldown_s=60)

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        with self.circuit_breaker.guard(deadline):
            return super().score(query, texts, deadline=deadline)

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        with self.circuit_breaker.guard(deadline):
            return await super().ascore(query, texts, deadline=deadline)
