"""Cohere Rerank v2 through the official SDK (`ClientV2` / `AsyncClientV2`).

Also reaches Cohere-compatible self-hosted servers (vLLM serves `/v2/rerank`) via `base_url`.
The SDK's own retries are switched off so that ours, which respect the call's budget, are the only
ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from rerank_prod.deadline import Deadline
from rerank_prod.resilience import CircuitBreaker, MalformedResponse, RetryPolicy
from rerank_prod.scoring.bounded_http import DEFAULT_MAX_RESPONSE_BYTES, bounded_transports, check_max_response_bytes
from rerank_prod.scoring.dependencies import require_extra
from rerank_prod.scoring.remote import (
    PerEventLoop,
    RemoteScorer,
    check_base_url,
    garbled_answers_as_malformed,
    resolve_api_key,
    scores_by_index,
)
from rerank_prod.validation import check_int, check_text

DEFAULT_COHERE_MODEL = "rerank-v3.5"
COHERE_KEY_ENV_VARS = ("CO_API_KEY", "COHERE_API_KEY")
# Self-hosted Cohere-compatible servers often need no key; the SDK insists on one.
_NO_KEY = "no-key"


class CohereScorer(RemoteScorer):
    """Scores with a Cohere Rerank model; `relevance_score` in [0, 1].

    - `api_key`: str or pydantic `SecretStr`; default `CO_API_KEY`, then `COHERE_API_KEY`. Optional
      only with a `base_url` (self-hosted servers without auth).
    - `top_n`: ask Cohere for the best `top_n` only (less payload). Candidates it does not return
      score 0.0, the bottom of its scale, so they follow every returned one in retriever order;
      such scores depend on the whole candidate list, so they are not cached per pair.
    - `max_tokens_per_doc`: truncation length on Cohere's side (Cohere's default is 4096).
    - `request_timeout_s`: total time of one request, capped by what is left of the call's budget;
      `max_response_bytes` (default 4 MiB): a larger answer is refused unread.
    """

    def __init__(
        self,
        model: str = DEFAULT_COHERE_MODEL,
        *,
        api_key: Any = None,
        base_url: str | None = None,
        top_n: int | None = None,
        max_tokens_per_doc: int | None = None,
        request_timeout_s: float | None = 10.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
    ) -> None:
        require_extra("cohere", "CohereScorer", "cohere")
        require_extra("tenacity", "CohereScorer", "cohere")
        import cohere
        import httpx

        super().__init__(request_timeout_s=request_timeout_s, retry=retry, circuit_breaker=circuit_breaker)
        self.model = check_text("model", model)
        self.base_url = None if base_url is None else check_base_url(base_url)
        self.top_n = None if top_n is None else check_int("top_n", top_n)
        self.max_tokens_per_doc = (
            None if max_tokens_per_doc is None else check_int("max_tokens_per_doc", max_tokens_per_doc)
        )
        key = resolve_api_key(api_key, COHERE_KEY_ENV_VARS)
        if key is None and self.base_url is None:
            raise ValueError("CohereScorer needs an API key: pass api_key=SecretStr(...) or set CO_API_KEY")
        # A callable key keeps the plain string out of the client's attributes.
        settings: dict[str, Any] = {
            "api_key": key.reveal if key is not None else (lambda: _NO_KEY),
            "timeout": request_timeout_s,
            "max_retries": 0,
            "client_name": "rerank-prod",
        }
        if self.base_url is not None:
            settings["base_url"] = self.base_url
        self.max_response_bytes = check_max_response_bytes(max_response_bytes)
        transport, async_transport = bounded_transports(httpx)
        self._client = cohere.ClientV2(
            httpx_client=httpx.Client(transport=transport(self.max_response_bytes), timeout=request_timeout_s),
            **settings,
        )
        self._aclients = PerEventLoop(
            lambda: cohere.AsyncClientV2(
                httpx_client=httpx.AsyncClient(
                    transport=async_transport(self.max_response_bytes), timeout=request_timeout_s
                ),
                **settings,
            ),
            lambda client: cast(Any, client).__aexit__(None, None, None),  # the SDK's public way to close it
        )
        self.independent_scores = self.top_n is None

    @property
    def name(self) -> str:
        return self.model

    @property
    def identity(self) -> str:
        return (
            f"cohere:{self.model}@{self.base_url or 'api.cohere.com'}"
            f"|top_n={self.top_n}|max_tokens_per_doc={self.max_tokens_per_doc}"
        )

    def _score(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        def attempt(timeout_s: float | None) -> list[float]:
            with garbled_answers_as_malformed():
                response = self._client.v2.rerank(**self._request(query, texts, timeout_s))
            return self._scores_from(response, len(texts))

        return self._caller.call(attempt, deadline)

    async def _ascore(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        async def attempt(timeout_s: float | None) -> list[float]:
            with garbled_answers_as_malformed():
                response = await self._aclients.get().v2.rerank(**self._request(query, texts, timeout_s))
            return self._scores_from(response, len(texts))

        return await self._caller.acall(attempt, deadline)

    def _request(self, query: str, texts: Sequence[str], timeout_s: float | None) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "query": query,
            "documents": list(texts),
            "request_options": {"max_retries": 0},
        }
        if timeout_s is not None:
            # The name every cohere 5.x-7.x understands (newer ones also read "timeout").
            request["request_options"]["timeout_in_seconds"] = timeout_s
        if self.top_n is not None:
            request["top_n"] = min(self.top_n, len(texts))
        if self.max_tokens_per_doc is not None:
            request["max_tokens_per_doc"] = self.max_tokens_per_doc
        return request

    def _scores_from(self, response: Any, count: int) -> list[float]:
        results = getattr(response, "results", None)
        if not isinstance(results, list):
            raise MalformedResponse(f"{self.name} answered without a results list")
        pairs = [(getattr(item, "index", None), getattr(item, "relevance_score", None)) for item in results]
        scores = scores_by_index(pairs, count, self.name, missing=0.0 if self.top_n is not None else None)
        if any(not 0.0 <= score <= 1.0 for score in scores):
            raise MalformedResponse(f"{self.name} returned relevance scores outside [0, 1]")
        return scores

    def __repr__(self) -> str:
        return f"CohereScorer({self.model!r}, base_url={self.base_url!r}, top_n={self.top_n})"
