"""Plain settings for the framework adapters, defined once: `RerankProdCompressor(model=..., top_n=3)` and
`RerankProdPostprocessor(model=..., top_n=2)` configure like the partner packages, validate like the core,
and serialize with each framework's own tools because everything they hold is plain data.

Adapter-only: this module imports pydantic (both frameworks bring it); `import rerank_prod` never loads it.
The settings are turned into a `Reranker` by the same builder as `rerank-prod eval` configurations, so a
setting means the same thing in a config file, a compressor and a postprocessor.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from rerank_prod.pipeline import Reranker
from rerank_prod.scoring import DEFAULT_CROSS_ENCODER
from rerank_prod.validation import check_int, check_number

_PIPELINE_SETTINGS = (
    "model",
    "scorer",
    "device",
    "batch_size",
    "max_length",
    "base_url",
    "api_key",
    "scorer_options",
    "score_threshold",
    "timeout_s",
    "fallback",
    "fallback_timeout_s",
    "fusion",
    "rerank_weight",
    "retrieval_weight",
    "bm25_weight",
    "rrf_k",
    "gate_min_top_gap",
    "gate_min_top_k_std",
    "gate_min_top_k_variance",
    "gate_scale",
    "result_cache_url",
    "score_cache_url",
    "cache_ttl_s",
    "redis_password",
    "semantic_cache_url",
    "semantic_cache_embedder",
    "semantic_cache_threshold",
)
"""Settings that describe the pipeline: with a prebuilt `reranker=` they would be silently ignored."""


def cache_backend_spec(url: str, ttl_s: float | None, password: SecretStr | None) -> dict[str, Any]:
    """`"memory"` or a redis://, rediss://, unix:// URL as a cache backend configuration."""
    if url == "memory":
        return {"backend": "memory"} if ttl_s is None else {"backend": "memory", "ttl_s": ttl_s}
    spec: dict[str, Any] = {"backend": "redis", "url": url}
    if ttl_s is not None:
        spec["ttl_s"] = ttl_s
    if password is not None:
        spec["password"] = password.get_secret_value()
    return spec


