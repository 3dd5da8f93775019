"""Bi-encoder re-ranking: cosine similarity between query and passage embeddings.

Much cheaper than a cross-encoder (each text is embedded on its own) and less precise: the
approximate re-ranker for tight budgets, or the fallback behind a remote one. Embeddings come from
a local sentence-transformers model or an OpenAI-compatible `/embeddings` endpoint.
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from rerank_prod.deadline import Deadline
from rerank_prod.errors import ScorerError
from rerank_prod.resilience import CircuitBreaker, MalformedResponse, RetryPolicy
from rerank_prod.scoring.base import LocalScorer
from rerank_prod.scoring.dependencies import load_sentence_transformers_model
from rerank_prod.scoring.openai_clients import openai_clients
from rerank_prod.scoring.precision import Precision, check_precision
from rerank_prod.scoring.remote import (
    RemoteScorer,
    arun_bounded,
    garbled_answers_as_malformed,
    run_bounded,
)
from rerank_prod.validation import check_int, check_text

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"
# OpenAI accepts at most 2048 inputs per embeddings request.
OPENAI_MAX_INPUTS = 2048


def cosine_scores(query_vector: np.ndarray, text_vectors: np.ndarray) -> list[float]:
    """Cosine similarity of each row of `text_vectors` with `query_vector`, as plain floats."""
    query = np.asarray(query_vector, dtype=np.float64)
    texts = np.asarray(text_vectors, dtype=np.float64).reshape(-1, query.shape[-1])
    norms = np.linalg.norm(texts, axis=1) * np.linalg.norm(query)
    if not np.all(np.isfinite(texts)) or np.any(norms == 0):
        raise ScorerError("an embedding is zero or not finite; cosine similarity is undefined")
    return cast(list[float], (texts @ query / norms).tolist())


def _optional_text(name: str, value: str | None) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
    return value


class SentenceTransformerEmbeddingScorer(LocalScorer):
    """Cosine similarity with a local sentence-transformers bi-encoder (e.g. all-MiniLM-L6-v2).

    `query_prompt` / `document_prompt` are prepended for models trained with them
    (e5: "query: " / "passage: "). `precision`: as for `CrossEncoderScorer` ("auto": bf16 where
    the CPU has bf16 matrix units); the one chosen is `self.precision`, part of `identity`.
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_EMBEDDING_MODEL,
        *,
        device: str | None = None,
        batch_size: int = 32,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        precision: Precision = "auto",
        trust_remote_code: bool = False,
    ) -> None:
        self.model_name_or_path = check_text("model_name_or_path", model_name_or_path)
        self.batch_size = check_int("batch_size", batch_size)
        self.query_prompt = _optional_text("query_prompt", query_prompt)
        self.document_prompt = _optional_text("document_prompt", document_prompt)
        self._model, self.precision = load_sentence_transformers_model(
            "SentenceTransformer",
            model_name_or_path,
            needed_by="SentenceTransformerEmbeddingScorer",
            extra="embedding",
            device=device,
            trust_remote_code=trust_remote_code,
            precision=check_precision(precision),
        )

    @property
    def name(self) -> str:
        return self.model_name_or_path

    @property
    def identity(self) -> str:
        return (
            f"embedding:{self.model_name_or_path}|max_length={self._model.max_seq_length}"
            f"|query_prompt={self.query_prompt!r}|document_prompt={self.document_prompt!r}"
            + ("" if self.precision == "fp32" else f"|precision={self.precision}")
        )

    def _encode(self, texts: Sequence[str], prompt: str | None) -> np.ndarray:
        vectors: np.ndarray = self._model.encode(
            list(texts), prompt=prompt, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return vectors

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        if not texts:
            return []
        return cosine_scores(self._encode([query], self.query_prompt)[0], self._encode(texts, self.document_prompt))

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbeddingScorer({self.model_name_or_path!r})"


class OpenAIEmbeddingScorer(RemoteScorer):
    """Cosine similarity with embeddings from an OpenAI-compatible `/embeddings` endpoint.

    Query and passages are embedded together, split into requests of at most `max_batch_size`
    inputs sent up to `max_concurrency` at a time. `dimensions` shortens text-embedding-3 vectors.
    `request_timeout_s` is the total time of one request; `max_response_bytes` (default 32 MiB,
    about 1,000 inputs of 1,536 floats as JSON) refuses larger answers unread.
    """

    def __init__(
        self,
        model: str = DEFAULT_OPENAI_EMBEDDING_MODEL,
        *,
        api_key: Any = None,
        base_url: str | None = None,
        dimensions: int | None = None,
        max_batch_size: int = OPENAI_MAX_INPUTS,
        max_concurrency: int = 4,
        request_timeout_s: float | None = 10.0,
        max_response_bytes: int = 32 * 2**20,
        retry: RetryPolicy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(request_timeout_s=request_timeout_s, retry=retry, circuit_breaker=circuit_breaker)
        self.model = check_text("model", model)
        self.dimensions = None if dimensions is None else check_int("dimensions", dimensions)
        self.max_batch_size = check_int("max_batch_size", max_batch_size)
        self.max_concurrency = check_int("max_concurrency", max_concurrency)
        self.base_url, self._client, self._aclients = openai_clients(
            "OpenAIEmbeddingScorer", api_key, base_url, request_timeout_s, max_response_bytes
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(self.max_concurrency, "rerank-prod-embed")

    @property
    def name(self) -> str:
        return self.model

    @property
    def identity(self) -> str:
        return f"openai-embedding:{self.model}@{self.base_url or 'api.openai.com'}|dimensions={self.dimensions}"

    def _score(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        tasks = [functools.partial(self._embed, batch, deadline) for batch in self._batches(query, texts)]
        return self._cosines(run_bounded(tasks, self._executor))

    async def _ascore(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        tasks = [functools.partial(self._aembed, batch, deadline) for batch in self._batches(query, texts)]
        return self._cosines(await arun_bounded(tasks, self.max_concurrency))

    def _batches(self, query: str, texts: Sequence[str]) -> list[list[str]]:
        inputs = [query, *texts]
        return [inputs[start : start + self.max_batch_size] for start in range(0, len(inputs), self.max_batch_size)]

    @staticmethod
    def _cosines(batches: list[np.ndarray]) -> list[float]:
        vectors = np.concatenate(batches)
        return cosine_scores(vectors[0], vectors[1:])

    def _request(self, inputs: list[str], timeout_s: float | None) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "input": inputs,
            "encoding_format": "float",
            "timeout": timeout_s,
        }
        if self.dimensions is not None:
            request["dimensions"] = self.dimensions
        return request

    def _vectors(self, response: Any, count: int) -> np.ndarray:
        data = getattr(response, "data", None)
        if not isinstance(data, list):
            raise MalformedResponse(f"{self.name} answered without an embeddings list")
        by_index = {getattr(item, "index", None): getattr(item, "embedding", None) for item in data}
        if len(data) != count or set(by_index) != set(range(count)):
            raise MalformedResponse(f"{self.name} returned {len(data)} embeddings, wrong indices, for {count} inputs")
        try:
            vectors = np.asarray([by_index[i] for i in range(count)], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise MalformedResponse(f"{self.name} returned embeddings that are not equal-length number lists") from exc
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise MalformedResponse(f"{self.name} returned embeddings of shape {vectors.shape}")
        return vectors

    def _embed(self, inputs: list[str], deadline: Deadline | None) -> np.ndarray:
        def attempt(timeout_s: float | None) -> np.ndarray:
            with garbled_answers_as_malformed():
                response = self._client.embeddings.create(**self._request(inputs, timeout_s))
            return self._vectors(response, len(inputs))

        return self._caller.call(attempt, deadline)

    async def _aembed(self, inputs: list[str], deadline: Deadline | None) -> np.ndarray:
        async def attempt(timeout_s: float | None) -> np.ndarray:
            with garbled_answers_as_malformed():
                response = await self._aclients.get().embeddings.create(**self._request(inputs, timeout_s))
            return self._vectors(response, len(inputs))

        return await self._caller.acall(attempt, deadline)

    def __repr__(self) -> str:
        return f"OpenAIEmbeddingScorer({self.model!r}, base_url={self.base_url!r}, dimensions={self.dimensions})"
