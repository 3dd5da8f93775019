"""A cross-encoder model ready to score: loaded, traced, warmed up. Used in the caller's process and in
a model process (`model_process`) alike, so both compute the same scores."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rerank_prod.heap import freeze_heap
from rerank_prod.scoring.base import checked_scores
from rerank_prod.scoring.dependencies import load_sentence_transformers_model
from rerank_prod.scoring.precision import Precision, ResolvedPrecision
from rerank_prod.scoring.traced import ShapeGrid, trace_forward

Activation = Literal["default", "sigmoid", "identity"]
Predict = Callable[[Sequence[tuple[str, str]]], list[float]]

_WARM_UP_PASSES = 3
"""Passes a new engine's model runs before any caller, out of every call's budget. Measured on 2 cores:
the first call of 4 pairs took 600 ms (tracing the forward at first use), the second 170 ms
(TorchScript's executor optimizes the traced graph on its second run), the third 35 ms: the README
quickstart, budget 0.5 s, fell back on its one call."""
_WARM_UP_PAIRS = [("warm-up", "a short passage"), ("warm-up", "a longer passage, so that the batch is padded")]
"""Of two lengths: the traced forward is built on a batch with padding in its attention mask."""


@dataclass(frozen=True)
class CrossEncoderSpec:
    """What a cross-encoder is loaded and run with: picklable, so a model process can load the same."""

    model_name_or_path: str
    device: str | None
    batch_size: int
    max_length: int | None
    activation: Activation
    precision: Precision
    trust_remote_code: bool


def load_cross_encoder(spec: CrossEncoderSpec) -> tuple[Any, ResolvedPrecision]:
    """The sentence-transformers `CrossEncoder` of `spec` (one per configuration in the process) and the
    precision it computes in; on CPU its forward is traced (`trace_forward`): a busy interpreter cannot
    stall it, and bf16/fp16 passes run on a grid of shapes so memory stays bounded under a storm (fp32
    stays `CrossEncoder.predict`-exact)."""
    model, precision = load_sentence_transformers_model(
        "CrossEncoder",
        spec.model_name_or_path,
        needed_by="CrossEncoderScorer",
        extra="cross-encoder",
        device=spec.device,
        max_length=spec.max_length,
        trust_remote_code=spec.trust_remote_code,
        precision=spec.precision,
    )
    if str(model.device).startswith("cpu") and model.model is not None:
        limits = (model.max_seq_length, getattr(model.model.config, "max_position_embeddings", None))
        trace_forward(model.model, None if precision == "fp32" else ShapeGrid.within(*limits))
    return model, precision


def warmed_predict(model: Any, spec: CrossEncoderSpec, name: str) -> Predict:
    """One forward pass of `model` over a list of pairs (a finite score each, in order, or `ScorerError`),
    run `_WARM_UP_PASSES` times first so that no caller pays for tracing and graph optimization."""
    predict = functools.partial(_predict, model, _activation_function(spec.activation), spec.batch_size, name)
    for _ in range(_WARM_UP_PASSES):
        predict(_WARM_UP_PAIRS)
    freeze_heap()  # what tracing made lives as long as the model
    return predict


def _predict(
    model: Any, activation_fn: Any, batch_size: int, name: str, pairs: Sequence[tuple[str, str]]
) -> list[float]:
    raw = model.predict(
        list(pairs),
        batch_size=batch_size,
        show_progress_bar=False,
        activation_fn=activation_fn,
        convert_to_numpy=True,
    )
    return checked_scores(raw.tolist(), len(pairs), name)


def _activation_function(activation: Activation) -> Any:
    if activation == "default":
        return None
    import torch

    return torch.nn.Sigmoid() if activation == "sigmoid" else torch.nn.Identity()
