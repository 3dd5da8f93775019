"""Re-ranker configurations as plain data: built from CLI flags or a JSON/TOML file.

A configuration is a dict; every `Reranker` setting is reachable from it:

    {"name": "hybrid",
     "scorer": {"type": "cross-encoder", "model": "path/or/hub-id", "activation": "identity"},
     "fusion": {"type": "weighted", "rerank_weight": 0.5, "retrieval_weight": 0.5},
     "gate": {"min_top_gap": 0.3},
     "result_cache": true, "score_cache": {"backend": "redis", "url": "redis://localhost:6379/0"},
     "semantic_cache": {"embedder": "all-MiniLM-L6-v2", "threshold": 0.95, "backend": "memory"},
     "timeout_s": 2.0, "fallback": {"type": "cross-encoder", "model": "smaller-model"},
     "top_n": null, "score_threshold": null}

A `"multihop": {"generator": "key-terms", "hops": 2, ...}` or `"expansion": {"generator": "prf", ...}`
table runs the configuration as multi-hop or query-expansion re-ranking over the eval's BM25 index
(`rerank_prod.evaluation.retrieval` lists the options).

A scorer table with `chunk = "max"` (or "first", "mean"; options `chunk_window`, `chunk_overlap`,
`chunk_max`) scores long texts as overlapping windows (`ChunkedScorer`). A file written by
`rerank-prod tune` is such a configuration file too (`--config tuned.json`).

Scorers and cache backends are built by name from small registries (`SCORERS`, `CACHE_BACKENDS`):
every scorer and backend of the core is there, and your own plugs in with
`register_scorer("mine", lambda **options: MyScorer(**options))` (or `register_cache_backend`), usable
from flags and files without touching the CLI (`rerank-prod eval --plugin my_module`). Objects that
are not plain data (`RetryPolicy`, `CircuitBreaker`) keep their defaults; register a factory to set them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rerank_prod.cache import CacheBackend, InMemoryCache, ResultCache, ScoreCache
from rerank_prod.cache_redis import RedisCache
from rerank_prod.evaluation.dataset import EvalInputError
from rerank_prod.fusion import ReciprocalRankFusion, WeightedFusion
from rerank_prod.gate import DEFAULT_RULE, ConfidenceGate
from rerank_prod.pipeline import Reranker
from rerank_prod.scoring import (
    DEFAULT_CROSS_ENCODER,
    BM25Scorer,
    CohereScorer,
    CrossEncoderScorer,
    LLMListwiseScorer,
    LLMPointwiseScorer,
    OpenAIEmbeddingScorer,
    RerankServerScorer,
    Scorer,
    SentenceTransformerEmbeddingScorer,
    TEIScorer,
)
from rerank_prod.scoring.chunked import ChunkedScorer
from rerank_prod.semantic_cache import SemanticCache

Spec = dict[str, Any]

CONFIG_KEYS = (
    "name",
    "scorer",
    "fusion",
    "gate",
    "result_cache",
    "score_cache",
    "semantic_cache",
    "timeout_s",
    "fallback",
    "fallback_timeout_s",
    "top_n",
    "score_threshold",
    "multihop",
    "expansion",
)
RETRIEVAL_TABLES = ("multihop", "expansion")
"""Tables that turn a configuration into multi-hop or query-expansion re-ranking over the eval's BM25
(`rerank_prod.evaluation.retrieval`); their type is the query writer, e.g. `multihop = "key-terms"`."""
_TABLE_KEYS = (
    "scorer",
    "fusion",
    "gate",
    "result_cache",
    "score_cache",
    "semantic_cache",
    "fallback",
    *RETRIEVAL_TABLES,
)


def _type_key(table: str) -> str:
    """The key a table's shorthand value sets: a cache's backend, a retrieval table's generator, else type."""
    return "backend" if table.endswith("cache") else "generator" if table in RETRIEVAL_TABLES else "type"


T = TypeVar("T")


