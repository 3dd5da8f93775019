"""Self-hosted rerank servers over HTTP: text-embeddings-inference and Infinity/vLLM-style `/rerank`.

This is how scoring scales out to a GPU fleet, so the client side is built for it: one pooled
`httpx.Client` and `httpx.AsyncClient` per scorer (keep-alive connections are reused across calls),
a timeout on every request, large candidate sets split into batches the server accepts and sent
concurrently, each batch retried on its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from rerank_prod.deadline import Deadline
from rerank_prod.resilience import BackendHTTPError, CircuitBreaker, MalformedResponse, RetryPolicy, parse_retry_after
from rerank_prod.scoring.bounded_http import DEFAULT_MAX_RESPONSE_BYTES, bounded_transports, check_max_response_bytes
from rerank_prod.scoring.dependencies import require_extra
from rerank_prod.scoring.remote import (
    PerEventLoop,
    RemoteScorer,
    arun_bounded,
    check_base_url,
    resolve_api_key,
    run_bounded,
    scores_by_index,
)
from rerank_prod.validation import check_int, check_text

if TYPE_CHECKING:
    import httpx
    from typing_extensions import Unpack

TEI_MAX_CLIENT_BATCH_SIZE = 32
# Answers larger than this are parsed off the event loop.
_PARSE_INLINE_BYTES = 256 * 1024
# TEI's 422 when a request holds more texts than its --max-client-batch-size.
_TEI_BATCH_LIMIT = re.compile(r"maximum allowed batch size (\d+)")


class BatchTooLarge(BackendHTTPError):
    """The server rejected a batch as too large and told us its limit."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message, status_code=422)
        self.limit = limit


def _batches(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[start : start + size] for start in range(0, len(texts), size)]


class ServerOptions(TypedDict, total=False):
    """Settings every rerank-server scorer takes.

    - `model`: the served model's name; names the scorer (cache keys, events) and is sent to
      servers that host several. `api_key`: sent as a bearer token (str or `SecretStr`).
    - `max_concurrency` (default 4): batches in flight at once, and pooled connections kept alive.
    - `request_timeout_s` (default 10): total time of one request (however slowly the server
      sends), capped by what is left of the call's budget.
    - `max_response_bytes` (default 4 MiB): a larger answer is refused unread (`ResponseTooLarge`).
    - `retry` (default `RetryPolicy()`), `circuit_breaker` (default: a fresh `CircuitBreaker()`).
    """

    model: str | None
    api_key: Any
    max_concurrency: int
    request_timeout_s: float | None
    max_response_bytes: int
    retry: RetryPolicy | None
    circuit_breaker: CircuitBreaker | None