class RerankerSettings(BaseModel):
    """The re-ranking pipeline as plain fields, or a prebuilt `reranker=` for full control.

    Contract: unknown fields are rejected (a typo never passes silently); bad values raise at
    construction with the setting's name, before any model loads; the model loads once, at
    construction, as the partner packages do. Secrets (`api_key`, `redis_password`) are `SecretStr`
    and never serialized. Copies and unpickled instances are rebuilt from the settings; an instance
    around a prebuilt `reranker=` shares that reranker when deep-copied and refuses to pickle.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    reranker: Reranker | None = Field(
        default=None, exclude=True, description="A prebuilt pipeline (full control); None: built from the settings."
    )
    top_n: int | None = Field(default=None, description="Results to keep (None: all, or the prebuilt reranker's).")
    # --- the scorer ---
    model: str | None = Field(default=None, description="Model name or local path (None: the scorer's default).")
    scorer: str = Field(
        default="cross-encoder", description="Scorer type: cross-encoder, cohere, tei, rerank-server, embedding, ..."
    )
    device: str | None = Field(default=None, description="Local models: torch device (None: automatic).")
    batch_size: int | None = Field(default=None, description="Local models: pairs per forward pass.")
    max_length: int | None = Field(default=None, description="Local models: token cap per pair.")
    base_url: str | None = Field(default=None, description="Remote scorers: the server's URL.")
    api_key: SecretStr | None = Field(default=None, exclude=True, description="Remote scorers: the API key.")
    scorer_options: dict[str, Any] = Field(
        default_factory=dict, description="Any other option of the scorer (activation, request_timeout_s, ...)."
    )
    # --- budget and fallback ---
    score_threshold: float | None = Field(default=None, description="Drop model results scoring below this.")
    timeout_s: float | None = Field(default=None, description="Time budget of the primary scorer per call.")
    fallback: dict[str, Any] | None = Field(
        default=None, description='A secondary scorer, e.g. {"type": "cross-encoder", "model": "small-model"}.'
    )
    fallback_timeout_s: float | None = Field(default=None, description="The secondary scorer's budget.")
    # --- fusion ---
    fusion: Literal["weighted", "rrf"] | None = Field(
        default=None, description="Blend the model with the retriever: weighted (min-max) or rrf; None: pure."
    )
    rerank_weight: float | None = Field(default=None, description="Fusion weight of the model score.")
    retrieval_weight: float | None = Field(default=None, description="Fusion weight of the retriever score.")
    bm25_weight: float | None = Field(default=None, description="Weighted fusion: weight of BM25 (needs [hybrid]).")
    rrf_k: int | None = Field(default=None, description="RRF's k (default 60).")
    # --- selective re-ranking ---
    gate_min_top_gap: float | None = Field(default=None, description="Skip the model when the retriever's top gap >=.")
    gate_min_top_k_std: float | None = Field(default=None, description="Skip when the top-k score spread >= this.")
    gate_min_top_k_variance: float | None = Field(
        default=None, description="Skip when the top-k score variance >= this (with the others set: all must hold)."
    )
    gate_scale: Literal["normalized", "raw"] | None = Field(
        default=None, description="Gate on min-max normalized (default) or the retriever's raw scores."
    )
    # --- caches ---
    result_cache_url: str | None = Field(default=None, description='Exact-result cache: "memory" or a redis:// URL.')
    score_cache_url: str | None = Field(default=None, description='Pair-score cache: "memory" or a redis:// URL.')
    cache_ttl_s: float | None = Field(default=None, description="Time to live of cache entries.")
    redis_password: SecretStr | None = Field(default=None, exclude=True, description="Password of the Redis caches.")
    semantic_cache_url: str | None = Field(default=None, description='Semantic cache store: "memory" or redis://.')
    semantic_cache_embedder: str | None = Field(default=None, description="Semantic cache: embedder model or path.")
    semantic_cache_threshold: float | None = Field(default=None, description="Semantic cache: cosine threshold.")

    _from_settings: bool = PrivateAttr(default=False)
    pipeline_settings: ClassVar[tuple[str, ...]] = _PIPELINE_SETTINGS
    """The fields a prebuilt `reranker=` excludes."""

    @field_validator("top_n", "batch_size", "max_length", "rrf_k", mode="before")
    @classmethod
    def _positive_int(cls, value: Any, info: ValidationInfo) -> Any:
        """As strict as the core: True, 2.0 and "2" are not ints."""
        return None if value is None else check_int(str(info.field_name), value)

    @field_validator(
        "timeout_s",
        "fallback_timeout_s",
        "cache_ttl_s",
        "gate_min_top_gap",
        "gate_min_top_k_std",
        "gate_min_top_k_variance",
    )
    @classmethod
    def _positive_number(cls, value: float | None, info: ValidationInfo) -> float | None:
        """Budgets and thresholds are checked here, before any model loads."""
        return None if value is None else check_number(str(info.field_name), value)

    @field_validator("rerank_weight", "retrieval_weight", "bm25_weight", "semantic_cache_threshold")
    @classmethod
    def _non_negative_number(cls, value: float | None, info: ValidationInfo) -> float | None:
        return None if value is None else check_number(str(info.field_name), value, allow_zero=True)

    @field_validator("result_cache_url", "score_cache_url", "semantic_cache_url")
    @classmethod
    def _cache_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "memory":
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f'{info.field_name} must be "memory" or a redis://, rediss://, unix:// URL, got {value!r}')
        if parts.password:
            raise ValueError(f"{info.field_name} must not hold a password (it would be serialized): use redis_password")
        return value

    @model_validator(mode="after")
    def _settings_or_reranker(self) -> Self:
        if self.reranker is not None:
            given = sorted(set(self.pipeline_settings) & self.model_fields_set)
            if given:
                raise ValueError(f"give either reranker= or pipeline settings, not both; got reranker= and {given}")
            return self
        if self.semantic_cache_url is not None and self.semantic_cache_embedder is None:
            raise ValueError("semantic_cache_url needs semantic_cache_embedder (a sentence-transformers model or path)")
        self.reranker = self._build()
        self._from_settings = True
        return self

    @classmethod
    def from_cross_encoder(
        cls,
        model_name_or_path: str = DEFAULT_CROSS_ENCODER,
        *,
        top_n: int | None = 3,
        device: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        activation: str | None = None,
        trust_remote_code: bool | None = None,
        precision: str | None = None,
        isolation: str | None = None,
        **settings: Any,
    ) -> Self:
        """Over a sentence-transformers cross-encoder, with every `CrossEncoderScorer` option by name;
        `settings` are any other fields (fusion, gate, caches, budget)."""
        options = {
            "activation": activation,
            "trust_remote_code": trust_remote_code,
            "precision": precision,
            "isolation": isolation,
        }
        return cls(
            model=model_name_or_path,
            scorer="cross-encoder",
            top_n=top_n,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            scorer_options={**_given(options), **settings.pop("scorer_options", {})},
            **settings,
        )

    def reranker_spec(self) -> dict[str, Any]:
        """These settings as a `rerank-prod eval` configuration (secrets included: never log it)."""
        scorer: dict[str, Any] = {"type": self.scorer, **self.scorer_options}
        for name in ("model", "device", "batch_size", "max_length", "base_url"):
            if getattr(self, name) is not None:
                scorer[name] = getattr(self, name)
        if self.api_key is not None:
            scorer["api_key"] = self.api_key
        spec: dict[str, Any] = {"name": type(self).__name__, "scorer": scorer}
        for name in ("top_n", "score_threshold", "timeout_s", "fallback_timeout_s", "fallback"):
            spec[name] = getattr(self, name)
        weights = {"rerank_weight": self.rerank_weight, "retrieval_weight": self.retrieval_weight}
        if self.fusion == "rrf":
            spec["fusion"] = {"type": "rrf", **_given({**weights, "k": self.rrf_k})}
        elif self.fusion == "weighted" or any(w is not None for w in (*weights.values(), self.bm25_weight)):
            spec["fusion"] = {"type": "weighted", **_given({**weights, "bm25_weight": self.bm25_weight})}
        gate: dict[str, Any] = {
            "min_top_gap": self.gate_min_top_gap,
            "min_top_k_std": self.gate_min_top_k_std,
            "min_top_k_variance": self.gate_min_top_k_variance,
        }
        if any(value is not None for value in gate.values()):
            spec["gate"] = gate if self.gate_scale is None else {**gate, "scale": self.gate_scale}
        elif self.gate_scale is not None:
            raise ValueError("gate_scale needs a gate threshold (gate_min_top_gap, gate_min_top_k_variance, ...)")
        else:
            spec["gate"] = None
        for layer in ("result_cache", "score_cache"):
            url = getattr(self, f"{layer}_url")
            spec[layer] = None if url is None else cache_backend_spec(url, self.cache_ttl_s, self.redis_password)
        if self.semantic_cache_url is not None:
            backend = cache_backend_spec(self.semantic_cache_url, self.cache_ttl_s, self.redis_password)
            spec["semantic_cache"] = {
                "embedder": self.semantic_cache_embedder,
                "backend": backend.pop("backend"),
                "backend_options": backend,
                **_given({"threshold": self.semantic_cache_threshold}),
            }
        return spec

    def _build(self) -> Reranker:
        from rerank_prod.evaluation.configs import build_reranker

        return build_reranker(self.reranker_spec())

    def _pipeline(self) -> Reranker:
        assert self.reranker is not None  # set by the validator, for both paths
        return self.reranker

    # --- copies and pickles: rebuilt from the settings, never the live models and pools ----------

    def _settings(self, memo: dict[int, Any] | None = None) -> dict[str, Any]:
        """The fields set on this instance, less the pipeline and the framework's live objects
        (LlamaIndex's callback manager), which are not settings."""
        fields = type(self).model_fields
        own = RerankerSettings.model_fields
        settings = {
            name: getattr(self, name)
            for name in self.model_fields_set
            if name != "reranker" and (name in own or not fields[name].exclude)
        }
        return copy.deepcopy(settings, memo) if memo is not None else settings

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        if self._from_settings:
            return type(self)(**self._settings(memo if memo is not None else {}))
        return type(self)(reranker=self.reranker, **self._settings(memo if memo is not None else {}))

    @property
    def serializable(self) -> bool:
        """True when built from settings; a prebuilt `reranker=` holds live models, pools and connections."""
        return self._from_settings

    def _refuse_serialization(self, how: str) -> None:
        if not self._from_settings:
            raise TypeError(
                f"a {type(self).__name__} around a prebuilt reranker= cannot be {how} (it holds live models, "
                f"pools and connections); build it from settings (model=, top_n=, ...) to have it {how}"
            )

    def __getstate__(self) -> dict[str, Any]:
        self._refuse_serialization("pickled")
        return {"settings": self._settings()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, **state["settings"])


class RetrievalSettings(RerankerSettings):
    """`RerankerSettings` for the multi-hop and expansion retrievers: `timeout_s` is the budget of the
    whole retrieval (every hop, query writing and re-rank), so it is allowed beside a prebuilt
    `reranker=` (which keeps its own per-re-rank `timeout_s`). Built from settings, the reranker gets
    `timeout_s` as its cap too."""

    pipeline_settings: ClassVar[tuple[str, ...]] = tuple(s for s in _PIPELINE_SETTINGS if s != "timeout_s")


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


def as_list(items: object, what: str) -> list[Any]:
    """Any iterable of items (a generator too) as a list, read once; None, a string or a non-iterable
    raise the core's TypeError before any work."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(f"{what}, got {type(items).__name__}")
    return list(items)


def query_writer(
    given: Any, llm_model: str | None, llm_base_url: str | None, llm_api_key: SecretStr | None, what: str
) -> Any:
    """The query writer of a multi-hop / expansion retriever adapter: the callable given, or an
    `LLMQueryWriter` from `llm_model` (+ `llm_base_url`, `llm_api_key`). Neither or both: `ValueError`."""
    if (given is None) == (llm_model is None):
        raise ValueError(f"give either {what}= (a callable) or llm_model= (an OpenAI-compatible chat model), not both")
    if given is not None:
        if not callable(given):
            raise ValueError(f"{what} must be callable, got {type(given).__name__}")
        return given
    from rerank_prod.retrieval import LLMQueryWriter

    return LLMQueryWriter(llm_model, base_url=llm_base_url, api_key=llm_api_key)  # type: ignore[arg-type]