def _cross_encoder(model: str = DEFAULT_CROSS_ENCODER, **options: Any) -> Scorer:
    return CrossEncoderScorer(model, **options)


def _embedding(model: str, **options: Any) -> Scorer:
    return SentenceTransformerEmbeddingScorer(model, **options)


SCORERS: dict[str, Callable[..., Scorer]] = {
    "cross-encoder": _cross_encoder,
    "embedding": _embedding,
    "openai-embedding": OpenAIEmbeddingScorer,
    "cohere": CohereScorer,
    "tei": TEIScorer,
    "rerank-server": RerankServerScorer,
    "llm-pointwise": LLMPointwiseScorer,
    "llm-listwise": LLMListwiseScorer,
    "bm25": BM25Scorer,
}
"""Scorer types by name; `model` is the model option of each (a path or hub id for local models)."""
CACHE_BACKENDS: dict[str, Callable[..., CacheBackend]] = {"memory": InMemoryCache, "redis": RedisCache}
FUSIONS: dict[str, Callable[..., Any]] = {"weighted": WeightedFusion, "rrf": ReciprocalRankFusion}


def register_scorer(name: str, factory: Callable[..., Scorer]) -> None:
    """Make a scorer type usable as `{"type": name, **options}`; options go to `factory`."""
    SCORERS[name] = factory


def register_cache_backend(name: str, factory: Callable[..., CacheBackend]) -> None:
    """Make a cache backend usable as `{"backend": name, **options}`."""
    CACHE_BACKENDS[name] = factory


def _construct(what: str, factory: Callable[..., T], options: Mapping[str, Any]) -> T:
    try:
        return factory(**options)
    except (TypeError, ValueError, OSError) as exc:  # OSError: a model path or hub id that cannot load
        raise EvalInputError(f"{what}: {exc}") from None


def _registered(
    kind: str,
    registry: Mapping[str, Callable[..., T]],
    spec: Mapping[str, Any],
    type_key: str,
    default: str,
) -> T:
    options = dict(spec)
    type_name = options.pop(type_key, default)
    if type_name not in registry:
        raise EvalInputError(f"unknown {kind} {type_name!r}; known: {', '.join(sorted(registry))}")
    return _construct(f"{kind} {type_name!r}", registry[type_name], options)


CHUNKING_OPTIONS = {
    "chunk": "aggregate",
    "chunk_window": "window_tokens",
    "chunk_overlap": "overlap_tokens",
    "chunk_max": "max_chunks",
}
"""Scorer-table options that wrap the scorer in a `ChunkedScorer` (long documents scored as windows):
`chunk` = "max" / "first" / "mean" (or true for "max") turns it on; the others set its options."""


def build_scorer(spec: Mapping[str, Any]) -> Scorer:
    """The scorer a scorer table names; with `chunk=...` it is wrapped in a `ChunkedScorer`."""
    options = dict(spec)
    chunking = {CHUNKING_OPTIONS[key]: options.pop(key) for key in list(options) if key in CHUNKING_OPTIONS}
    scorer: Scorer = _registered("scorer", SCORERS, options, "type", "cross-encoder")
    aggregate = chunking.pop("aggregate", False)
    if aggregate in (False, None):
        if chunking:
            raise EvalInputError(f"scorer options {sorted(chunking)} need chunk=max|first|mean")
        return scorer
    chunking["aggregate"] = "max" if aggregate is True else aggregate
    return _construct("chunked scorer", lambda **kw: ChunkedScorer(scorer, **kw), chunking)


def _options(value: Any) -> dict[str, Any] | None:
    """A table's options: `true` means defaults, `false`/absent means off."""
    if value in (None, False):
        return None
    return {} if value is True else dict(value)


def _backend(options: dict[str, Any]) -> CacheBackend:
    return _registered("cache backend", CACHE_BACKENDS, options, "backend", "memory")


