"""OpenTelemetry spans for rerank calls (the `otel` extra: opentelemetry-api only).

    reranker = Reranker(scorer, observers=[OpenTelemetryTracing()])

One `rerank` span per call, a child of whatever span is current when the call starts (the
caller's request, a LangChain or LlamaIndex run, sync or async), with one child span per stage
(`rerank.cache.result.read`, `rerank.gate`, `rerank.score`, `rerank.fusion`, ...). While a stage
runs its span is current, so instrumented clients (httpx, redis) nest under it.

Attributes of the call span: `rerank.model`, `rerank.scorer`, `rerank.candidates_in`,
`rerank.top_n`, `rerank.candidates_out`, `rerank.source` (model, cache, fallback, skipped),
`rerank.source_detail`, `rerank.fallback.to` / `rerank.fallback.reason`, `rerank.gate.decision`
(rerank | skip) and `rerank.gate.reason`, `rerank.cache.result_hit`, `rerank.cache.score_hits`,
`rerank.cache.semantic_hits` (candidates answered by each layer), `rerank.latency_s`. A stage that
failed gets status ERROR and `error.type`: the exception's type only, never its message (a
backend's message may echo a secret). No query or passage text is recorded.

The SDK, exporters and sampling are the application's choice: configure a `TracerProvider` as
usual (or pass one here); without one the API's no-op tracer costs next to nothing.
"""

from __future__ import annotations

from contextvars import Token
from typing import TYPE_CHECKING, Any, cast

from rerank_prod.observability.base import Finished, fallback_reason, scorer_kind
from rerank_prod.scoring.dependencies import require_extra
from rerank_prod.types import SourceKind

require_extra("opentelemetry", "OpenTelemetryTracing", "otel")

from opentelemetry import context, trace  # noqa: E402  (after the check that names the extra)
from opentelemetry.context import Context  # noqa: E402
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider  # noqa: E402

if TYPE_CHECKING:
    from rerank_prod.pipeline import Reranker


class OpenTelemetryTracing:
    """An observer (`Reranker(observers=[...])`) emitting OpenTelemetry spans.

    `tracer_provider`: where spans go (default: the global provider, set by the application or
    its auto-instrumentation, looked up at each call so setting it later works too).
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        from rerank_prod import __version__

        if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
            raise TypeError(f"tracer_provider must be a TracerProvider, got {type(tracer_provider).__name__}")
        self._tracer = trace.get_tracer("rerank_prod", __version__, tracer_provider=tracer_provider)

    def bind(self, reranker: Reranker) -> _BoundTracing:
        """Observer hook: called by `Reranker` once."""
        return _BoundTracing(
            self._tracer, {"rerank.model": reranker.scorer.name, "rerank.scorer": scorer_kind(reranker)}
        )

    def __repr__(self) -> str:
        return "OpenTelemetryTracing()"


class _BoundTracing:
    __slots__ = ("_tracer", "_attributes")

    def __init__(self, tracer: Tracer, attributes: dict[str, Any]) -> None:
        self._tracer = tracer
        self._attributes = attributes

    def start(self, candidates: int, top_n: int | None) -> _TracedCall:
        attributes = {**self._attributes, "rerank.candidates_in": candidates}
        if top_n is not None:
            attributes["rerank.top_n"] = top_n
        return _TracedCall(self._tracer, attributes)


class _TracedCall:
    """The span of one call, current from start to close; stage spans are its children."""

    __slots__ = ("_tracer", "_span", "_token")

    def __init__(self, tracer: Tracer, attributes: dict[str, Any]) -> None:
        self._tracer = tracer
        self._span = tracer.start_span("rerank", attributes=attributes, record_exception=False)
        self._token = context.attach(trace.set_span_in_context(self._span))

    def stage_started(self, stage: str) -> tuple[Span, Token[Context]]:
        span = self._tracer.start_span(f"rerank.{stage}", record_exception=False)
        return span, context.attach(trace.set_span_in_context(span))

    def stage_ended(self, token: object, error: BaseException | None) -> None:
        span, attached = cast(tuple[Span, Token[Context]], token)
        context.detach(attached)
        if error is not None:
            _mark_failed(span, error)
        span.end()

    def finished(self, outcome: Finished) -> None:
        result = outcome.result
        attributes: dict[str, Any] = {
            "rerank.candidates_out": len(result.items),
            "rerank.source": result.source.kind.value,
            "rerank.source_detail": str(result.source),
            "rerank.latency_s": result.latency_s,
        }
        if result.source.kind is SourceKind.FALLBACK:
            attributes["rerank.fallback.to"], attributes["rerank.fallback.reason"] = fallback_reason(result.source)
        if result.gate is not None:
            attributes["rerank.gate.decision"] = "rerank" if result.gate.rerank else "skip"
            attributes["rerank.gate.reason"] = result.gate.reason
        hits = outcome.cache_hits()
        attributes["rerank.cache.result_hit"] = bool(hits["result"])
        attributes["rerank.cache.score_hits"] = hits["score"]
        attributes["rerank.cache.semantic_hits"] = hits["semantic"]
        self._span.set_attributes(attributes)

    def closed(self, error: BaseException | None) -> None:
        context.detach(self._token)
        if error is not None:
            _mark_failed(self._span, error)
        self._span.end()


def _mark_failed(span: Span, error: BaseException) -> None:
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
