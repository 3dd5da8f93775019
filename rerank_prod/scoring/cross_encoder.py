"""sentence-transformers `CrossEncoder` scorer: the default, local re-ranker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from rerank_prod.deadline import Deadline
from rerank_prod.scoring.base import LocalScorer, checked_scores
from rerank_prod.scoring.dependencies import load_sentence_transformers_model
from rerank_prod.validation import check_int, check_text

DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
Activation = Literal["default", "sigmoid", "identity"]
_ACTIVATIONS: tuple[str, ...] = ("default", "sigmoid", "identity")


class CrossEncoderScorer(LocalScorer):
    """Scores pairs with a cross-encoder, loaded once at construction and reused.

    `activation`: "default" keeps the model's own (sigmoid for one-logit models), "sigmoid"
    forces probabilities, "identity" returns raw logits (pair with sigmoid normalization in fusion).
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_CROSS_ENCODER,
        *,
        device: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        activation: Activation = "default",
        trust_remote_code: bool = False,
    ) -> None:
        check_text("model_name_or_path", model_name_or_path)
        check_int("batch_size", batch_size)
        if max_length is not None:
            check_int("max_length", max_length)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        self.max_length = max_length
        self.activation = activation
        self._model = load_sentence_transformers_model(
            "CrossEncoder",
            model_name_or_path,
            needed_by="CrossEncoderScorer",
            extra="cross-encoder",
            device=device,
            max_length=max_length,
            trust_remote_code=trust_remote_code,
        )
        self._activation_fn = self._resolve_activation(activation)

    @staticmethod
    def _resolve_activation(activation: Activation) -> Any:
        if activation == "default":
            return None
        import torch

        return torch.nn.Sigmoid() if activation == "sigmoid" else torch.nn.Identity()

    @property
    def name(self) -> str:
        return self.model_name_or_path

    @property
    def identity(self) -> str:
        return (
            f"cross-encoder:{self.model_name_or_path}"
            f"|max_length={self._model.max_seq_length}|activation={self.activation}"
        )

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        if not texts:
            return []
        raw = self._model.predict(
            [(query, text) for text in texts],
            batch_size=self.batch_size,
            show_progress_bar=False,
            activation_fn=self._activation_fn,
            convert_to_numpy=True,
        )
        return checked_scores(raw.tolist(), len(texts), self.name)

    def __repr__(self) -> str:
        return f"CrossEncoderScorer({self.model_name_or_path!r}, activation={self.activation!r})"