def _semantic_cache(options: dict[str, Any]) -> SemanticCache:
    """Semantic-cache options, plus `backend` and `backend_options` for its store."""
    backend = _backend({"backend": options.pop("backend", "memory"), **options.pop("backend_options", {})})
    return _construct("semantic_cache", lambda **kw: SemanticCache(backend, **kw), options)


def build_settings(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Every `Reranker` keyword setting a configuration names (fusion, gate, caches, budgets,
    fallback, top_n, score_threshold), built; the primary scorer is not among them."""
    fusion, gate, result_cache, score_cache, semantic_cache, fallback = (
        _options(spec.get(key))
        for key in ("fusion", "gate", "result_cache", "score_cache", "semantic_cache", "fallback")
    )
    settings = {
        "fusion": None if fusion is None else _registered("fusion", FUSIONS, fusion, "type", "weighted"),
        "gate": None if gate is None else _construct("gate", ConfidenceGate, gate),
        "result_cache": None if result_cache is None else ResultCache(_backend(result_cache)),
        "score_cache": None if score_cache is None else ScoreCache(_backend(score_cache)),
        **{key: spec.get(key) for key in ("top_n", "score_threshold", "timeout_s", "fallback_timeout_s")},
    }
    settings["semantic_cache"] = None if semantic_cache is None else _semantic_cache(semantic_cache)
    settings["fallback_scorer"] = None if fallback is None else build_scorer(fallback)
    return settings


def build_reranker(spec: Spec, scorer: Scorer | None = None) -> Reranker:
    """A `Reranker` from a configuration checked by `normalize_spec`, with `scorer` instead of the
    configured one when given. The cheap parts are built first, so a mistake in them is reported
    before any model loads."""
    settings = build_settings(spec)
    primary = build_scorer(spec["scorer"]) if scorer is None else scorer
    return _construct(f"re-ranker {spec['name']!r}", lambda **kw: Reranker(primary, **kw), settings)


def normalize_spec(raw: Mapping[str, Any], default_scorer: Mapping[str, Any], position: int) -> Spec:
    """Check keys, give a name, and lay the configuration's scorer options over the default scorer."""
    if not isinstance(raw, Mapping):
        raise EvalInputError(f"re-ranker configuration {position} must be a table/object, got {raw!r}")
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        raise EvalInputError(
            f"re-ranker configuration {position}: unknown keys {unknown}; allowed: {', '.join(CONFIG_KEYS)}"
        )
    spec: Spec = dict(raw)
    for key in _TABLE_KEYS:
        value = spec.get(key)
        if isinstance(value, str):  # shorthand: fusion="rrf", scorer="cross-encoder", result_cache="memory"
            spec[key] = {_type_key(key): value}
        elif value is not None and not isinstance(value, Mapping) and (key == "scorer" or not isinstance(value, bool)):
            raise EvalInputError(f"re-ranker configuration {position}: {key!r} must be a table, got {value!r}")
    scorer = dict(spec.get("scorer") or {})
    same_type = scorer.get("type", default_scorer.get("type")) == default_scorer.get("type")
    spec["scorer"] = {**default_scorer, **scorer} if same_type else scorer
    spec.setdefault("name", describe(spec))
    if not isinstance(spec["name"], str) or not spec["name"].strip():
        raise EvalInputError(f"re-ranker configuration {position}: name must be a non-empty string")
    return spec


def describe(spec: Spec) -> str:
    """A readable default name: what the configuration adds to the model."""
    parts = [str(spec["scorer"].get("type", "cross-encoder"))]
    fusion = spec.get("fusion")
    if fusion:
        weights = "/".join(str(fusion[w]) for w in ("rerank_weight", "retrieval_weight", "bm25_weight") if w in fusion)
        parts.append(f"{fusion.get('type', 'weighted')}{' ' + weights if weights else ''}")
    if spec["scorer"].get("chunk"):
        parts.append("chunked")
    if spec.get("gate"):
        parts.append("gated")
    if spec.get("result_cache") or spec.get("score_cache") or spec.get("semantic_cache"):
        parts.append("cached")
    if spec.get("fallback") or spec.get("timeout_s"):
        parts.append("deadline")
    for table in RETRIEVAL_TABLES:
        if spec.get(table):
            options = spec[table] if isinstance(spec[table], Mapping) else {}
            parts.append(f"{table} {options.get('generator', 'built-in')}")
    return " + ".join(parts)


def _parse_value(text: str) -> Any:
    """JSON scalars (numbers, true/false, null) as such; anything else is a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_flag_spec(text: str) -> Spec:
    """`--reranker 'name=hybrid,fusion=weighted,fusion.retrieval_weight=0.3,gate.min_top_gap=0.2'`.

    `table=type` sets a table's type (or a cache's backend); `table.option=value` sets an option.
    """
    spec: Spec = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EvalInputError(f"--reranker item {item!r} must be key=value")
        table, dot, option = key.partition(".")
        if not dot:
            if table in _TABLE_KEYS and isinstance(spec.get(table), dict):
                spec[table][_type_key(table)] = _parse_value(value)
            else:
                spec[table] = _parse_value(value)
            continue
        if table not in _TABLE_KEYS:
            raise EvalInputError(f"--reranker key {key!r}: only {', '.join(_TABLE_KEYS)} take options")
        current = spec.get(table)
        if isinstance(current, str):
            current = {_type_key(table): current}
        elif not isinstance(current, dict):
            current = {}
        current[option] = _parse_value(value)
        spec[table] = current
    return spec


def _toml_parser() -> Any:
    """`tomllib` (Python 3.11+), or `tomli`, its backport, on 3.10."""
    try:
        import tomllib
    except ModuleNotFoundError:
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ModuleNotFoundError:
            raise EvalInputError("TOML config files need Python 3.11+ or `pip install tomli`; or use JSON") from None
    return tomllib


def load_config_file(path: str | Path) -> list[Spec]:
    """JSON (`{"rerankers": [...]}` or a list) or TOML (`[[reranker]]` tables)."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"config file {path} not found")
    toml = _toml_parser() if path.suffix.lower() == ".toml" else None
    try:
        data: Any = (toml or json).loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise EvalInputError(f"config file {path}: {exc}") from None
    if isinstance(data, Mapping):
        data = data.get("reranker", data.get("rerankers"))
    if not isinstance(data, list) or not data:
        raise EvalInputError(
            f'config file {path} must list re-rankers: TOML [[reranker]] tables, or JSON {{"rerankers": [...]}}'
        )
    return list(data)


