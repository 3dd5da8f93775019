"""Both adapters configured from plain settings like the partner packages: as strict as the core,
serializable with each framework's own tools (secrets left out), deep-copyable and picklable."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Iterator

import pytest
from langchain_core.documents import Document
from langchain_core.load import dumpd, dumps, loads
from llama_index.core.schema import NodeWithScore, TextNode
from pydantic import SecretStr, ValidationError

from langchain_rerank_prod import RerankProdCompressor
from llamaindex_rerank_prod import RerankProdPostprocessor
from loopback.standin_servers import StandInServer, running
from rerank_prod import Reranker, SourceKind
from tests.support import ConstantTimeScorer

ADAPTERS = (RerankProdCompressor, RerankProdPostprocessor)
QUERY = "does aspirin prevent heart attacks"
TEXTS = [
    "The Eiffel Tower was completed in 1889.",
    "Low-dose aspirin lowers the rate of heart attacks in men over fifty.",
    "Statins reduce LDL cholesterol.",
]
KEY = "co-adapter-key-do-not-leak"


def _documents() -> list[Document]:
    return [Document(page_content=t, id=f"d{i}", metadata={"score": 1.0 - i / 10}) for i, t in enumerate(TEXTS)]


def _nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0 - i / 10) for i, t in enumerate(TEXTS)]


def _rerank(adapter: RerankProdCompressor | RerankProdPostprocessor, query: str = QUERY) -> list[str]:
    if isinstance(adapter, RerankProdCompressor):
        return [d.page_content for d in adapter.compress_documents(_documents(), query)]
    return [n.node.get_content() for n in adapter.postprocess_nodes(_nodes(), query_str=query)]


# --- strict like the core ---------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("top_n", [True, 2.0, "2", 0, -1])
def test_top_n_is_as_strict_as_the_core(adapter, top_n) -> None:
    with pytest.raises(ValidationError, match=f"top_n must be a positive int, got {top_n!r}"):
        adapter(reranker=Reranker(ConstantTimeScorer()), top_n=top_n)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_unknown_fields_are_rejected(adapter) -> None:
    with pytest.raises(ValidationError, match="topn"):
        adapter(reranker=Reranker(ConstantTimeScorer()), topn=3)
    with pytest.raises(ValidationError, match="fusion"):
        adapter(fusion="weigthed")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_reranker_and_pipeline_settings_do_not_mix(adapter) -> None:
    with pytest.raises(ValidationError, match=r"either reranker= or pipeline settings.*'timeout_s'"):
        adapter(reranker=Reranker(ConstantTimeScorer()), timeout_s=1.0)
    with pytest.raises(ValidationError, match="instance of Reranker"):
        adapter(reranker="cross-encoder")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_settings_fail_before_a_model_loads(adapter) -> None:
    with pytest.raises(ValidationError, match="timeout_s must be a positive number"):
        adapter(model="/nonexistent/model", timeout_s=-1)
    with pytest.raises(ValidationError, match="redis_password"):
        adapter(result_cache_url="redis://:hunter2@localhost:6379/0")
    with pytest.raises(ValidationError, match="memory"):
        adapter(score_cache_url="http://cache")


@pytest.mark.needs_models
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_gate_settings_name_the_rule_on_either_scale(adapter, cross_encoder_path: str) -> None:
    from rerank_prod import ConfidenceGate

    default = adapter(model=cross_encoder_path, gate_min_top_gap=0.3, gate_min_top_k_variance=0.05)
    assert default.reranker.gate == ConfidenceGate()  # the default rule, spelled out
    raw = adapter(model=cross_encoder_path, gate_min_top_k_variance=0.01, gate_scale="raw")
    assert raw.reranker.gate == ConfidenceGate(min_top_k_variance=0.01, scale="raw")
    assert adapter(model=cross_encoder_path).reranker.gate is None
    with pytest.raises(ValueError, match="gate_scale needs a gate threshold"):
        adapter(model=cross_encoder_path, gate_scale="raw")


def test_generator_and_none_documents() -> None:
    scorer = ConstantTimeScorer()
    compressor = RerankProdCompressor(reranker=Reranker(scorer), top_n=2)
    out = compressor.compress_documents((d for d in _documents()), "aspirin heart attacks")
    assert [d.id for d in out] == ["d1", "d0"]
    for bad in (None, "a string", 3):
        with pytest.raises(TypeError, match="documents must be a sequence of langchain Documents, got"):
            compressor.compress_documents(bad, QUERY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="document 1 must be a langchain Document"):
        compressor.compress_documents([_documents()[0], "text"], QUERY)  # type: ignore[list-item]
    assert len(scorer.scored_texts) == 3  # only the generator call reached the model


async def test_generator_and_none_nodes() -> None:
    scorer = ConstantTimeScorer()
    postprocessor = RerankProdPostprocessor(reranker=Reranker(scorer), top_n=2)
    out = postprocessor.postprocess_nodes((n for n in _nodes()), query_str="aspirin heart attacks")  # type: ignore[arg-type]
    assert [n.node.node_id for n in out] == ["n1", "n0"]
    for bad in (None, "a string"):
        with pytest.raises(TypeError, match="nodes must be a sequence of NodeWithScore, got"):
            postprocessor.postprocess_nodes(bad, query_str=QUERY)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="nodes must be a sequence of NodeWithScore, got"):
            await postprocessor.apostprocess_nodes(bad, query_str=QUERY)  # type: ignore[arg-type]
    assert len(scorer.scored_texts) == 3


# --- configured from settings ---------------------------------------------------------------------


@pytest.mark.needs_models
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_settings_build_the_pipeline(adapter, cross_encoder_path: str) -> None:
    configured = adapter(
        model=cross_encoder_path,
        top_n=2,
        batch_size=8,
        max_length=128,
        timeout_s=30.0,
        fusion="weighted",
        rerank_weight=0.7,
        retrieval_weight=0.3,
        gate_min_top_gap=0.9,
        result_cache_url="memory",
        score_cache_url="memory",
        cache_ttl_s=60.0,
        scorer_options={"activation": "identity"},
    )
    reranker = configured.reranker
    assert reranker.top_n == 2 and reranker.timeout_s == 30.0
    assert reranker.fusion.rerank_weight == 0.7 and reranker.gate.min_top_gap == 0.9
    assert reranker.scorer.batch_size == 8 and reranker.scorer.activation == "identity"
    assert "max_length=128" in reranker.scorer.identity
    assert reranker.result_cache is not None and reranker.score_cache is not None
    assert _rerank(configured)[0].startswith("Low-dose aspirin")


@pytest.mark.needs_models
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_from_cross_encoder_takes_every_scorer_option(adapter, cross_encoder_path: str) -> None:
    configured = adapter.from_cross_encoder(
        cross_encoder_path, top_n=1, device="cpu", batch_size=4, max_length=64, activation="sigmoid", fusion="rrf"
    )
    scorer = configured.reranker.scorer
    assert (scorer.batch_size, scorer.activation) == (4, "sigmoid") and "max_length=64" in scorer.identity
    assert len(_rerank(configured)) == 1 and configured.serializable
    bf16 = adapter.from_cross_encoder(cross_encoder_path, precision="bf16").reranker.scorer
    assert bf16.precision == "bf16" and "precision=bf16" in bf16.identity


# --- serialization --------------------------------------------------------------------------------


@pytest.fixture
def cohere_server() -> Iterator[StandInServer]:
    with running("cohere", api_key=KEY) as server:
        yield server


def _cohere_settings(server: StandInServer) -> dict[str, object]:
    return {
        "scorer": "cohere",
        "model": "rerank-v3.5",
        "base_url": server.url,
        "api_key": SecretStr(KEY),
        "top_n": 2,
        "timeout_s": 5.0,
        "fusion": "weighted",
        "scorer_options": {"request_timeout_s": 2.0},
    }


def test_langchain_round_trips_without_the_secret(cohere_server: StandInServer) -> None:
    compressor = RerankProdCompressor(**_cohere_settings(cohere_server), retrieval_score_key="score")
    assert KEY not in compressor.model_dump_json() and KEY not in repr(compressor)
    serialized = dumps(compressor)
    assert KEY not in serialized
    assert dumpd(compressor)["kwargs"]["api_key"] == {"lc": 1, "type": "secret", "id": ["CO_API_KEY"]}
    revived = loads(
        serialized,
        valid_namespaces=["langchain_rerank_prod"],
        allowed_objects=[RerankProdCompressor],
        secrets_map={"CO_API_KEY": KEY},
    )
    assert isinstance(revived, RerankProdCompressor) and revived.model_dump() == compressor.model_dump()
    for other in (revived, copy.deepcopy(compressor), pickle.loads(pickle.dumps(compressor))):
        assert other.reranker is not compressor.reranker
        out = other.compress_documents(_documents(), QUERY)
        assert out[0].id == "d1" and out[0].metadata["rerank_source"] == "model"
    assert len(cohere_server.requests_to("/v2/rerank")) == 3  # every copy reached the server with the key


def test_llamaindex_round_trips_without_the_secret(cohere_server: StandInServer) -> None:
    postprocessor = RerankProdPostprocessor(**_cohere_settings(cohere_server))
    data = postprocessor.to_dict()
    assert "api_key" not in data and KEY not in json.dumps(data, default=str) and KEY not in postprocessor.to_json()
    revived = RerankProdPostprocessor.from_dict(data, api_key=SecretStr(KEY))
    assert revived.to_dict() == data
    assert RerankProdPostprocessor.from_json(postprocessor.to_json(), api_key=SecretStr(KEY)).to_dict() == data
    for other in (revived, copy.deepcopy(postprocessor), pickle.loads(pickle.dumps(postprocessor))):
        assert other.reranker is not postprocessor.reranker
        nodes = other.postprocess_nodes(_nodes(), query_str=QUERY)
        assert nodes[0].node.node_id == "n1" and nodes[0].node.metadata["rerank_source"] == "model"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_prebuilt_reranker_is_shared_by_copies_and_refuses_to_pickle(adapter) -> None:
    reranker = Reranker(ConstantTimeScorer())
    configured = adapter(reranker=reranker, top_n=1)
    twin = copy.deepcopy(configured)
    assert twin.reranker is reranker and twin.top_n == 1 and not twin.serializable
    with pytest.raises(TypeError, match="prebuilt reranker= cannot be pickled"):
        pickle.dumps(configured)
    if adapter is RerankProdCompressor:
        assert dumpd(configured)["type"] == "not_implemented"
    else:
        with pytest.raises(TypeError, match="cannot be serialized"):
            configured.to_dict()


def test_a_failing_secret_free_copy_degrades_not_raises(cohere_server: StandInServer) -> None:
    """Revived without its key, a remote scorer is refused by the server: the call falls back and says so."""
    settings = {**_cohere_settings(cohere_server), "api_key": SecretStr("wrong-key")}
    result = RerankProdCompressor(**settings).compress_documents(_documents(), QUERY)
    assert result[0].metadata["rerank_source"].startswith(SourceKind.FALLBACK.value)
