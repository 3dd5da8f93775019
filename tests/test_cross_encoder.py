"""The sentence-transformers cross-encoder scorer with the real shared weights."""

from __future__ import annotations

import math

import pytest

from rerank_prod import CrossEncoderScorer, Reranker

QUERY = "Aspirin reduces the risk of heart attack"
RELEVANT = "Low-dose aspirin therapy lowered the incidence of myocardial infarction in a randomized trial."
UNRELATED = "Soil bacteria fix nitrogen in the roots of legumes."


def test_scores_are_plain_floats_and_rank_relevance(cross_encoder: CrossEncoderScorer) -> None:
    scores = cross_encoder.score(QUERY, [UNRELATED, RELEVANT])
    assert all(type(s) is float for s in scores)
    assert scores[1] > scores[0]
    assert cross_encoder.score(QUERY, []) == []


def test_activation_identity_gives_logits(cross_encoder_path: str, cross_encoder: CrossEncoderScorer) -> None:
    logits = CrossEncoderScorer(cross_encoder_path, activation="identity")
    probability = cross_encoder.score(QUERY, [RELEVANT])[0]
    logit = logits.score(QUERY, [RELEVANT])[0]
    assert probability == pytest.approx(1 / (1 + math.exp(-logit)), rel=1e-4)
    assert logits.identity != cross_encoder.identity  # different scores, different cache keys


def test_model_is_loaded_once_and_shared(cross_encoder_path: str, cross_encoder: CrossEncoderScorer) -> None:
    again = CrossEncoderScorer(cross_encoder_path)  # auto: one model process per setting, shared
    assert again.engine is cross_encoder.engine and again.model_process is cross_encoder.model_process
    in_process = CrossEncoderScorer(cross_encoder_path, batch_size=4, isolation="thread")
    assert in_process._model is CrossEncoderScorer(cross_encoder_path, isolation="thread")._model
    assert in_process.identity == cross_encoder.identity  # neither batch size nor isolation changes scores


async def test_async_matches_sync(cross_encoder: CrossEncoderScorer) -> None:
    reranker = Reranker(cross_encoder)
    sync = reranker.rerank(QUERY, [UNRELATED, RELEVANT])
    asynchronous = await reranker.arerank(QUERY, [UNRELATED, RELEVANT])
    assert [i.metadata() for i in sync] == [i.metadata() for i in asynchronous]


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"max_length": -5}, {"activation": "softmax"}])
def test_bad_configuration(cross_encoder_path: str, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CrossEncoderScorer(cross_encoder_path, **kwargs)


def test_empty_model_name() -> None:
    with pytest.raises(ValueError, match="model_name_or_path"):
        CrossEncoderScorer(" ")