def default_gate_spec() -> dict[str, Any]:
    """`ConfidenceGate()`'s rule, spelled out (a spec must name its thresholds)."""
    return {name: value for name, value in DEFAULT_RULE.items() if value is not None}


def default_specs() -> list[Spec]:
    """The trade-offs worth seeing first: the model alone, 50/50 fusion with the retriever, gated fusion."""
    fusion = {"type": "weighted", "rerank_weight": 0.5, "retrieval_weight": 0.5}
    return [
        {"name": "model"},
        {"name": "fusion 50/50", "fusion": fusion},
        {"name": "fusion 50/50 + gate", "fusion": fusion, "gate": default_gate_spec()},
    ]


def resolve_specs(
    flag_specs: Sequence[str],
    config_file: str | Path | None,
    default_scorer: Mapping[str, Any],
    defaults: Sequence[Spec] | None = None,
) -> list[Spec]:
    """Configurations from the file, then the flags; `defaults` (`default_specs()` when None) when
    neither gives any."""
    raw = (load_config_file(config_file) if config_file else []) + [parse_flag_spec(s) for s in flag_specs]
    chosen = raw or list(default_specs() if defaults is None else defaults)
    specs = [normalize_spec(r, default_scorer, i + 1) for i, r in enumerate(chosen)]
    names = [s["name"] for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise EvalInputError(f"re-ranker names must be unique; repeated: {duplicated}")
    return specs