class _HTTPRerankScorer(RemoteScorer):
    """One rerank server behind `base_url`; subclasses say what its `/rerank` speaks."""

    _endpoint = "/rerank"

    def __init__(
        self,
        base_url: str,
        *,
        max_batch_size: int,
        model: str | None = None,
        api_key: Any = None,
        max_concurrency: int = 4,
        request_timeout_s: float | None = 10.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
    ) -> None:
        require_extra("httpx", type(self).__name__, "http")
        require_extra("tenacity", type(self).__name__, "http")
        import httpx

        super().__init__(request_timeout_s=request_timeout_s, retry=retry, circuit_breaker=circuit_breaker)
        self.base_url = check_base_url(base_url)
        self.model = None if model is None else check_text("model", model)
        self.max_batch_size = check_int("max_batch_size", max_batch_size)
        self.max_concurrency = check_int("max_concurrency", max_concurrency)
        self._batch_limit = self.max_batch_size
        key = resolve_api_key(api_key, ())
        headers = {"Authorization": f"Bearer {key.reveal()}"} if key is not None else {}
        # Enough pooled connections for every concurrent batch, kept alive between calls.
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        self.max_response_bytes = check_max_response_bytes(max_response_bytes)
        transport, async_transport = bounded_transports(httpx)
        settings: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": headers,
            "timeout": request_timeout_s,
            "follow_redirects": False,
        }
        self._client = httpx.Client(transport=transport(self.max_response_bytes, limits=limits), **settings)
        self._aclients = PerEventLoop(
            lambda: httpx.AsyncClient(transport=async_transport(self.max_response_bytes, limits=limits), **settings),
            lambda client: client.aclose(),
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(self.max_concurrency, "rerank-prod-http")

    # --- what differs between servers ------------------------------------------------------------

    def _payload(self, query: str, texts: Sequence[str]) -> dict[str, Any]:
        raise NotImplementedError

    def _pairs(self, body: Any) -> list[tuple[object, object]]:
        raise NotImplementedError

    # --- the shared client side --------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.model or self.base_url

    def _score(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        while True:
            batches = _batches(texts, self._batch_limit)
            tasks = [functools.partial(self._score_batch, query, batch, deadline) for batch in batches]
            try:
                return [score for batch in run_bounded(tasks, self._executor) for score in batch]
            except BatchTooLarge as rejected:
                self._lower_batch_limit(rejected)

    async def _ascore(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        while True:
            batches = _batches(texts, self._batch_limit)
            tasks = [functools.partial(self._ascore_batch, query, batch, deadline) for batch in batches]
            try:
                return [score for batch in await arun_bounded(tasks, self.max_concurrency) for score in batch]
            except BatchTooLarge as rejected:
                self._lower_batch_limit(rejected)

    def _lower_batch_limit(self, rejected: BatchTooLarge) -> None:
        """Learn a server cap below `max_batch_size` once, instead of failing every call."""
        if rejected.limit >= self._batch_limit or rejected.limit < 1:
            raise rejected
        self._batch_limit = rejected.limit

    def _score_batch(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        payload = self._payload(query, texts)

        def attempt(timeout_s: float | None) -> list[float]:
            return self._scores_from(self._client.post(self._endpoint, json=payload, timeout=timeout_s), len(texts))

        return self._caller.call(attempt, deadline)

    async def _ascore_batch(self, query: str, texts: Sequence[str], deadline: Deadline | None) -> list[float]:
        payload = self._payload(query, texts)

        async def attempt(timeout_s: float | None) -> list[float]:
            response = await self._aclients.get().post(self._endpoint, json=payload, timeout=timeout_s)
            if len(response.content) > _PARSE_INLINE_BYTES:  # parsing must not hold up the event loop
                return await asyncio.to_thread(self._scores_from, response, len(texts))
            return self._scores_from(response, len(texts))

        return await self._caller.acall(attempt, deadline)

    def _scores_from(self, response: httpx.Response, count: int) -> list[float]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.is_success:
            raise self._http_error(response, body)
        if body is None:
            raise MalformedResponse(f"{self.name} answered {response.status_code} with a body that is not JSON")
        try:
            pairs = self._pairs(body)
        except (KeyError, TypeError, AttributeError) as exc:
            raise MalformedResponse(f"{self.name} answered in an unexpected shape ({type(exc).__name__})") from exc
        return scores_by_index(pairs, count, self.name)

    def _http_error(self, response: httpx.Response, body: Any) -> BackendHTTPError:
        message = body.get("error") if isinstance(body, dict) else None
        description = f"{self.name} answered {response.status_code}" + (f": {message}" if message else "")
        limit = _TEI_BATCH_LIMIT.search(message) if response.status_code == 422 and isinstance(message, str) else None
        if limit is not None:
            return BatchTooLarge(description, limit=int(limit.group(1)))
        return BackendHTTPError(
            description, status_code=response.status_code, retry_after_s=parse_retry_after(response.headers)
        )

    def close(self) -> None:
        """Close the sync client's pooled connections and the batch threads; `aclose()` closes both clients."""
        self._client.close()
        self._executor.shutdown(wait=False)

    async def aclose(self) -> None:
        aclient = self._aclients.pop()
        if aclient is not None:
            await aclient.aclose()
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, model={self.model!r})"


class TEIScorer(_HTTPRerankScorer):
    """Hugging Face text-embeddings-inference `POST /rerank` (`texts` in, bare `[{index, score}]` out).

    TEI refuses requests with more than `--max-client-batch-size` texts (32 by default) with a 422;
    larger candidate sets are split into `max_batch_size` batches, and a lower cap reported by the
    server is learned. `raw_scores=True` asks for logits instead of sigmoid scores. Other options:
    see `ServerOptions`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        truncate: bool = True,
        raw_scores: bool = False,
        max_batch_size: int = TEI_MAX_CLIENT_BATCH_SIZE,
        **options: Unpack[ServerOptions],
    ) -> None:
        for flag_name, flag in (("truncate", truncate), ("raw_scores", raw_scores)):
            if not isinstance(flag, bool):
                raise TypeError(f"{flag_name} must be a bool, got {flag!r}")
        self.truncate = truncate
        self.raw_scores = raw_scores
        super().__init__(base_url, max_batch_size=max_batch_size, **options)

    @property
    def identity(self) -> str:
        return f"tei:{self.name}|truncate={self.truncate}|raw_scores={self.raw_scores}"

    def _payload(self, query: str, texts: Sequence[str]) -> dict[str, Any]:
        return {
            "query": query,
            "texts": list(texts),
            "truncate": self.truncate,
            "raw_scores": self.raw_scores,
            "return_text": False,
        }

    def _pairs(self, body: Any) -> list[tuple[object, object]]:
        return [(item["index"], item["score"]) for item in body]


class RerankServerScorer(_HTTPRerankScorer):
    """The Cohere/Jina-shaped `POST /rerank` of Infinity, vLLM and similar servers
    (`documents` in, `results[{index, relevance_score}]` out).

    `endpoint`: "/rerank" (Infinity, vLLM) or e.g. "/v1/rerank". `model` is sent when given
    (servers hosting several models need it). Other options: see `ServerOptions`.
    """

    def __init__(
        self, base_url: str, *, endpoint: str = "/rerank", max_batch_size: int = 64, **options: Unpack[ServerOptions]
    ) -> None:
        if not isinstance(endpoint, str) or not endpoint.startswith("/"):
            raise ValueError(f"endpoint must be a path starting with '/', got {endpoint!r}")
        self._endpoint = endpoint
        super().__init__(base_url, max_batch_size=max_batch_size, **options)

    @property
    def identity(self) -> str:
        return f"rerank-server:{self.name}"

    def _payload(self, query: str, texts: Sequence[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "query": query,
            "documents": list(texts),
            "top_n": len(texts),
            "return_documents": False,
        }
        if self.model is not None:
            payload["model"] = self.model
        return payload

    def _pairs(self, body: Any) -> list[tuple[object, object]]:
        return [(item["index"], item["relevance_score"]) for item in body["results"]]
