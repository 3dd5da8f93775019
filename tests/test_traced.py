"""The traced forward pass and its grid of shapes (bf16/fp16 only): few distinct shapes, same rankings."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rerank_prod.scoring.traced import ShapeGrid


def test_the_grid_gives_few_shapes_never_smaller_than_the_input() -> None:
    grid = ShapeGrid(max_length=256)
    rows = {grid.padded(batch, 10)[0] for batch in range(1, 33)}
    assert rows == {1, 2, 4, 8, 12, 16, 20, 24, 28, 32}
    lengths = {grid.padded(1, length)[1] for length in range(1, 257)}
    assert lengths == {32, 64, 96, 128, 160, 192, 224, 256}
    for batch in range(1, 40):
        for length in range(1, 300):
            padded_batch, padded_length = grid.padded(batch, length)
            assert padded_batch >= batch and padded_length >= length
            assert padded_batch - batch < grid.batch_step and padded_length - length < grid.length_step
            assert padded_length <= max(length, grid.max_length)  # never past the tokenizer's limit
    assert ShapeGrid(max_length=300).padded(3, 290) == (4, 300)


@pytest.mark.parametrize("field", ["length_step", "batch_step", "max_length"])
def test_a_bad_grid_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ShapeGrid(**{field: 0})


class ShapeSpy:
    """Stands in for a traced module: records the shape of each call's input ids."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, *tensors: Any) -> Any:
        self.shapes.append(tuple(tensors[0].shape))
        return self.module(*tensors)


def spy_on(model: Any) -> ShapeSpy:
    traced = model._rerank_prod_traced
    names = next(iter(traced))
    spy = ShapeSpy(traced[names])
    traced[names] = spy
    return spy


@pytest.mark.needs_models
def test_bf16_passes_run_on_the_grid_and_keep_the_ranking(cross_encoder_path: str) -> None:
    """Under a storm the engine's chunks take every batch size and length; a bf16 model sees at most
    10 x 8 shapes (what bounds its memory, see ShapeGrid) and scores as the unpadded eager model does."""
    import torch
    from sentence_transformers import CrossEncoder

    from rerank_prod import CrossEncoderScorer

    scorer = CrossEncoderScorer(cross_encoder_path, precision="bf16", isolation="thread")
    spy = spy_on(scorer._model.model)
    rng = random.Random(7)
    words = ["vitamin", "bone", "density", "calcium", "trial", "aspirin", "dose", "heart", "risk", "patients"]
    eager = CrossEncoder(cross_encoder_path).to(torch.bfloat16)
    for _ in range(12):
        passages = [" ".join(rng.choices(words, k=rng.randint(3, 120))) for _ in range(rng.randint(1, 32))]
        pairs = [("does vitamin d help bones", passage) for passage in passages]
        scores = scorer._model.predict(pairs, batch_size=32).tolist()
        reference = eager.predict(pairs, batch_size=32).tolist()
        assert scores == pytest.approx(reference, abs=1e-2)
    grid = ShapeGrid(max_length=256)
    assert spy.shapes and all(shape == grid.padded(*shape) for shape in spy.shapes)
    ranked = scorer.score("vitamin d bones", ["Soil bacteria.", "Vitamin D and bone density.", "Tax law."])
    assert max(range(3), key=ranked.__getitem__) == 1


@pytest.mark.needs_models
def test_fp32_and_left_padded_inputs_are_not_padded(cross_encoder_path: str) -> None:
    import torch

    from rerank_prod import CrossEncoderScorer

    exact = CrossEncoderScorer(cross_encoder_path, precision="fp32", isolation="thread")
    spy = spy_on(exact._model.model)
    texts = ["a passage of some words", "short"]
    exact._model.predict([("q", text) for text in texts])
    natural = exact._model.tokenizer(["q"] * 3, texts + ["x"], padding=True, return_tensors="pt")["input_ids"]
    assert spy.shapes == [(2, natural.shape[1])]  # 2 rows of 9 tokens: as the tokenizer gave them
    half = CrossEncoderScorer(
        cross_encoder_path, precision="bf16", max_length=192, isolation="thread"
    )  # a model of its own
    spy = spy_on(half._model.model)
    ids = torch.tensor([[0, 0, 101, 2000, 102], [101, 2001, 2002, 2003, 102]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        left = half._model.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
        right = half._model.model(
            input_ids=ids[[1]], attention_mask=mask[[1]], token_type_ids=torch.zeros_like(ids[[1]])
        )
    assert spy.shapes == [(2, 5), (1, 32)]  # a left-padded batch cannot take masked tokens after it
    assert left.logits.shape == (2, 1) and right.logits.shape == (1, 1)


def test_the_grid_never_pads_past_what_the_model_takes() -> None:
    assert ShapeGrid.within(256, 512) == ShapeGrid(max_length=256)
    assert ShapeGrid.within(None, 514) == ShapeGrid(max_length=514)  # no max_seq_length: position embeddings
    assert ShapeGrid.within(None, None) is None  # nothing known: no grid rather than a guess
    assert ShapeGrid.within(0, True, "512", 300) == ShapeGrid(max_length=300)  # only positive ints count
