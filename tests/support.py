"""Test helpers: real-embedder wrappers for both frameworks, scorers with controlled behaviour,
and SciFact loading with a BM25 first stage."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from rerank_prod import Candidate, Deadline


class ConstantTimeScorer:
    """Scores by word overlap after sleeping `delay_s`; counts the texts it was asked to score."""

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
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
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


# --- SciFact with a BM25 first stage -----------------------------------------------------------

def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_scifact(root: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus id -> title + text, test query id -> text, qrels); only a query's text is read."""
    corpus = {d["_id"]: f"{d.get('title', '')} {d['text']}".strip() for d in _read_jsonl(root / "corpus.jsonl")}
    queries = {q["_id"]: q["text"] for q in _read_jsonl(root / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    lines = (root / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    for line in lines:
        query_id, doc_id, score = line.split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    return corpus, {qid: queries[qid] for qid in qrels}, qrels


def bm25_candidates(corpus: dict[str, str], queries: dict[str, str], k: int) -> dict[str, list[Candidate]]:
    """Top-k BM25 (bm25s, stemmer + stop words) per query, with BM25 scores as retriever scores."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    doc_ids = list(corpus)
    index = bm25s.BM25()
    index.index(bm25s.tokenize([corpus[d] for d in doc_ids], stopwords="en", stemmer=stemmer, show_progress=False),
                show_progress=False)
    query_ids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in query_ids], stopwords="en", stemmer=stemmer, show_progress=False)
    hits, scores = index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    return {
        query_id: [Candidate(text=corpus[doc_ids[h]], id=doc_ids[h], retrieval_score=float(s))
                   for h, s in zip(hits[row], scores[row], strict=True)]
        for row, query_id in enumerate(query_ids)
    }


def ndcg_at_10(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> float:
    """Mean NDCG@10 computed by trec_eval (pytrec_eval)."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in run}, {"ndcg_cut.10"})
    per_query = evaluator.evaluate(run)
    return sum(m["ndcg_cut_10"] for m in per_query.values()) / len(per_query)


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

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        self.scored_texts.extend(texts)
        return self.inner.score(query, texts, deadline=deadline)

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        self.scored_texts.extend(texts)
        return await self.inner.ascore(query, texts, deadline=deadline)
