"""Embedding-similarity scorers: the real all-MiniLM-L6-v2, and OpenAI-compatible embeddings via the SDK."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from loopback.standin_servers import FAST_RETRY, StandInServer, bag_of_words_vector, drop, raw, running, status
from rerank_prod import (
    OpenAIEmbeddingScorer,
    Reranker,
    RetryPolicy,
    SentenceTransformerEmbeddingScorer,
    SourceKind,
)
from rerank_prod.scoring.embedding import cosine_scores

QUERY = "How do plants turn sunlight into chemical energy?"
PASSAGES = [
    "The stock market closed higher on Tuesday after strong earnings reports.",
    "Photosynthesis lets plants convert light energy into chemical energy stored in glucose.",
    "A recipe for banana bread with walnuts.",
    "Chlorophyll in leaves absorbs sunlight.",
]
EMBEDDINGS = "/v1/embeddings"


@pytest.fixture(scope="module")
def minilm(embedder_path: str) -> SentenceTransformerEmbeddingScorer:
    return SentenceTransformerEmbeddingScorer(embedder_path)


def test_minilm_ranks_the_on_topic_passages_first(minilm: SentenceTransformerEmbeddingScorer) -> None:
    result = Reranker(minilm).rerank(QUERY, PASSAGES)
    assert result.source.kind is SourceKind.MODEL
    assert [item.original_rank for item in result][:2] == [1, 3]
    assert all(-1.0 <= item.relevance_score <= 1.0 and type(item.relevance_score) is float for item in result)


def test_minilm_scores_are_the_cosine_of_its_embeddings(
    minilm: SentenceTransformerEmbeddingScorer, embedder_path: str
) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embedder_path)
    query, passage = model.encode([QUERY, PASSAGES[1]])
    expected = float(np.dot(query, passage) / (np.linalg.norm(query) * np.linalg.norm(passage)))
    exact = SentenceTransformerEmbeddingScorer(embedder_path, precision="fp32")
    assert exact.score(QUERY, PASSAGES[1:2]) == pytest.approx([expected], abs=1e-6)  # fp32: as before
    assert minilm.score(QUERY, PASSAGES[1:2]) == pytest.approx([expected], abs=1e-3)  # "auto" may be bf16


async def test_minilm_async_and_prompts_change_identity(
    minilm: SentenceTransformerEmbeddingScorer, embedder_path: str
) -> None:
    # bf16 ("auto" on CPUs with bf16 units): the async call's pass may run with other kernels (AMX, thread count)
    tolerance = 1e-6 if minilm.precision == "fp32" else 1e-3
    assert await minilm.ascore(QUERY, PASSAGES) == pytest.approx(minilm.score(QUERY, PASSAGES), abs=tolerance)
    prompted = SentenceTransformerEmbeddingScorer(embedder_path, query_prompt="query: ")
    assert prompted.identity != minilm.identity
    assert prompted.score(QUERY, PASSAGES) != pytest.approx(minilm.score(QUERY, PASSAGES))


def test_cosine_of_a_zero_vector_is_an_error_not_nan() -> None:
    with pytest.raises(Exception, match="zero"):
        cosine_scores(np.ones(3), np.zeros((2, 3)))


@pytest.fixture
def openai_server() -> Iterator[StandInServer]:
    with running("openai", api_key="sk-embed") as server:
        yield server


def openai_scorer(server: StandInServer, **options: object) -> OpenAIEmbeddingScorer:
    settings: dict[str, object] = {"api_key": "sk-embed", "base_url": f"{server.url}/v1", "retry": FAST_RETRY}
    return OpenAIEmbeddingScorer(**{**settings, **options})  # type: ignore[arg-type]


def expected_cosine(text: str) -> float:
    query, passage = np.array(bag_of_words_vector(QUERY)), np.array(bag_of_words_vector(text))
    return float(query @ passage / (np.linalg.norm(query) * np.linalg.norm(passage)))


def test_openai_embeddings_cosine(openai_server: StandInServer) -> None:
    result = Reranker(openai_scorer(openai_server, dimensions=64), timeout_s=5.0).rerank(QUERY, PASSAGES)
    assert result.source.kind is SourceKind.MODEL
    for item in result:
        assert item.rerank_score == pytest.approx(expected_cosine(PASSAGES[item.original_rank]), rel=1e-5)
    body = openai_server.requests[0].body
    assert body["input"] == [QUERY, *PASSAGES] and body["dimensions"] == 64 and body["encoding_format"] == "float"


async def test_openai_embeddings_batches_and_retries(openai_server: StandInServer) -> None:
    openai_server.fail_next(EMBEDDINGS, status(503), drop(), raw(b'{"object": "list", "data": [{"index": 0'))
    texts = [f"plants and sunlight {i}" for i in range(9)]
    patient = RetryPolicy(max_attempts=4, backoff_initial_s=0.01, backoff_max_s=0.05)
    scores = await openai_scorer(openai_server, max_batch_size=4, retry=patient).ascore(QUERY, texts)
    assert scores == pytest.approx([expected_cosine(text) for text in texts], rel=1e-5)
    sizes = [len(r.body["input"]) for r in openai_server.requests]
    assert len(sizes) == 6 and set(sizes) == {2, 4}  # query + 9 texts as 4 + 4 + 2, three of them retried once


def test_openai_embeddings_fall_back_when_down(openai_server: StandInServer) -> None:
    openai_server.fail_next(EMBEDDINGS, *[status(500)] * 3)
    result = Reranker(openai_scorer(openai_server), timeout_s=5.0).rerank(QUERY, PASSAGES)
    assert str(result.source) == "fallback:retriever order: error InternalServerError"
    assert math.isclose(result[0].relevance_score, 1.0)


def test_one_copy_of_the_weights_per_model(minilm: SentenceTransformerEmbeddingScorer, embedder_path: str) -> None:
    from rerank_prod.scoring.dependencies import load_sentence_transformers_model, require_extra

    shared, _ = load_sentence_transformers_model(
        "SentenceTransformer", embedder_path, needed_by="a semantic cache", extra="semantic-cache", precision="auto"
    )
    assert SentenceTransformerEmbeddingScorer(embedder_path, query_prompt="q: ")._model is minilm._model is shared
    with pytest.raises(ImportError, match=r"pip install 'rerank-prod\[http\]'"):
        require_extra("a_module_that_is_not_installed", "SomeScorer", "http")
